package worker_test

import (
	"context"
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

// TestRecommitOfACommittedChunkIsRecognised: when the reply to a commit is
// lost, the retry meets the checkpoint's primary key; the chunk counts as
// done once, and its rows are not written twice.
func TestRecommitOfACommittedChunkIsRecognised(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
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
	var results []worker.Result
	p, err := worker.New(worker.Config{
		Job: "j", Table: pgx.Identifier{"dst"}, Transformer: identity, Checkpoint: store, Workers: 1,
		Columns: []worker.Column{{Name: "id", Type: "bigint", OID: pgtype.Int8OID}, {Name: "n", Type: "integer", OID: pgtype.Int4OID}},
		OnChunk: func(r worker.Result) { results = append(results, r) },
	})
	if err != nil {
		t.Fatal(err)
	}
	chunk := &paginator.Chunk{Seq: 1, First: []string{"1"}, Last: []string{"3"},
		Rows: [][]any{{int64(1), int32(10)}, {int64(2), int32(20)}, {int64(3), int32(30)}},
		Keys: [][]string{{"1"}, {"2"}, {"3"}}}
	for attempt := range 2 {
		in := make(chan *paginator.Chunk, 1)
		in <- chunk
		close(in)
		if err := p.Run(ctx, pool, in); err != nil {
			t.Fatalf("attempt %d: %v", attempt+1, err)
		}
	}
	if len(results) != 1 || results[0].Inserted != 3 {
		t.Fatalf("results %+v: want one commit of 3 rows", results)
	}
	c, err := store.Counters(ctx, pool, "j")
	if err != nil {
		t.Fatal(err)
	}
	if c.ChunksDone != 1 || c.RowsInserted != 3 || c.RowsSkipped != 0 {
		t.Fatalf("counters %+v after a repeated commit", c)
	}
}
