package worker_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backfill/backfill/chunk"
	"github.com/backfill/backfill/worker"
)

// TestResizeWhileRunning: the pool grows and shrinks while it takes chunks;
// every chunk is committed once, none lost or written twice; workers that
// retire close their connections, so the destination's sessions follow the
// size; and the gauges say what the pool is doing.
func TestResizeWhileRunning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := newCommitFixture(t)
	// each chunk's statement takes 20 ms: the workers stay inside chunks
	if _, err := f.db.Exec(ctx, `CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$;
		CREATE TRIGGER slow AFTER INSERT ON dst FOR EACH STATEMENT EXECUTE FUNCTION slow()`); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(f.db.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 16
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var committed atomic.Int64
	f.reconfigure(t, func(c *worker.Config) {
		c.Workers = 2
		c.OnChunk = func(worker.Result) { committed.Add(1) }
	})
	pool := f.workers

	const chunks, rowsPerChunk = 300, 5
	in := make(chan *chunk.Chunk, 4)
	go func() {
		defer close(in)
		for seq := 1; seq <= chunks; seq++ {
			c := &chunk.Chunk{Seq: int64(seq)}
			for k := (seq-1)*rowsPerChunk + 1; k <= seq*rowsPerChunk; k++ {
				c.Rows = append(c.Rows, []any{int64(k), int32(k)})
				c.Keys = append(c.Keys, []string{strconv.Itoa(k)})
			}
			if seq > 1 {
				c.After = []string{strconv.Itoa((seq - 1) * rowsPerChunk)}
			}
			c.First, c.Last = c.Keys[0], c.Keys[len(c.Keys)-1]
			select {
			case in <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	ran := make(chan error, 1)
	go func() { ran <- pool.Run(ctx, db, in) }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("not %s within 10 s: size %d, busy %d, %d connections (%d acquired)", what,
					pool.Size(), pool.Busy(), db.Stat().TotalConns(), db.Stat().AcquiredConns())
			}
		}
	}
	waitFor("20 chunks committed", func() bool { return committed.Load() >= 20 })
	if pool.Size() != 2 || pool.Capacity() != 4 {
		t.Fatalf("size %d, capacity %d; want 2 and 4", pool.Size(), pool.Capacity())
	}
	if err := pool.Resize(6); err != nil {
		t.Fatal(err)
	}
	if pool.Size() != 6 || pool.Target() != 6 {
		t.Fatalf("after Resize(6): size %d, target %d", pool.Size(), pool.Target())
	}
	waitFor("6 workers each holding a connection", func() bool { return db.Stat().AcquiredConns() == 6 && pool.Busy() >= 5 })

	if pool.ResizeFrom(2, 3) {
		t.Fatal("ResizeFrom a size the pool no longer has resized it")
	}
	at := committed.Load()
	if err := pool.Resize(1); err != nil {
		t.Fatal(err)
	}
	waitFor("down to one worker and one connection", func() bool { return pool.Size() == 1 && db.Stat().TotalConns() == 1 })
	t.Logf("%d chunks committed while 5 workers finished theirs and retired", committed.Load()-at)
	if !pool.ResizeFrom(1, 3) || pool.Size() != 3 {
		t.Fatalf("ResizeFrom(1, 3): size %d", pool.Size())
	}

	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if committed.Load() != chunks {
		t.Fatalf("%d chunk commits, want %d: one each", committed.Load(), chunks)
	}
	f.checkCounts(t, chunks, chunks*rowsPerChunk, 0, 0, chunks*rowsPerChunk)
	if pool.Size() != 0 || pool.Busy() != 0 || pool.Pending() != 0 || pool.Target() != 3 {
		t.Fatalf("after the run: size %d, busy %d, pending %d, target %d; want 0, 0, 0 and 3", pool.Size(), pool.Busy(), pool.Pending(), pool.Target())
	}
}
