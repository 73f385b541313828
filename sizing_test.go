package backfill_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/backfill/backfill"
)

// chunkRows returns the rows of each of a job's chunks, in read order.
func (f fixture) chunkRows(t *testing.T, job string) []int64 {
	t.Helper()
	rows, err := f.conn.Query(context.Background(), "SELECT rows_read FROM backfill.chunks WHERE job = $1 ORDER BY seq", job)
	if err != nil {
		t.Fatal(err)
	}
	sizes, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return sizes
}

// assertExactCopy fails unless dst holds exactly src's rows and the job's
// counters say each was read and inserted once.
func (f fixture) assertExactCopy(t *testing.T, rep backfill.Report, n int64) {
	t.Helper()
	if d := f.count(t, "SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) d"); d != 0 {
		t.Fatalf("%d source rows missing or different in the destination", d)
	}
	if got := f.count(t, "SELECT count(*) FROM dst"); got != n {
		t.Fatalf("destination has %d rows, want %d", got, n)
	}
	if c := rep.Totals; c.RowsRead != n || c.RowsInserted != n || c.RowsSkipped != 0 || c.RowsFailed != 0 {
		t.Fatalf("totals %+v, want %d read and inserted", c, n)
	}
}

func (f fixture) storedChunkSize(t *testing.T, job string) int64 {
	t.Helper()
	var n int64
	if err := f.conn.QueryRow(context.Background(), "SELECT (spec->>'chunk_size')::int FROM backfill.jobs WHERE name = $1", job).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestUnthrottledJobSizesChunksByTime: without a rate cap or a chunk size,
// chunks grow from the smallest size by the measured write speed, stay
// within their bounds, and every row is copied once. The target is long
// enough that any machine grows them: the test asserts growth and bounds,
// not a speed.
func TestUnthrottledJobSizesChunksByTime(t *testing.T) {
	const n = 150_000
	f := setup(t, n)
	j := f.job("timed")
	j.ChunkSize, j.Workers, j.TargetChunkTime = 0, 2, 5*time.Second
	rep, err := backfill.Run(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	f.assertExactCopy(t, rep, n)
	if got := f.storedChunkSize(t, "timed"); got != 0 {
		t.Fatalf("stored chunk_size %d, want 0 (sized by time)", got)
	}
	sizes := f.chunkRows(t, "timed")
	distinct := map[int64]bool{}
	for i, s := range sizes {
		if s > backfill.MaxTimedChunkSize || s < backfill.DefaultChunkSize && i != len(sizes)-1 {
			t.Fatalf("chunk %d of %d has %d rows, outside [%d, %d]", i+1, len(sizes), s, backfill.DefaultChunkSize, backfill.MaxTimedChunkSize)
		}
		distinct[s] = true
	}
	if len(distinct) < 3 || sizes[0] != backfill.DefaultChunkSize {
		t.Fatalf("chunk sizes %v: want them to start at %d and grow", sizes, backfill.DefaultChunkSize)
	}
	if int64(len(sizes)) != rep.Totals.ChunksDone {
		t.Fatalf("%d chunks recorded, status counts %d", len(sizes), rep.Totals.ChunksDone)
	}
}

// TestChunkSizeOrRateKeepsTheSizeFixed: an explicit chunk size, or a rate
// cap, keeps every chunk but the last at a fixed size, with a target that
// would have grown them.
func TestChunkSizeOrRateKeepsTheSizeFixed(t *testing.T) {
	const n = 20_500
	for _, c := range []struct {
		name       string
		chunkSize  int
		rate       float64
		fixed      int64
		storedSize int64
	}{
		{"explicit chunk size", 700, backfill.Unlimited, 700, 700},
		{"rate cap", 0, 200_000, backfill.DefaultChunkSize, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := setup(t, n)
			j := f.job("fixed")
			j.ChunkSize, j.Rate, j.Workers, j.TargetChunkTime = c.chunkSize, c.rate, 2, 5*time.Second
			rep, err := backfill.Run(context.Background(), j)
			if err != nil {
				t.Fatal(err)
			}
			f.assertExactCopy(t, rep, n)
			if got := f.storedChunkSize(t, "fixed"); got != c.storedSize {
				t.Fatalf("stored chunk_size %d, want %d", got, c.storedSize)
			}
			sizes := f.chunkRows(t, "fixed")
			for i, s := range sizes[:len(sizes)-1] {
				if s != c.fixed {
					t.Fatalf("chunk %d has %d rows, want %d: %v", i+1, s, c.fixed, sizes)
				}
			}
		})
	}
}

// TestSetRateWhileSizedByTime: a cap set while a job sized by time has
// chunks larger than the limiter's burst read and queued: they are written
// under the cap (no burst error), the chunks read after it are of the fixed
// size, and the copy is exact. The destination's inserts wait on an
// advisory lock the test holds while the cap is set, so that large chunks
// are sure to be queued then.
func TestSetRateWhileSizedByTime(t *testing.T) {
	const n = 200_000
	f := setup(t, n)
	f.exec(t,
		`CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN PERFORM pg_advisory_xact_lock_shared(42); RETURN NULL; END $$`,
		"CREATE TRIGGER gate BEFORE INSERT ON dst FOR EACH STATEMENT EXECUTE FUNCTION gate()",
	)
	logs := &syncWriter{w: &strings.Builder{}}
	j := f.job("retimed")
	j.ChunkSize, j.Workers, j.TargetChunkTime = 0, 2, 5*time.Second
	j.LockTimeout = 30 * time.Second // the gate must not time the inserts out and split them
	j.Logger = zerolog.New(logs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type result struct {
		rep backfill.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := backfill.Run(ctx, j)
		done <- result{rep, err}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case r := <-done:
				t.Fatalf("the run ended (%v) before %s:\n%s", r.err, what, logs.w.String())
			case <-ctx.Done():
				t.Fatalf("no %s:\n%s", what, logs.w.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	waitFor("chunk four times the smallest", func() bool {
		return f.countOr(0, "SELECT coalesce(max(rows_read), 0) FROM backfill.chunks WHERE job = 'retimed'") >= 4*backfill.DefaultChunkSize
	})

	gate, err := pgx.Connect(ctx, f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Close(context.Background())
	if _, err := gate.Exec(ctx, "SELECT pg_advisory_lock(42)"); err != nil {
		t.Fatal(err)
	}
	// the workers now wait at the gate; the cap comes once the paginator
	// has filled the queue and waits too: its last page query's session
	// has been idle for long, far longer than decoding a page takes
	waitFor("paginator waiting on the full queue", func() bool {
		return f.countOr(0, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT "src"."id"::text%'
			HAVING bool_and(state = 'idle') AND max(state_change) < now() - interval '2 s'`) > 0
	})
	if _, err := backfill.SetRate(ctx, backfill.Target{DestURL: f.url, Job: "retimed"}, 100_000); err != nil {
		t.Fatal(err)
	}
	waitFor("rate change applied", func() bool {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		return strings.Contains(logs.w.String(), "rate changed by request")
	})
	var capped time.Time
	if err := gate.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&capped); err != nil {
		t.Fatal(err)
	}
	if _, err := gate.Exec(ctx, "SELECT pg_advisory_unlock(42)"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("run after the cap: %v\n%s", r.err, logs.w.String())
	}
	f.assertExactCopy(t, r.rep, n)

	// the workers held at the gate had waited for their tokens before the
	// cap; more large chunks than workers written since were queued, and
	// waited for theirs under it
	var large int64
	if err := f.conn.QueryRow(ctx, "SELECT count(*) FROM backfill.chunks WHERE job = 'retimed' AND finished_at > $1 AND rows_read > $2",
		capped, backfill.DefaultChunkSize).Scan(&large); err != nil {
		t.Fatal(err)
	}
	if large <= int64(j.Workers) {
		rows, _ := f.conn.Query(ctx, "SELECT seq, rows_read, finished_at > $1 FROM backfill.chunks WHERE job = 'retimed' ORDER BY seq LIMIT 60", capped)
		dump, _ := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var seq, n int64
			var after bool
			err := r.Scan(&seq, &n, &after)
			return fmt.Sprint(seq, ":", n, ":", after), err
		})
		t.Logf("%v", dump)
		t.Fatalf("%d chunks larger than %d rows were written after the cap; the test needs more than %d", large, backfill.DefaultChunkSize, j.Workers)
	}
	sizes := f.chunkRows(t, "retimed")
	const tail = 20 // read well after the cap: far more chunks than the queue and workers hold
	if len(sizes) < 2*tail {
		t.Fatalf("only %d chunks", len(sizes))
	}
	for i, s := range sizes[len(sizes)-tail:] {
		if s > backfill.DefaultChunkSize {
			t.Fatalf("chunk %d of the last %d has %d rows under the cap, want at most %d", i+1, tail, s, backfill.DefaultChunkSize)
		}
	}
}

// TestResumeKeepsTheStoredChunkSize: a job stored with a chunk size, as
// every job before sizing by time was (1000 when none was given), resumes
// without one at that size, unthrottled or not.
func TestResumeKeepsTheStoredChunkSize(t *testing.T) {
	const n = 20_000
	f := setup(t, n)
	j := f.job("stored")
	j.ChunkSize, j.Rate = backfill.DefaultChunkSize, 20_000 // about a second of work
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for range time.Tick(10 * time.Millisecond) {
			if f.countOr(0, "SELECT count(*) FROM backfill.chunks") >= 5 {
				cancel()
				return
			}
		}
	}()
	if _, err := backfill.Run(ctx, j); !errors.Is(err, backfill.ErrInterrupted) {
		t.Fatalf("cancelled run: %v, want interrupted", err)
	}
	// the runner lock is free once Run returns, not a moment later when
	// the server notices its session ended: the resume below takes it
	if held := f.count(t, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"); held != 0 {
		t.Fatalf("%d advisory locks still held after the cancelled run returned", held)
	}
	if got := f.storedChunkSize(t, "stored"); got != backfill.DefaultChunkSize {
		t.Fatalf("stored chunk_size %d, want %d", got, backfill.DefaultChunkSize)
	}
	j.Mode, j.ChunkSize, j.Rate, j.TargetChunkTime = backfill.ModeResume, 0, backfill.Unlimited, 5*time.Second
	rep, err := backfill.Run(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	f.assertExactCopy(t, rep, n)
	for i, s := range f.chunkRows(t, "stored") {
		if s != backfill.DefaultChunkSize { // n is a multiple of it
			t.Fatalf("chunk %d has %d rows, want the stored %d", i+1, s, backfill.DefaultChunkSize)
		}
	}
}

// TestAutoRateChunksShareTheWindowsMemory: under --rate auto the
// paginator reads no page while the window of chunks read and not yet
// written is full, so the chunks held at once are the window's, not a
// full queue's; each chunk's share of TimedChunksMemory is the window's
// share. With one worker and rows of about 2 KiB, a share that counted a
// full queue (TimedChunksMemory over QueueDepth+2, about a thousand rows)
// would keep every chunk at the smallest size.
func TestAutoRateChunksShareTheWindowsMemory(t *testing.T) {
	const n = 40_000
	f := setup(t, 0)
	f.exec(t,
		"ALTER TABLE src ALTER name SET STORAGE PLAIN", "ALTER TABLE dst ALTER name SET STORAGE PLAIN",
		fmt.Sprintf(`INSERT INTO src SELECT g, repeat(md5(g::text), 64), NULL, now() FROM generate_series(1, %d) g`, n))
	j := f.job("window-share")
	j.ChunkSize, j.Workers, j.AutoRate, j.Rate = 0, 1, true, backfill.Unlimited
	rep, err := backfill.Run(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	f.assertExactCopy(t, rep, n)
	const rowBytes = 2048 // the name's 2,048 bytes, the least a row takes
	queueShare := backfill.TimedChunksMemory / int64(backfill.DefaultQueueDepth+2)
	largest := slices.Max(f.chunkRows(t, "window-share"))
	if largest*rowBytes <= queueShare {
		t.Fatalf("the largest chunk had %d rows (at least %d bytes); want more than a full queue's share, %d bytes", largest, largest*rowBytes, queueShare)
	}
	if largest*rowBytes > backfill.TimedChunksMemory {
		t.Fatalf("the largest chunk had %d rows, more than the %d bytes of TimedChunksMemory hold", largest, backfill.TimedChunksMemory)
	}
	t.Logf("largest chunk %d rows", largest)
}
