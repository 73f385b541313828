// Command backfill copies and transforms rows from one PostgreSQL table into
// another, in chunks, resumably, at a controlled rate. It is a thin layer
// over the github.com/backfill/backfill package: flags in, a Job to Run, an
// exit code out.
package main

import (
	"os"
	"runtime/debug"
)

// memoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT says
// otherwise. The chunks in flight are most of a run's memory, and the
// engine keeps them to a budget (backfill.TimedChunksMemory); without a
// limit the collector would let the heap grow to twice that before it
// collects, and a run would need twice the memory it uses.
const memoryLimit = 40 << 20

func main() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
