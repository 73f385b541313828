package backfill_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fixture struct {
	url  string
	conn *pgx.Conn
}

// setup gives each test its own database with a source table of n rows and
// an empty destination of the same shape.
func setup(t *testing.T, n int) fixture {
	t.Helper()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	for _, q := range []string{
		"CREATE TABLE src (id bigint PRIMARY KEY, name text, doc jsonb, at timestamptz)",
		"CREATE TABLE dst (LIKE src INCLUDING ALL)",
		fmt.Sprintf(`INSERT INTO src SELECT g, 'n' || g, jsonb_build_object('g', g), now() FROM generate_series(1, %d) g`, n),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return fixture{url: url, conn: conn}
}

func (f fixture) count(t *testing.T, q string) int64 {
	t.Helper()
	var n int64
	if err := f.conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func (f fixture) job(name string) backfill.Job {
	return backfill.Job{
		Name: name, SourceURL: f.url, From: "src", To: "dst",
		ChunkSize: 100, Workers: 8, Rate: backfill.Unlimited, Logger: zerolog.Nop(),
	}
}

// TestRunCancelAndResume cancels a run in the middle (the library's form of
// SIGINT) and resumes it, many workers writing concurrently under -race.
func TestRunCancelAndResume(t *testing.T) {
	f := setup(t, 20_000)
	j := f.job("cancel")
	j.Rate = 20_000 // about a second of work
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			var n int64
			_ = f.conn.QueryRow(context.Background(), "SELECT count(*) FROM backfill.chunks").Scan(&n)
			if n >= 30 {
				cancel()
				return
			}
		}
	}()
	rep, err := backfill.Run(ctx, j)
	if !errors.Is(err, backfill.ErrInterrupted) || rep.State != "interrupted" {
		t.Fatalf("cancelled run: state %q, err %v; want interrupted", rep.State, err)
	}
	if got := f.count(t, "SELECT count(*) FROM dst"); got != rep.Totals.RowsInserted || got == 0 || got == 20_000 {
		t.Fatalf("after cancel the destination has %d rows, the checkpoint says %d", got, rep.Totals.RowsInserted)
	}

	j.Mode, j.Rate = backfill.ModeResume, 0 // 0: keep the stored rate
	rep, err = backfill.Run(context.Background(), j)
	if err != nil || rep.State != "done" {
		t.Fatalf("resume: state %q, err %v", rep.State, err)
	}
	if rep.Totals.RowsInserted != 20_000 || rep.Totals.RowsSkipped != 0 || rep.Totals.ChunksDone != 200 {
		t.Fatalf("resumed totals %+v, want 20000 inserted, 0 skipped, 200 chunks", rep.Totals)
	}
	if n := f.count(t, "SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) d"); n != 0 {
		t.Fatalf("%d source rows missing or different in the destination", n)
	}
}

// TestRunRefusesSecondRunner: while one runner holds the job, another is
// refused at once, naming the holder.
func TestRunRefusesSecondRunner(t *testing.T) {
	f := setup(t, 5_000)
	first := f.job("busy")
	first.Rate = 2_000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := backfill.Run(ctx, first); done <- err }()
	deadline := time.Now().Add(30 * time.Second)
	for f.count(t, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("first runner never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	second := f.job("busy")
	second.Mode = backfill.ModeResume
	began := time.Now()
	_, err := backfill.Run(context.Background(), second)
	if !errors.Is(err, backfill.ErrJobBusy) {
		t.Fatalf("second runner: %v, want ErrJobBusy", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("second runner took %v to be refused", took)
	}
	t.Logf("refused: %v", err)
	cancel()
	if err := <-done; !errors.Is(err, backfill.ErrInterrupted) {
		t.Fatalf("first runner: %v", err)
	}
}
