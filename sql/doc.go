// Package sql holds every static SQL statement backfill runs, embedded from
// the .sql files beside it.
//
// Each file is a list of named blocks: a line "-- name: some-name" starts a
// block and the statement runs to the next such line. The state schema's
// name is chosen by the user, so statements write it as {{schema}} and the
// caller substitutes the already-quoted identifier through Statements.Get.
//
// This package never builds SQL from user input: statements whose shape
// depends on the user's tables (page queries, inserts) are assembled by the
// paginator and worker from identifiers quoted with pgx.Identifier.
package sql
