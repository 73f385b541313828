package paginator_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backfill/backfill/internal/benchdata"
	"github.com/backfill/backfill/internal/pgtest"
	"github.com/backfill/backfill/paginator"
)

// benchPageRows is a page of the default chunk size.
const benchPageRows = 1000

// benchConfig reads the benchmark table as a straight copy does: the key's
// text form, then every column raw, in its binary form (each is a
// built-in type).
func benchConfig(chunkSize int) paginator.Config {
	cfg := paginator.Config{Table: pgx.Identifier{"public", "s"}, Key: []paginator.KeyColumn{{Name: "id", Type: "bigint"}}, ChunkSize: chunkSize}
	for _, c := range benchdata.Columns {
		cfg.Columns = append(cfg.Columns, paginator.ReadColumn{Name: c.Name, Raw: true})
	}
	return cfg
}

// BenchmarkReadPage reads one 1,000-row page of the benchmark table per
// op, through the page query, keeping each value's bytes, from a real
// server: the paginator's share of a copy's client CPU. The page is
// the same every time, so the server answers from its buffers.
func BenchmarkReadPage(b *testing.B) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	table := pgx.Identifier{"public", "s"}
	for _, err := range []error{
		benchdata.Create(ctx, pool, table),
		benchdata.Fill(ctx, pool, table, 1, 2*benchPageRows),
		benchdata.Settle(ctx, pool, table),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	p, err := paginator.New(benchConfig(benchPageRows))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	allocs := mallocs()
	for b.Loop() {
		c, err := p.First(ctx, pool)
		if err != nil {
			b.Fatal(err)
		}
		if len(c.Rows) != benchPageRows {
			b.Fatalf("page of %d rows, want %d", len(c.Rows), benchPageRows)
		}
	}
	b.ReportMetric(float64(benchPageRows*b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(mallocs()-allocs)/float64(benchPageRows*b.N), "allocs/row")
}

// BenchmarkKeyString encodes keys the way the paginator and resume index
// committed ranges: once per chunk boundary, and once per committed chunk
// when a job resumes.
func BenchmarkKeyString(b *testing.B) {
	for _, c := range []struct {
		name string
		key  []string
	}{
		{"bigint", []string{"1234567890"}},
		{"text_and_int", []string{"tenant-00042", "987654"}},
		{"three_parts", []string{"eu-west", "2024-06-30 23:59:59.999999+00", "c0ffee00-dead-beef-0000-000000000042"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				// kept, as the paginator keeps it in a map: a result left
				// on the stack would hide the allocation
				keySink = paginator.KeyString(c.key)
			}
		})
	}
}

// BenchmarkNewWithCommitted: New given every committed range of a job, as
// verify gives them, sums their bounds in memory. B/op is what that holds
// beyond a fresh run; divide by the ranges for bytes per committed chunk. A
// resume holds none of it: the checkpoint sums the bounds on the
// destination (chunk-bounds) and New is given those.
func BenchmarkNewWithCommitted(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(strconv.Itoa(n)+"_ranges", func(b *testing.B) {
			ranges := make([]paginator.Range, n)
			for i := range ranges {
				if i > 0 {
					ranges[i].After = []string{strconv.Itoa(i * 1000)}
				}
				ranges[i].Last = []string{strconv.Itoa((i + 1) * 1000)}
			}
			cfg := benchConfig(benchPageRows)
			cfg.Committed = ranges
			b.ReportAllocs()
			for b.Loop() {
				if _, err := paginator.New(cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var keySink string

func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}
