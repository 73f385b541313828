// Command demo is what `make demo` runs: the main job end to end on a fresh
// machine with nothing but Go and the PostgreSQL server binaries.
//
// It starts a throwaway cluster (internal/pgcluster), fills a source table in
// one database, builds the backfill command and copies the table into a
// second database, interrupting the copy with SIGINT part-way, showing the
// status, resuming to the end and then checking in SQL, independently of
// backfill's own counters, that the destination equals the source.
//
// The demo drives the real command as a user would, never the library, so
// what it shows is what a user gets. It must never touch a server or a
// directory it did not create, and it leaves neither behind, on failure or
// Ctrl-C too.
package main
