package backfill_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/internal/benchdata"
	"github.com/backfill/backfill/internal/pgtest"
)

// BenchmarkCopy copies 50,000 rows per iteration without a rate cap and
// reports rows per second: the engine's throughput on this machine.
func BenchmarkCopy(b *testing.B) {
	const rows = 50_000
	f := setupB(b, rows)
	b.ReportAllocs()
	var total time.Duration
	for i := range b.N {
		if _, err := f.conn.Exec(context.Background(), "TRUNCATE dst"); err != nil {
			b.Fatal(err)
		}
		j := f.job(fmt.Sprintf("bench-%d", i))
		j.ChunkSize = 1000
		began := time.Now()
		rep, err := backfill.Run(context.Background(), j)
		total += time.Since(began)
		if err != nil || rep.Totals.RowsInserted != rows {
			b.Fatalf("run: %v, %+v", err, rep.Totals)
		}
	}
	b.ReportMetric(float64(rows*b.N)/total.Seconds(), "rows/s")
}

// BenchmarkRateCap runs a job for about 30 s under a 5000 rows/s cap and
// reports the achieved rate as a fraction of the cap (the goal: within
// ±3%), measured from the job's own start and finish times.
func BenchmarkRateCap(b *testing.B) {
	const rate, seconds = 5000, 30
	f := setupB(b, rate*seconds)
	var ratio float64
	for i := range b.N {
		if _, err := f.conn.Exec(context.Background(), "TRUNCATE dst"); err != nil {
			b.Fatal(err)
		}
		j := f.job(fmt.Sprintf("cap-%d", i))
		j.Rate = rate
		rep, err := backfill.Run(context.Background(), j)
		if err != nil {
			b.Fatal(err)
		}
		st, err := backfill.Status(context.Background(), backfill.Target{DestURL: f.url, Job: j.Name})
		if err != nil {
			b.Fatal(err)
		}
		took := st[0].FinishedAt.Sub(st[0].StartedAt).Seconds()
		ratio += float64(rep.Totals.RowsRead) / took / rate
	}
	b.ReportMetric(ratio/float64(b.N), "achieved/cap")
}

// The benchmark table of BenchmarkCrossDatabaseCopy: set both URLs to copy
// public.s of one database into an empty public.s of another, as `make
// bench` lays them out (its profile group sets them); unset, the benchmark
// builds the table itself in two fresh databases, with
// $BACKFILL_BENCH_ROWS rows.
const (
	envBenchSource = "BACKFILL_BENCH_SOURCE"
	envBenchDest   = "BACKFILL_BENCH_DEST"
	envBenchRows   = "BACKFILL_BENCH_ROWS"
)

// BenchmarkCrossDatabaseCopy runs backfill.Run in-process, at the default
// settings without a rate cap, across two databases of one server: the
// copy `make bench` measures through the binary, here so that
// -cpuprofile and -memprofile see the row path. Each iteration starts from
// an empty destination and no state schema (outside the timer). It
// reports rows/s and the process's CPU per row (user+sys, GC included).
func BenchmarkCrossDatabaseCopy(b *testing.B) {
	ctx := context.Background()
	srcURL, dstURL := os.Getenv(envBenchSource), os.Getenv(envBenchDest)
	table := pgx.Identifier{"public", "s"}
	if (srcURL == "") != (dstURL == "") {
		b.Fatalf("set both %s and %s, or neither", envBenchSource, envBenchDest)
	}
	if srcURL == "" {
		rows := int64(100_000)
		if s := os.Getenv(envBenchRows); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 1 {
				b.Fatalf("%s=%q: want a positive number of rows", envBenchRows, s)
			}
			rows = n
		}
		srcURL, dstURL = pgtest.NewDatabase(b), pgtest.NewDatabase(b)
		src := benchConn(b, srcURL)
		for _, err := range []error{
			benchdata.Create(ctx, src, table),
			benchdata.Fill(ctx, src, table, 1, rows),
			benchdata.Settle(ctx, src, table),
			benchdata.Create(ctx, benchConn(b, dstURL), table),
		} {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	var rows int64
	if err := benchConn(b, srcURL).QueryRow(ctx, "SELECT count(*) FROM public.s").Scan(&rows); err != nil {
		b.Fatal(err)
	}
	dst := benchConn(b, dstURL)
	b.ReportAllocs()
	var cpu time.Duration
	for i := range b.N {
		b.StopTimer()
		for _, q := range []string{"DROP SCHEMA IF EXISTS backfill CASCADE", "TRUNCATE public.s"} {
			if _, err := dst.Exec(ctx, q); err != nil {
				b.Fatalf("%s: %v", q, err)
			}
		}
		b.StartTimer()
		began := processCPU(b)
		rep, err := backfill.Run(ctx, backfill.Job{
			Name: fmt.Sprintf("profile-%d", i), SourceURL: srcURL, DestURL: dstURL,
			From: "public.s", To: "public.s", Rate: backfill.Unlimited, Logger: zerolog.Nop(),
		})
		cpu += processCPU(b) - began
		if err != nil || rep.Totals.RowsInserted != rows {
			b.Fatalf("run: %v, %+v; want %d rows inserted", err, rep.Totals, rows)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(rows)/float64(b.N), "cpu-µs/row")
}

func benchConn(b *testing.B, url string) *pgx.Conn {
	b.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// processCPU is the CPU time this process has used, all threads.
func processCPU(b *testing.B) time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
