// Command backfill copies and transforms rows from one PostgreSQL table into
// another, in chunks, resumably, at a controlled rate. It is a thin layer
// over the github.com/backfill/backfill package: flags in, a Job to Run, an
// exit code out.
package main

import (
	"os"
	"runtime"
	"runtime/debug"
)

// memoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT says
// otherwise. The chunks in flight are most of a run's memory, and the
// engine keeps them to a budget (backfill.TimedChunksMemory); without a
// limit the collector would let the heap grow to twice that before it
// collects, and a run would need twice the memory it uses. 34 MiB is the
// 12 MiB of chunks with room for the rest of the heap: a straight copy of
// 10,000,000 rows peaked at 45.7–45.9 MiB of RSS with it, against
// 50.1–51.2 MiB at 40 MiB, and its client CPU stayed at 0.52–0.54 µs a
// row (BENCHMARKS.md).
const memoryLimit = 34 << 20

// coresPerProc is how many of the host's cores the command leaves to each
// core it runs Go code on, unless GOMAXPROCS says otherwise. The command
// mostly waits on the network: a straight copy costs it about 1 µs of CPU
// a row, against 5 µs for the servers it reads and writes, and one reader
// delivers a few hundred thousand rows a second. Given a core for each of
// the host's, the Go scheduler spins idle threads looking for work at each
// of the many network wake-ups, and that CPU is taken from a database on
// the same host: on 2 cores, one proc cut the client's CPU from 0.93–1.16
// to 0.79–0.83 µs a row (BENCHMARKS.md).
const coresPerProc = 4

func main() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(max(1, runtime.NumCPU()/coresPerProc))
	}
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
