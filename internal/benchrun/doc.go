// Command benchrun is what `make bench` runs: issue 9's measuring
// instrument. On a throwaway local PostgreSQL cluster (internal/pgcluster)
// it builds the benchmark table (internal/benchdata) and measures, round
// after round so that a busy minute falls on every method alike, the ways
// of copying it: one INSERT … SELECT, a PL/pgSQL keyset loop, a psql \copy
// pipe, pgcopydb when installed, and the backfill command same-database
// and across databases. It prints Markdown on stdout (medians, ratios to
// the single statement, client and server CPU per row, peak RSS, and the
// issue's goals as met or not) and progress on stderr.
//
// Groups beyond the copy methods (-groups): stage (a destination holding
// rows in every chunk's range, sparse and dense), chunk-size sensitivity, resume
// memory over many committed chunks, peak RSS by table size, rate-cap
// accuracy and a pprof profile of the in-process copy with
// pg_stat_statements.
//
// It drives the built backfill binary as a user does (the profile group
// alone runs the library in-process, under go test). It runs on Linux:
// CPU and memory come from wait4's rusage and /proc. It must never touch a
// server or directory it did not create, never talk to anything but its
// own cluster on 127.0.0.1, and it stops the cluster and removes its
// directory on every exit it gets to run code for, Ctrl-C included; every
// child process and statement is bounded by -timeout.
package main
