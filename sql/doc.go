// Package sql holds every static SQL statement backfill runs, embedded from
// the .sql files beside it.
//
// Each file is a list of named blocks: a line "-- name: some-name" starts a
// block and the statement runs to the next such line. Comment lines are
// dropped from the statement: those before a "-- name:" line speak of the
// block they head, and the server need not read any. The state schema's
// name is chosen by the user, so statements write it as {{schema}} and the
// caller substitutes the already-quoted identifier through For.
//
// Code asks for a statement by a constant of names.go, generated from the
// files (go generate ./sql): a Name for a statement of the state schema,
// rendered by Statements.Get, a StaticName for one that mentions none,
// returned by Static. A statement sql/ does not define has no constant, so
// asking for it does not build; the package's tests fail when names.go is
// older than the files, or a statement is one no code asks for.
//
// This package never builds SQL from user input: statements whose shape
// depends on the user's tables (page queries, inserts, the planner's
// estimate of a where) are assembled by the package that runs them, each
// by one function, from identifiers quoted with pgx.Identifier.
// Transaction control (BEGIN, COMMIT, SAVEPOINT …) is sent where the
// transaction is, as the protocol's words rather than statements of
// backfill's.
package sql
