// Package metrics is what a running job tells Prometheus: the fan-out pool's
// standard series (pool size, busy workers, the input channel's depth and
// size), chunks and rows by outcome, each stage's duration, the rate cap and
// the time spent throttled, progress and ETA, and the Go and process
// collectors, every series labelled with the job (and the runner, once a
// job has several).
//
// A Metrics belongs to one run: its registry is its own, never the
// process-wide default, so two runs in one process (or one test binary)
// never share a counter, and after a run its counters are that run's
// figures. The pool's gauges are read when scraped, from a function the
// runner supplies, rather than pushed on every change. Server serves the
// registry at /metrics and the runner's health at /healthz.
//
// This package only counts and serves; it never decides anything about the
// run, and it reads nothing from the databases.
package metrics
