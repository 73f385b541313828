// Command backfill copies and transforms rows from one PostgreSQL table into
// another, in chunks, resumably, at a controlled rate. It is a thin layer
// over the github.com/backfill/backfill package: flags in, a Job to Run, an
// exit code out.
package main

import "os"

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
