// Package benchdata is the table issue 9's goals are measured on: a bigint
// key, three short texts, an int, a timestamptz and a small jsonb, the
// primary key on both sides. The benchmark driver (internal/benchrun) and
// the in-process benchmarks (bench_test.go files) build it from here, so a
// profile and a `make bench` figure describe the same rows.
//
// It creates and fills only the tables it is asked to, in databases the
// caller made for benchmarking; it must never be pointed at data that
// matters.
package benchdata
