// Package pgcluster runs a throwaway PostgreSQL cluster from the server
// binaries installed on the machine, for tests and demos that need a real
// server without Docker.
//
// A cluster lives in its own temporary directory, listens only on 127.0.0.1
// and trusts every local connection, and runs with durability switched off
// (fsync, synchronous_commit, full_page_writes) because nothing in it is
// worth keeping. StartStandby copies a cluster with pg_basebackup -R into a
// streaming hot standby of it, whose replay a test can pause to make
// replica lag on demand. It must never be pointed at a data directory it did not
// create, never be used for data that matters, and never listen beyond the
// loopback interface.
package pgcluster
