// Package paginator reads a source table in key order, one chunk at a time,
// and sends the chunks into a bounded channel for the workers.
//
// Pages are found by keyset pagination, WHERE (k1, k2, …) > (last key)
// ORDER BY k1, k2, … LIMIT n: each page costs an index range scan however far
// into the table it is, where OFFSET would cost a scan of everything before
// it. A chunk covers the keys in (After, Last]; keys travel as PostgreSQL's
// text form of each key column, so any orderable key type (bigint, uuid,
// text, timestamptz, numeric, composite keys) round-trips exactly through the
// checkpoint and back into a query.
//
// On resume the paginator is given the ranges already committed: it jumps
// over them without reading and reads only the gaps, stopping a gap's chunk
// where the next committed range begins, so each chunk of an interrupted run
// is redone exactly once and no committed chunk is read again.
//
// The paginator only reads. It never writes to the source.
package paginator
