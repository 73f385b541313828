package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/internal/pgtest"
	"github.com/backfill/backfill/paginator"
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
		Columns: []worker.Column{{Name: "id", Type: "bigint", Cast: "bigint", OID: pgtype.Int8OID}, {Name: "n", Type: "integer", Cast: "integer", OID: pgtype.Int4OID}},
		OnChunk: func(r worker.Result) { f.results = append(f.results, r) },
	}
	if f.workers, err = worker.New(f.cfg); err != nil {
		t.Fatal(err)
	}
	return f
}

// commit sends chunk through the pool once.
func (f *commitFixture) commit(ctx context.Context, chunk *paginator.Chunk) error {
	in := make(chan *paginator.Chunk, 1)
	in <- chunk
	close(in)
	return f.workers.Run(ctx, f.db, in)
}

// threeRows is a chunk of keys 1…3 from the start of the table.
func threeRows() *paginator.Chunk {
	return &paginator.Chunk{Seq: 1, First: []string{"1"}, Last: []string{"3"},
		Rows: [][]any{{int64(1), int32(10)}, {int64(2), int32(20)}, {int64(3), int32(30)}},
		Keys: [][]string{{"1"}, {"2"}, {"3"}}}
}

// TestRecommitOfACommittedChunkIsRecognised: when the reply to a commit is
// lost, the retry meets the checkpoint's primary key; the chunk counts as
// done once, and its rows are not written twice.
func TestRecommitOfACommittedChunkIsRecognised(t *testing.T) {
	ctx := context.Background()
	f := newCommitFixture(t)
	chunk := threeRows()
	for attempt := range 2 {
		if err := f.commit(ctx, chunk); err != nil {
			t.Fatalf("attempt %d: %v", attempt+1, err)
		}
	}
	if len(f.results) != 1 || f.results[0].Inserted != 3 {
		t.Fatalf("results %+v: want one commit of 3 rows", f.results)
	}
	c, err := f.store.Counters(ctx, f.db, "j")
	if err != nil {
		t.Fatal(err)
	}
	if c.ChunksDone != 1 || c.RowsInserted != 3 || c.RowsSkipped != 0 {
		t.Fatalf("counters %+v after a repeated commit", c)
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
	var err error
	if f.workers, err = worker.New(cfg); err != nil {
		t.Fatal(err)
	}
	clean := &paginator.Chunk{Seq: 1, First: []string{"1"}, Last: []string{"2"},
		Rows: [][]any{{int64(1), int32(10)}, {int64(2), int32(20)}}, Keys: [][]string{{"1"}, {"2"}}}
	for name, chunk := range map[string]*paginator.Chunk{"fast path": clean, "isolating path": threeRows()} {
		err := f.commit(ctx, chunk)
		if !errors.Is(err, checkpoint.ErrFenced) {
			t.Fatalf("%s: commit as a superseded generation: %v; want ErrFenced", name, err)
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
