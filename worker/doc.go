// Package worker takes chunks from the paginator's channel, transforms their
// rows and writes each chunk to the destination in one transaction that
// also records it in the checkpoint.
//
// Each worker holds a destination connection with a temporary stage table
// (ON COMMIT DELETE ROWS) shaped like the columns it writes. A chunk is
// written one of two ways:
//
//   - Straight into the table, when the job allows it (every column in its
//     binary form, a table without rules or row-level security) and the
//     chunk's key range holds no destination row (one probe of the key's
//     unique index, pipelined with BEGIN): one binary COPY into the table,
//     then the chunk's checkpoint row and COMMIT, pipelined. A COPY that
//     fails on a row (the application wrote one in the range meanwhile,
//     another unique index, a value a column refuses) is rolled back and the
//     chunk goes the other way; after several such failures in a row the
//     chunks keep to the stage for a while.
//   - Through the stage: one binary COPY into it, then one statement that
//     inserts it into the table ON CONFLICT DO NOTHING and records the chunk
//     (a CTE), and COMMIT, pipelined.
//
// Either way a chunk is written and recorded, or neither, and writing it
// again after a crash cannot duplicate a row. Values travel as the source
// sent them where their binary form means the same on both sides (built-in
// types), as their text form into a text column of the stage, cast by the
// INSERT, where it does not (enums, composites, extension types), and as
// Go values encoded by pgx where a transform computed them. A row that fails
// on its data is isolated by bisecting the staged rows under savepoints and
// recorded in failed_rows with the chunk.
//
// Workers share one token bucket, so the job's rows per second stay under
// the cap however many workers run. A worker never waits for a connection:
// the destination pool is sized for as many workers as the job may have.
//
// Resize changes the number of workers while the pool runs: a worker added
// starts at once, and gets a connection and a stage of its own with its
// first chunk; a worker too many retires between two chunks, never holding
// one, and closes its connection, so the destination's sessions follow the
// size. Size, Busy, Pending, Capacity and Waited are the pool's gauges, for
// metrics and the autoscaler.
//
// Every commit carries the runner's generation; a commit refused because a
// newer runner took the job (Checkpoint.IsFenced) wrote nothing, and stops
// the workers: it is neither a bad row to isolate nor an error to retry.
//
// A worker never reads the source and never writes a row outside a chunk's
// transaction. Its messages name the job's settings as the backfill.Job
// fields they come from (Job.MaxRetries), which the command words as flags.
package worker
