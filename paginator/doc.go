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
// Values come as the plan asks for each column: raw (the bytes of the
// type's binary form, undecoded, for a value the transform only moves to a
// column of the same built-in type), as the type's text form, or decoded
// into the Go values the transform reads. For a straight copy (every value
// written is a raw value, nothing transforms or filters the rows) each row
// arrives as a tuple of a binary COPY stream, built from the row the
// source sent (a DataRow's fields are laid out as a COPY tuple's), so
// nothing but the key is decoded or boxed. A chunk's rows live in blocks
// it shares; once written, a chunk is released and its blocks serve a
// later page, so a steady run allocates about one string a row, its key's
// text.
//
// When the job is sized by time, a Sizer gives each page's size from the
// workers' write times, within a share of a memory budget by the bytes
// the rows have taken.
//
// On resume the paginator is given the bounds of the ranges already
// committed: the keys where more ranges begin than end or the reverse, and
// by how many, which the checkpoint sums on the destination without
// holding every range (a run of a million chained chunks is two bounds).
// It has the source rank the bounds' keys (with the key columns' types and
// collations, as the page queries compare), sweeps them in that order into
// runs, merging runs that overlap (as older versions could leave them),
// jumps over each run without reading, and reads only the gaps. A gap's
// page query is bounded by the key where the next run starts, rather than
// cut at a row with that key, which may have been deleted since: so each
// chunk of an interrupted run is redone
// exactly once, no committed chunk is read again, and no gap row is taken
// for committed. The rest of a chunk that was split and only partly
// committed is read again as that chunk, with its seq and its end.
//
// With a where predicate the paginator reads in steps: it finds the key
// chunk-size table rows ahead, ignoring the predicate, and reads the rows
// up to it that match. However rare the matching rows, no query scans more
// than a chunk's worth of the table, so none can outlast a statement
// timeout on every retry. A step without a matching row is sent as a chunk
// without rows, so the checkpoint records the walk through it.
//
// The paginator only reads. It never writes to the source.
package paginator
