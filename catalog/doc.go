// Package catalog reads what backfill needs to know about a table from
// PostgreSQL's system catalogs, and parses the table and column names users
// type.
//
// Names are read as SQL reads identifiers: optionally schema-qualified,
// unquoted parts folded to lower case, double-quoted parts taken literally.
// A parsed name is only ever put back into SQL through pgx.Identifier's
// quoting, and only ever compared with the catalog as a value ($n).
//
// This package only reads; it never writes to any database. Its messages
// name the job's settings as the backfill.Job fields they come from
// (Job.Key), which the command words as flags.
package catalog
