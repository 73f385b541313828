// Package integration_test drives the real backfill binary against a real
// PostgreSQL, the way a user does: build it, run start/resume/status, kill
// it, and check invariants of the result — the destination equals the
// source exactly, and the job's counters equal one clean run's.
//
// The server comes from internal/pgtest (an env URL, testcontainers, or a
// throwaway local cluster); each test gets its own databases.
package integration
