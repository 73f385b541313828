package integration_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/backfill/backfill/internal/pgtest"
)

// slowWrites makes each statement that writes table take secs seconds.
func slowWrites(t *testing.T, url, table, secs string) {
	t.Helper()
	sql(t, url,
		"CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep("+secs+"); RETURN NULL; END $$",
		"CREATE TRIGGER slow AFTER INSERT ON "+table+" FOR EACH STATEMENT EXECUTE FUNCTION slow()")
}

// logLinesWith are the JSON log lines whose message is msg, decoded.
func logLinesWith(log, msg string) []map[string]any {
	return findLogLines(log, map[string]any{"message": msg})
}

// TestSetWorkersWhileRunning: `backfill set --workers 2`, then 12, on a
// running job whose writes a trigger slows: within 3 s each time the runner
// logs the pool at its new size, the destination holds one session per
// worker (the workers that retired finished their chunk and closed
// theirs), and status shows the count; the job ends exact, its counters a
// clean run's.
func TestSetWorkersWhileRunning(t *testing.T) {
	src, dst := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	createItems(t, src, "src")
	fillItems(t, src, "src", 30_000)
	createItems(t, dst, "dst")
	createItems(t, dst, "clean")
	slowWrites(t, dst, "dst", "0.25")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := startBackground(ctx, t, "start", "--source", src, "--dest", dst, "--job", "live", "--from", "src", "--to", "dst",
		"--chunk-size", "100", "--workers", "4", "--rate", "0", "--log-format", "json")
	done, out := b.done, b.stderr
	chunksDone := func() int64 {
		return pollInt(ctx, dst, "SELECT count(*) FROM backfill.chunks WHERE job = 'live'")
	}
	// the runner's sessions on the destination: its control connection,
	// and one per worker
	sessions := func() int64 {
		return pollInt(ctx, dst, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'backfill:live'")
	}
	waitUntil(t, done, out, "10 chunks", func() bool { return chunksDone() >= 10 })
	waitUntil(t, done, out, "4 workers connected", func() bool { return sessions() >= 5 })
	others := sessions() - 4 // the control connection (and any other of the runner's)

	for _, workers := range []int64{2, 12} {
		resizedBefore := len(logLinesWith(out.String(), "worker pool resized"))
		n := map[int64]string{2: "2", 12: "12"}[workers]
		r := mustSucceed(t, "set", "--dest", dst, "--job", "live", "--workers", n)
		if !strings.Contains(r.stdout, "workers set to "+n) || !strings.Contains(r.stdout, "within seconds") {
			t.Fatalf("set: %s", r)
		}
		set := time.Now()
		var logged, connected, shown time.Duration
		for logged == 0 || connected == 0 || shown == 0 {
			if lines := logLinesWith(out.String(), "worker pool resized"); logged == 0 && len(lines) > resizedBefore {
				if got := lines[len(lines)-1]["workers"]; got != float64(workers) {
					t.Fatalf("the pool logged %v workers, want %d:\n%s", got, workers, out)
				}
				logged = time.Since(set)
			}
			if connected == 0 && sessions() == others+workers {
				connected = time.Since(set)
			}
			if shown == 0 && int64(status(t, dst, "live").Workers) == workers {
				shown = time.Since(set)
			}
			if time.Since(set) > 3*time.Second {
				t.Fatalf("--workers %d: not followed within 3 s (logged after %v, %d sessions for %d workers, status %d):\n%s",
					workers, logged, sessions()-others, workers, status(t, dst, "live").Workers, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("--workers %d: pool resized after %v, %d destination sessions after %v, status after %v",
			workers, logged.Round(time.Millisecond), workers, connected.Round(time.Millisecond), shown.Round(time.Millisecond))
		got := logLinesWith(out.String(), "workers changed by request")
		if len(got) == 0 || got[len(got)-1]["to"] != float64(workers) {
			t.Fatalf("no log of the request for %d workers:\n%s", workers, out)
		}
		t.Logf("logged: %v", got[len(got)-1])
	}
	if code := b.exitCode(); code != 0 {
		t.Fatalf("runner exited %d:\n%s", code, out)
	}
	assertSameRows(t, src, "src", dst, "dst")
	mustSucceed(t, "start", "--source", src, "--dest", dst, "--job", "clean", "--from", "src", "--to", "clean", "--chunk-size", "100", "--rate", "0")
	live, clean := status(t, dst, "live"), status(t, dst, "clean")
	if countersOf(live) != countersOf(clean) || live.RowsInserted != 30_000 || live.Workers != 12 {
		t.Fatalf("resized job's counters %+v (workers %d), a clean run's %+v; want them equal, and 12 workers", countersOf(live), live.Workers, countersOf(clean))
	}
}

// TestAutoscaleGrows: `start --autoscale` against a destination a trigger
// slows: after the controller's first 5 s with a full queue the pool has a
// worker more, logged with the reason, and the job ends exact. (Shrinking,
// which takes a minute, is tested in the root package with a shorter one.)
func TestAutoscaleGrows(t *testing.T) {
	db := itemsDatabase(t, 12_000)
	slowWrites(t, db, "dst", "0.1")
	r := mustSucceed(t, "start", "--source", db, "--job", "scaled", "--from", "src", "--to", "dst", "--chunk-size", "100",
		"--rate", "0", "--autoscale", "--workers", "1", "--max-workers", "3", "--log-format", "json")
	grew := logLinesWith(r.stderr, "autoscale: growing the pool")
	if len(grew) == 0 || grew[0]["from"] != 1.0 || grew[0]["to"] != 2.0 || !strings.Contains(grew[0]["reason"].(string), "the workers are the bottleneck") {
		t.Fatalf("want the pool grown from 1 worker, logged with the reason:\n%s", r.stderr)
	}
	t.Logf("grew: %v", grew)
	assertSameRows(t, db, "src", db, "dst")
	if s := status(t, db, "scaled"); s.RowsInserted != 12_000 || s.ChunksDone != 120 || s.Workers < 2 {
		t.Fatalf("after the run: %+v; want 12000 rows, 120 chunks and the grown pool's size", s)
	}
}

// TestSetWorkersOfAStoppedOrPartitionedJob: set writes both tunings of a
// stopped job for its resume, or nothing when one is invalid; a
// partitioned job's worker count is its runners', and is refused.
func TestSetWorkersOfAStoppedOrPartitionedJob(t *testing.T) {
	db := itemsDatabase(t, 2_000)
	mustSucceed(t, "start", "--source", db, "--job", "one", "--from", "src", "--to", "dst", "--rate", "0")
	r := mustSucceed(t, "set", "--dest", db, "--job", "one", "--workers", "3", "--rate", "500")
	if !strings.Contains(r.stdout, "rate set to 500 rows/s, workers set to 3; it applies at its next resume") {
		t.Fatalf("set of a done job: %s", r)
	}
	if s := status(t, db, "one"); s.Workers != 3 || s.Rate != 500 {
		t.Fatalf("after set: workers %d, rate %v; want 3 and 500", s.Workers, s.Rate)
	}
	if r := cli(t, "set", "--dest", db, "--job", "one", "--workers", "0", "--rate", "900"); r.code != 2 || !strings.Contains(r.stderr, "--workers 0: must be at least 1") {
		t.Fatalf("set --workers 0: want exit 2 naming the flag, got %s", r)
	}
	if s := status(t, db, "one"); s.Workers != 3 || s.Rate != 500 {
		t.Fatalf("a refused set wrote: workers %d, rate %v", s.Workers, s.Rate)
	}

	sql(t, db, "TRUNCATE dst")
	mustSucceed(t, "start", "--source", db, "--job", "parts", "--from", "src", "--to", "dst", "--rate", "0", "--partitions", "2")
	if r := cli(t, "set", "--dest", db, "--job", "parts", "--workers", "3", "--rate", "700"); r.code != 1 || !strings.Contains(r.stderr, "partitioned") {
		t.Fatalf("set --workers of a partitioned job: want a refusal, got %s", r)
	}
	if s := status(t, db, "parts"); s.Rate == 700 {
		t.Fatalf("the refused set wrote the rate: %+v", s)
	}
}
