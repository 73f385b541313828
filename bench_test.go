package backfill_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/backfill/backfill"
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
		st, err := backfill.Status(context.Background(), backfill.StatusRequest{DestURL: f.url, Job: j.Name})
		if err != nil {
			b.Fatal(err)
		}
		took := st[0].FinishedAt.Sub(st[0].StartedAt).Seconds()
		ratio += float64(rep.Totals.RowsRead) / took / rate
	}
	b.ReportMetric(ratio/float64(b.N), "achieved/cap")
}
