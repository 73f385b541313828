package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/chunk"
	"github.com/backfill/backfill/internal/pgtest"
	"github.com/backfill/backfill/retry"
	"github.com/backfill/backfill/transform"
	"github.com/backfill/backfill/worker"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// commitFixture is a migrated state schema with job "j", a destination
// table dst (id bigint PRIMARY KEY, n int) and a one-worker pool for it.
type commitFixture struct {
	db      *pgxpool.Pool
	store   *checkpoint.Store
	gen     int64 // the pool's generation of job "j"
	cfg     worker.Config
	workers *worker.Pool
	results []worker.Result
}

func newCommitFixture(t *testing.T) *commitFixture {
	t.Helper()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store, err := checkpoint.New("state")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	gen, err := store.CreateJob(ctx, pool, checkpoint.NewJob{Name: "j", Spec: []byte(`{}`), Workers: 1, UpperKey: []string{"3"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE dst (id bigint PRIMARY KEY, n int)"); err != nil {
		t.Fatal(err)
	}
	cols := []transform.Column{{Name: "id", Type: "bigint", OID: pgtype.Int8OID}, {Name: "n", Type: "integer", OID: pgtype.Int4OID}}
	identity, err := transform.Identity(cols, cols)
	if err != nil {
		t.Fatal(err)
	}
	f := &commitFixture{db: pool, store: store, gen: gen}
	f.cfg = worker.Config{
		Job: "j", Table: pgx.Identifier{"dst"}, Transformer: identity, Checkpoint: store, Generation: gen, Workers: 1,
		Columns: []worker.Column{{Name: "id", Type: "bigint", Cast: "bigint", CastOID: pgtype.Int8OID, OID: pgtype.Int8OID}, {Name: "n", Type: "integer", Cast: "integer", CastOID: pgtype.Int4OID, OID: pgtype.Int4OID}},
		OnChunk: func(r worker.Result) { f.results = append(f.results, r) },
	}
	if f.workers, err = worker.New(f.cfg); err != nil {
		t.Fatal(err)
	}
	return f
}

// commit sends c through the pool once.
func (f *commitFixture) commit(ctx context.Context, c *chunk.Chunk) error {
	in := make(chan *chunk.Chunk, 1)
	in <- c
	close(in)
	return f.workers.Run(ctx, f.db, in)
}

// threeRows is a chunk of keys 1…3 from the start of the table.
func threeRows() *chunk.Chunk {
	return &chunk.Chunk{Seq: 1, First: []string{"1"}, Last: []string{"3"},
		Rows: [][]any{{int64(1), int32(10)}, {int64(2), int32(20)}, {int64(3), int32(30)}},
		Keys: [][]string{{"1"}, {"2"}, {"3"}}}
}

// TestRecommitOfACommittedChunkIsRecognised: when the reply to a commit is
// lost, the retry meets the checkpoint's primary key; the chunk counts as
// done once, and its rows are not written twice.
func TestRecommitOfACommittedChunkIsRecognised(t *testing.T) {
	ctx := context.Background()
	for name, path := range map[string]func(*worker.Config){"stage": func(*worker.Config) {}, "direct, probed": direct(true), "direct": direct(false)} {
		f := newCommitFixture(t)
		f.reconfigure(t, path)
		chunk := threeRows()
		for attempt := range 2 {
			if err := f.commit(ctx, chunk); err != nil {
				t.Fatalf("%s: attempt %d: %v", name, attempt+1, err)
			}
		}
		if len(f.results) != 1 || f.results[0].Inserted != 3 {
			t.Fatalf("%s: results %+v: want one commit of 3 rows", name, f.results)
		}
		f.checkCounts(t, 1, 3, 0, 0, 3)
	}
}

// TestOverlapWithACommittedChunkIsNotTakenForIt: a chunk that ends where a
// committed chunk ends but begins before it is not a retry of it. Taking
// it for done would lose its rows before the committed chunk's start; the
// pool stops with an error instead, and writes nothing.
func TestOverlapWithACommittedChunkIsNotTakenForIt(t *testing.T) {
	ctx := context.Background()
	f := newCommitFixture(t)
	// (2, 3] committed: only key 3
	rec := checkpoint.ChunkRecord{Seq: 1, After: []string{"2"}, First: []string{"3"}, Last: []string{"3"}, RowsRead: 1, Generation: f.gen}
	if _, err := f.db.Exec(ctx, f.store.RecordChunkSQL(), checkpoint.RecordChunkArgs("j", rec, 1, 0)...); err != nil {
		t.Fatal(err)
	}
	err := f.commit(ctx, threeRows()) // (start, 3]
	if err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("commit of an overlapping chunk: %v; want an overlap error", err)
	}
	var rows int
	if err := f.db.QueryRow(ctx, "SELECT count(*) FROM dst").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 || len(f.results) != 0 {
		t.Fatalf("dst holds %d rows and %d chunks were reported; want none", rows, len(f.results))
	}
}

// TestFencedCommitStopsTheWorkers: after a newer runner has claimed the
// job, the pool's commits are refused by the fence. A chunk that would have
// gone through the fast path, and one with a row that fails on its data
// (bisected, then recorded inside a transaction), both stop the pool with
// ErrFenced at once: no retry, no bisection taken for a bad row, nothing
// written, nothing reported.
func TestFencedCommitStopsTheWorkers(t *testing.T) {
	ctx := context.Background()
	f := newCommitFixture(t)
	if _, err := f.db.Exec(ctx, "ALTER TABLE dst ADD CHECK (n < 25)"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.ClaimJob(ctx, f.db, "j", 0, 1, "host", 2); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	cfg := f.cfg
	cfg.Logger, cfg.Retry = zerolog.New(&logs), retry.Policy{MaxRetries: 3}
	clean := &chunk.Chunk{Seq: 1, First: []string{"1"}, Last: []string{"2"},
		Rows: [][]any{{int64(1), int32(10)}, {int64(2), int32(20)}}, Keys: [][]string{{"1"}, {"2"}}}
	for _, directCopy := range []bool{false, true} {
		cfg.DirectCopy = directCopy
		var err error
		if f.workers, err = worker.New(cfg); err != nil {
			t.Fatal(err)
		}
		for name, chunk := range map[string]*chunk.Chunk{"fast path": clean, "isolating path": threeRows()} {
			err := f.commit(ctx, chunk)
			if !errors.Is(err, checkpoint.ErrFenced) {
				t.Fatalf("%s (direct COPY %v): commit as a superseded generation: %v; want ErrFenced", name, directCopy, err)
			}
		}
	}
	var rows, failed int
	if err := f.db.QueryRow(ctx, "SELECT (SELECT count(*) FROM dst), (SELECT count(*) FROM state.failed_rows)").Scan(&rows, &failed); err != nil {
		t.Fatal(err)
	}
	if rows != 0 || failed != 0 || len(f.results) != 0 {
		t.Fatalf("dst holds %d rows, failed_rows %d, %d chunks reported; want none", rows, failed, len(f.results))
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Fatalf("a fenced commit was retried:\n%s", logs.String())
	}
}

// reconfigure rebuilds the fixture's pool with a changed configuration.
func (f *commitFixture) reconfigure(t *testing.T, change func(*worker.Config)) {
	t.Helper()
	change(&f.cfg)
	var err error
	if f.workers, err = worker.New(f.cfg); err != nil {
		t.Fatal(err)
	}
}

// direct lets the pool copy chunks straight into dst, probing ranges by
// its key when probe is set.
func direct(probe bool) func(*worker.Config) {
	return func(cfg *worker.Config) {
		cfg.DirectCopy, cfg.RangeKey, cfg.LeaveOutPresent = true, nil, false
		if probe {
			cfg.RangeKey, cfg.LeaveOutPresent = []worker.KeyPart{{Name: "id", Cast: "bigint"}}, true
		}
	}
}

// checkCounts checks the job's counters and dst's rows.
func (f *commitFixture) checkCounts(t *testing.T, chunks, inserted, skipped, failed int64, dstRows int) {
	t.Helper()
	ctx := context.Background()
	c, err := f.store.Counters(ctx, f.db, "j")
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := f.db.QueryRow(ctx, "SELECT count(*) FROM dst").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if c.ChunksDone != chunks || c.RowsInserted != inserted || c.RowsSkipped != skipped || c.RowsFailed != failed || rows != dstRows {
		t.Fatalf("counters %+v, dst %d rows; want %d chunks, %d inserted, %d skipped, %d failed, %d rows",
			c, rows, chunks, inserted, skipped, failed, dstRows)
	}
}

// TestDirectCopyIntoAnEmptyRange: a chunk whose range holds no row goes
// straight into the table, and is recorded in the same transaction.
func TestDirectCopyIntoAnEmptyRange(t *testing.T) {
	for _, probe := range []bool{true, false} {
		f := newCommitFixture(t)
		f.reconfigure(t, direct(probe))
		if err := f.commit(context.Background(), threeRows()); err != nil {
			t.Fatal(err)
		}
		if len(f.results) != 1 || f.results[0].Path != worker.PathDirect || f.results[0].Inserted != 3 {
			t.Fatalf("probe %v: results %+v; want one direct commit of 3 rows", probe, f.results)
		}
		f.checkCounts(t, 1, 3, 0, 0, 3)
	}
}

// TestDirectCopyMeetsARowInItsRange: a row the destination already holds
// in the chunk's range is left out of the direct COPY when the probe sees
// it, and sends the chunk through the stage when only the COPY can fail on
// it; either way the counts are those of INSERT … ON CONFLICT DO NOTHING
// and the row is untouched.
func TestDirectCopyMeetsARowInItsRange(t *testing.T) {
	for probe, path := range map[bool]string{true: worker.PathDirect, false: worker.PathStage} {
		f := newCommitFixture(t)
		f.reconfigure(t, direct(probe))
		if _, err := f.db.Exec(context.Background(), "INSERT INTO dst VALUES (2, -2)"); err != nil {
			t.Fatal(err)
		}
		if err := f.commit(context.Background(), threeRows()); err != nil {
			t.Fatal(err)
		}
		if len(f.results) != 1 || f.results[0].Path != path || f.results[0].Inserted != 2 || f.results[0].Skipped != 1 {
			t.Fatalf("probe %v: results %+v; want one commit by the %s path, 2 inserted, 1 skipped", probe, f.results, path)
		}
		f.checkCounts(t, 1, 2, 1, 0, 3)
		var n int
		if err := f.db.QueryRow(context.Background(), "SELECT n FROM dst WHERE id = 2").Scan(&n); err != nil || n != -2 {
			t.Fatalf("the row already there has n = %d (%v); want it untouched, -2", n, err)
		}
	}
}

// rowsChunk is a chunk of rows 1…n with n = 10 × id.
func rowsChunk(n int) *chunk.Chunk {
	c := &chunk.Chunk{Seq: 1, First: []string{"1"}, Last: []string{fmt.Sprint(n)}}
	for id := int64(1); id <= int64(n); id++ {
		c.Rows = append(c.Rows, []any{id, int32(10 * id)})
		c.Keys = append(c.Keys, []string{fmt.Sprint(id)})
	}
	return c
}

// TestDirectCopyGoesAroundTheRowsOfItsRange: the direct COPY leaves out
// the rows whose keys the destination holds, whether or not the chunk has
// the other rows the range holds, while they are fewer than half the
// chunk's; more, or a key whose text may not stand for its value, send the
// chunk through the stage. The counts and rows are always those of
// INSERT … ON CONFLICT DO NOTHING.
func TestDirectCopyGoesAroundTheRowsOfItsRange(t *testing.T) {
	for _, tc := range []struct {
		name     string
		present  string // the keys dst holds before the chunk
		cast     string // the range key's type
		leaveOut bool   // Config.LeaveOutPresent
		path     string
		skipped  int64
	}{
		{"two rows, one the chunk lacks", "0, 4, 7", "bigint", true, worker.PathDirect, 2},
		{"half the chunk's rows", "1, 2, 3, 4, 5", "bigint", true, worker.PathStage, 5},
		{"a key matched by its value, not its text", "4", "numeric", true, worker.PathStage, 1},
		{"a key a trigger might change", "4", "bigint", false, worker.PathStage, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newCommitFixture(t)
			f.reconfigure(t, func(cfg *worker.Config) {
				cfg.DirectCopy, cfg.RangeKey, cfg.LeaveOutPresent = true, []worker.KeyPart{{Name: "id", Cast: tc.cast}}, tc.leaveOut
			})
			if _, err := f.db.Exec(ctx, "INSERT INTO dst SELECT k, -k FROM unnest('{"+tc.present+"}'::bigint[]) k"); err != nil {
				t.Fatal(err)
			}
			var before int
			if err := f.db.QueryRow(ctx, "SELECT count(*) FROM dst").Scan(&before); err != nil {
				t.Fatal(err)
			}
			if err := f.commit(ctx, rowsChunk(10)); err != nil {
				t.Fatal(err)
			}
			if len(f.results) != 1 || f.results[0].Path != tc.path || int64(f.results[0].Skipped) != tc.skipped {
				t.Fatalf("results %+v; want one commit by the %s path, %d skipped", f.results, tc.path, tc.skipped)
			}
			f.checkCounts(t, 1, 10-tc.skipped, tc.skipped, 0, before+10-int(tc.skipped))
			var wrong int
			if err := f.db.QueryRow(ctx, "SELECT count(*) FROM dst WHERE id = ANY('{"+tc.present+"}') AND n <> -id OR id <> ALL('{"+tc.present+"}') AND n <> 10 * id").Scan(&wrong); err != nil || wrong != 0 {
				t.Fatalf("%d rows of dst hold other values than the ones there before or the chunk's (%v)", wrong, err)
			}
		})
	}
}

// TestDirectCopyRestsAfterRepeatedFallbacks: when direct COPYs keep
// failing (a destination full of rows, no probe), the next chunks go
// through the stage without trying, and say so once.
func TestDirectCopyRestsAfterRepeatedFallbacks(t *testing.T) {
	ctx := context.Background()
	f := newCommitFixture(t)
	var logs strings.Builder
	f.reconfigure(t, func(cfg *worker.Config) {
		direct(false)(cfg)
		cfg.Logger = zerolog.New(&logs).Level(zerolog.DebugLevel)
	})
	if _, err := f.db.Exec(ctx, "INSERT INTO dst SELECT g, 0 FROM generate_series(1, 6) g"); err != nil {
		t.Fatal(err)
	}
	in := make(chan *chunk.Chunk, 6)
	for k := int64(1); k <= 6; k++ {
		c := &chunk.Chunk{Seq: k, First: []string{fmt.Sprint(k)}, Last: []string{fmt.Sprint(k)},
			Rows: [][]any{{k, int32(k)}}, Keys: [][]string{{fmt.Sprint(k)}}}
		if k > 1 {
			c.After = []string{fmt.Sprint(k - 1)}
		}
		in <- c
	}
	close(in)
	if err := f.workers.Run(ctx, f.db, in); err != nil {
		t.Fatal(err)
	}
	if tried, rested := strings.Count(logs.String(), "direct COPY failed"), strings.Count(logs.String(), "the next chunks go through the stage"); tried != 3 || rested != 1 {
		t.Fatalf("%d direct COPYs failed, %d rests announced; want 3 and 1:\n%s", tried, rested, logs.String())
	}
	f.checkCounts(t, 6, 0, 6, 0, 6)
}

// TestDirectCopyOfAPoisonRow: a row the table refuses fails the COPY; the
// chunk goes through the stage, which isolates the row.
func TestDirectCopyOfAPoisonRow(t *testing.T) {
	f := newCommitFixture(t)
	f.reconfigure(t, direct(true))
	if _, err := f.db.Exec(context.Background(), "ALTER TABLE dst ADD CHECK (n < 25)"); err != nil {
		t.Fatal(err)
	}
	if err := f.commit(context.Background(), threeRows()); err != nil {
		t.Fatal(err)
	}
	if len(f.results) != 1 || f.results[0].Path != worker.PathIsolated || f.results[0].Failed != 1 {
		t.Fatalf("results %+v; want one isolated commit with 1 failed row", f.results)
	}
	f.checkCounts(t, 1, 2, 0, 1, 2)
}

// TestAttemptsAreHeardWithTheirOutcome: OnAttempt hears each attempt's
// outcome with its durations (a committed one with its rows, and that it
// ends its chunk), OnRateWait each wait on the limiter, and a worker is
// busy while it holds a chunk.
func TestAttemptsAreHeardWithTheirOutcome(t *testing.T) {
	ctx := context.Background()
	f := newCommitFixture(t)
	type heard struct {
		outcome worker.Outcome
		res     worker.Result
		busy    int
	}
	var attempts []heard
	var waits int
	f.reconfigure(t, func(cfg *worker.Config) {
		cfg.Limiter = rate.NewLimiter(1000, 10)
		cfg.OnRateWait = func(time.Duration) { waits++ }
		cfg.OnAttempt = func(o worker.Outcome, res worker.Result) {
			attempts = append(attempts, heard{o, res, f.workers.Busy()})
		}
	})
	if err := f.commit(ctx, threeRows()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.ClaimJob(ctx, f.db, "j", 0, 1, "host", 2); err != nil {
		t.Fatal(err)
	}
	next := &chunk.Chunk{Seq: 2, After: []string{"3"}, First: []string{"4"}, Last: []string{"4"},
		Rows: [][]any{{int64(4), int32(40)}}, Keys: [][]string{{"4"}}}
	if err := f.commit(ctx, next); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("commit as a superseded generation: %v; want ErrFenced", err)
	}
	if len(attempts) != 2 || waits != 2 || f.workers.Busy() != 0 || f.workers.Target() != 1 {
		t.Fatalf("heard %+v and %d waits, %d busy of %d after; want 2 attempts, 2 waits, none busy of 1", attempts, waits, f.workers.Busy(), f.workers.Target())
	}
	done, fenced := attempts[0], attempts[1]
	if done.outcome != worker.Committed || done.res.Inserted != 3 || !done.res.EndsChunk || done.res.Transform <= 0 || done.res.Write <= 0 || done.busy != 1 {
		t.Errorf("the committed attempt: %+v", done)
	}
	if fenced.outcome != worker.GaveUp || fenced.res.Inserted != 0 || fenced.busy != 1 {
		t.Errorf("the fenced attempt: %+v", fenced)
	}
}
