package backfill_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/internal/pgtest"
	"github.com/backfill/backfill/transform"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fixture struct {
	url  string
	conn *pgx.Conn
}

// setup gives each test its own database with a source table of n rows and
// an empty destination of the same shape.
func setup(t *testing.T, n int) fixture { return setupB(t, n) }

func setupB(t testing.TB, n int) fixture {
	t.Helper()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	f := fixture{url: url, conn: conn}
	f.exec(t,
		"CREATE TABLE src (id bigint PRIMARY KEY, name text, doc jsonb, at timestamptz)",
		"CREATE TABLE dst (LIKE src INCLUDING ALL)",
		fmt.Sprintf(`INSERT INTO src SELECT g, 'n' || g, jsonb_build_object('g', g), now() FROM generate_series(1, %d) g`, n),
	)
	return f
}

// exec runs statements on the fixture's connection, in order.
func (f fixture) exec(t testing.TB, statements ...string) {
	t.Helper()
	for _, q := range statements {
		if _, err := f.conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func (f fixture) count(t testing.TB, q string) int64 {
	t.Helper()
	var n int64
	if err := f.conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// countOr is count for polling from another goroutine: errors (the
// state table may not exist yet) read as or.
func (f fixture) countOr(or int64, q string) int64 {
	conn, err := pgx.Connect(context.Background(), f.url)
	if err != nil {
		return or
	}
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		return or
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

// TestPanicInTransformIsRetried: a Go transform that panics once is
// recovered, logged, retried by a fresh worker, and the job finishes with
// every row.
func TestPanicInTransformIsRetried(t *testing.T) {
	f := setup(t, 3_000)
	var panicked atomic.Bool
	j := f.job("panics")
	j.Transform = func(source, dest []transform.Column) (transform.Transformer, error) {
		return transform.FromFunc(source, dest, []string{"id", "name"}, func(r transform.Row) (bool, error) {
			id := r.Get("id").(int64)
			if id == 1234 && panicked.CompareAndSwap(false, true) {
				panic("a bug in a user's transform")
			}
			r.Set("id", id)
			r.Set("name", r.Get("name"))
			return true, nil
		})
	}
	var logs strings.Builder
	j.Logger = zerolog.New(&syncWriter{w: &logs})
	rep, err := backfill.Run(context.Background(), j)
	if err != nil || rep.Totals.RowsInserted != 3_000 || rep.Totals.RowsFailed != 0 {
		t.Fatalf("run: %v, totals %+v", err, rep.Totals)
	}
	if !panicked.Load() || !strings.Contains(logs.String(), "a bug in a user's transform") || !strings.Contains(logs.String(), "goroutine") {
		t.Fatalf("the panic was not logged with its stack:\n%s", logs.String())
	}
	if n := f.count(t, "SELECT count(*) FROM dst JOIN src USING (id) WHERE dst.name = src.name"); n != 3_000 {
		t.Fatalf("%d of 3000 rows copied", n)
	}
}

// TestSlowChunkIsSplit: a chunk that hits statement_timeout twice is split
// in half (and again) until its pieces fit; nothing is lost or counted
// twice.
func TestSlowChunkIsSplit(t *testing.T) {
	f := setup(t, 600)
	// every row costs 4 ms to insert: a 200-row chunk needs 0.8 s, over
	// the 0.5 s timeout; 50-row pieces fit
	f.exec(t,
		`CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.004); RETURN NEW; END $$`,
		`CREATE TRIGGER slow BEFORE INSERT ON dst FOR EACH ROW EXECUTE FUNCTION slow()`,
	)
	j := f.job("slow")
	j.ChunkSize, j.Workers, j.StatementTimeout = 200, 2, 500*time.Millisecond
	rep, err := backfill.Run(context.Background(), j)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if rep.Totals.RowsInserted != 600 || rep.Totals.RowsSkipped != 0 || rep.Totals.ChunksDone != 3 {
		t.Fatalf("totals %+v: want 600 inserted in 3 chunks", rep.Totals)
	}
	if pieces := f.count(t, "SELECT count(*) FROM backfill.chunks"); pieces <= 3 {
		t.Fatalf("%d checkpoint rows: the slow chunks were not split", pieces)
	}
	if n := f.count(t, "SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) d"); n != 0 {
		t.Fatalf("%d rows missing", n)
	}
}

// TestFollowReadsRowsAddedAfterStart: without --follow the job ends at the
// last key seen at start; with it, at the end the copy reaches.
func TestFollowReadsRowsAddedAfterStart(t *testing.T) {
	f := setup(t, 1_000)
	j := f.job("fixed")
	j.Rate = 2_000 // half a second of work
	added := make(chan struct{})
	go func() {
		// once a chunk is committed, the job's end is fixed
		defer close(added)
		for f.countOr(-1, "SELECT count(*) FROM backfill.chunks WHERE job = 'fixed'") < 1 {
			time.Sleep(5 * time.Millisecond)
		}
		_, _ = f.conn.Exec(context.Background(), "INSERT INTO src SELECT g, 'late', NULL, now() FROM generate_series(1001, 1100) g")
	}()
	rep, err := backfill.Run(context.Background(), j)
	<-added
	if err != nil || rep.Totals.RowsRead != 1_000 {
		t.Fatalf("fixed end: %v, read %d, want 1000 (rows added later are beyond the job's end)", err, rep.Totals.RowsRead)
	}
	if _, err := f.conn.Exec(context.Background(), "TRUNCATE dst"); err != nil {
		t.Fatal(err)
	}
	j = f.job("follow")
	j.Follow = true
	if rep, err = backfill.Run(context.Background(), j); err != nil || rep.Totals.RowsRead != 1_100 {
		t.Fatalf("follow: %v, read %d, want 1100", err, rep.Totals.RowsRead)
	}
}

// syncWriter lets concurrent workers log into one builder.
type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestMappingReadsOnlyTheColumnsItUses: an expression mapping selects only
// the source columns it reads, so a role granted SELECT on just those
// columns (the rest might be personal data) can run the job.
func TestMappingReadsOnlyTheColumnsItUses(t *testing.T) {
	f := setup(t, 2_000)
	ctx := context.Background()
	f.exec(t,
		"DROP ROLE IF EXISTS bf_columns",
		"CREATE ROLE bf_columns LOGIN",
		"GRANT SELECT (id, name) ON src TO bf_columns",
	)
	t.Cleanup(func() {
		_, _ = f.conn.Exec(ctx, "DROP OWNED BY bf_columns")
		_, _ = f.conn.Exec(ctx, "DROP ROLE bf_columns")
	})
	u, err := url.Parse(f.url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("bf_columns")

	j := f.job("columns")
	j.SourceURL, j.DestURL = u.String(), f.url
	j.Columns = []transform.Mapping{{Column: "id", Expr: "id"}, {Column: "name", Expr: "upper(name)"}}
	j.SkipIf = "id % 2 == 0"
	rep, err := backfill.Run(ctx, j)
	if err != nil {
		t.Fatalf("run with SELECT on (id, name) only: %v", err)
	}
	if rep.Totals.RowsInserted != 1_000 || rep.Totals.RowsFiltered != 1_000 {
		t.Fatalf("totals %+v; want 1000 inserted, 1000 filtered", rep.Totals)
	}
	if n := f.count(t, "SELECT count(*) FROM dst JOIN src USING (id) WHERE dst.name = upper(src.name) AND dst.doc IS NULL AND src.id % 2 = 1"); n != 1_000 {
		t.Fatalf("%d of 1000 rows mapped as asked", n)
	}

	// A mapping that reads a column the role may not see fails clearly.
	j.Name = "columns-doc"
	j.Columns = append(j.Columns, transform.Mapping{Column: "doc", Expr: "doc"})
	if _, err := backfill.Run(ctx, j); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("reading doc without SELECT on it: %v; want permission denied", err)
	}
}

// TestEstimateOfAnUnanalyzedTableIsCalledAGuess: without statistics the
// planner guesses a table's rows from its size; dry-run says so and how to
// fix it, and says nothing once the table is analyzed.
func TestEstimateOfAnUnanalyzedTableIsCalledAGuess(t *testing.T) {
	f := setup(t, 0)
	ctx := context.Background()
	f.exec(t,
		// autovacuum must not analyze it behind the test's back
		"CREATE TABLE fresh (id bigint PRIMARY KEY, name text, doc jsonb, at timestamptz) WITH (autovacuum_enabled = false)",
		"INSERT INTO fresh SELECT g, 'n' || g, NULL, now() FROM generate_series(1, 5000) g",
	)
	j := f.job("guess")
	j.From = "fresh"
	hasNote := func() bool {
		t.Helper()
		rep, err := backfill.DryRun(ctx, j, backfill.DryRunOptions{SampleChunks: 1})
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, "never been analyzed") })
	}
	if !hasNote() {
		t.Fatal("dry-run of a table never analyzed does not say its estimate is a guess")
	}
	f.exec(t, "ANALYZE fresh")
	if hasNote() {
		t.Fatal("dry-run of an analyzed table still calls its estimate a guess")
	}
}
