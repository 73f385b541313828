package worker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/internal/pgtest"
	"github.com/backfill/backfill/paginator"
	"github.com/backfill/backfill/transform"
	"github.com/backfill/backfill/worker"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// commitFixture is a migrated state schema with job "j", a destination
// table dst (id bigint PRIMARY KEY, n int) and a one-worker pool for it.
type commitFixture struct {
	db      *pgxpool.Pool
	store   *checkpoint.Store
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
	if err := store.CreateJob(ctx, pool, checkpoint.NewJob{Name: "j", Spec: []byte(`{}`), Workers: 1, UpperKey: []string{"3"}}); err != nil {
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
	f := &commitFixture{db: pool, store: store}
	f.workers, err = worker.New(worker.Config{
		Job: "j", Table: pgx.Identifier{"dst"}, Transformer: identity, Checkpoint: store, Workers: 1,
		Columns: []worker.Column{{Name: "id", Type: "bigint", Cast: "bigint", OID: pgtype.Int8OID}, {Name: "n", Type: "integer", Cast: "integer", OID: pgtype.Int4OID}},
		OnChunk: func(r worker.Result) { f.results = append(f.results, r) },
	})
	if err != nil {
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
	if _, err := f.db.Exec(ctx, f.store.RecordChunkSQL(), "j", int64(1), []string{"2"}, []string{"3"}, []string{"3"}, 1, 0, 0, 1, 0); err != nil {
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
