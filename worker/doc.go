// Package worker takes chunks from the paginator's channel, transforms their
// rows and writes each chunk to the destination in one round trip.
//
// The write is a single statement: INSERT … SELECT FROM unnest($n::type[], …)
// ON CONFLICT DO NOTHING, wrapped by the checkpoint in a CTE that records the
// chunk in the same statement. A chunk is therefore written and recorded, or
// neither, and writing it again after a crash cannot duplicate a row.
//
// Workers share one token bucket, so the job's rows per second stay under
// the cap however many workers run. A worker never waits for a connection:
// the pool is sized to the worker count.
//
// Every commit carries the runner's generation; a commit refused because a
// newer runner took the job (Checkpoint.IsFenced) wrote nothing, and stops
// the workers: it is neither a bad row to isolate nor an error to retry.
//
// A worker never reads the source and never writes a row outside a chunk's
// commit statement.
package worker
