// Package backfill copies and transforms rows from one PostgreSQL table into
// another, in chunks, resumably, at a controlled rate.
//
// The pipeline is a map of the packages: the paginator reads the source in
// key order into a bounded channel; workers transform each chunk and write it
// with INSERT … ON CONFLICT DO NOTHING in the same statement that records the
// chunk in the checkpoint; a shared token bucket caps rows per second.
//
// Run is the whole job: it validates both tables before writing anything,
// takes the job's runner lock, and records the job's state in the
// destination's state schema. The backfill command is a thin wrapper over
// Run and Status; a Go program can do everything the command does.
//
// This package holds no global state: pools, logger and clock belong to one
// Run.
package backfill
