// Package pgtest is the one harness through which every test package gets
// a real PostgreSQL server, and a fresh database on it per test.
//
// A test binary opts in with
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// and Main picks a server once, in this order: the admin URL in
// $BACKFILL_TEST_DATABASE_URL; a testcontainers-go PostgreSQL container when
// a Docker engine answers; a throwaway cluster from local binaries
// (internal/pgcluster). With none of them, tests that ask for a database are
// skipped, unless $CI is set, where the binary fails instead: CI must never go
// green by testing nothing.
//
// Tests never share a database: NewDatabase creates one per call and drops it
// when the test ends. On the local cluster, NewStandby adds a streaming
// standby of it for the test, whose replay the test may pause. The package must never be imported by non-test code,
// and never touch a database it did not create, beyond creating and dropping
// its own on the server it was given.
package pgtest
