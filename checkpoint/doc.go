// Package checkpoint keeps a job's durable state in the destination
// database: the job row (spec, state, runner) and one row per committed
// chunk.
//
// Exactly-once rests on one rule: a chunk's rows and its chunk row commit in
// the same statement (CommitChunkSQL wraps the worker's INSERT in a CTE), so
// after a crash at any instant a chunk is either written and recorded or
// neither. Job counters are sums over the chunk rows, never a counter that
// workers update, so they cannot drift from what was written.
//
// A second rule makes the first hold with more than one runner: every write
// on behalf of a runner proves in the same statement that the runner still
// owns the job. The runner lock is a session lock, and a runner whose
// session died keeps committing until it notices; so each runner takes a
// new generation of its job with the lock (ClaimJob), and each chunk commit
// carries it and is refused by the state schema's fence (IsFenced) once a
// newer runner has raised it. The heartbeat and the final state carry it
// too (ErrFenced).
//
// The state schema is created and migrated by Migrate from the embedded
// sql/schema.sql. Nothing in this package may write before the caller has
// validated the job: a refused job must leave no schema, table or row behind.
package checkpoint
