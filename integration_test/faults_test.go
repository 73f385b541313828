package integration_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backfill/backfill/internal/pgtest"
)

// TestPoisonRows: a CHECK constraint violated by 1% of rows and a foreign
// key violated by a few. Every other row is copied, each bad row is in
// failed_rows with its SQLSTATE, the job ends done with exit code 3; after
// the constraints are dropped, resume --retry-failed copies them and
// rows_failed returns to 0.
func TestPoisonRows(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE parents (id int PRIMARY KEY)",
		"INSERT INTO parents SELECT g FROM generate_series(0, 99) g",
		"CREATE TABLE src (id bigint PRIMARY KEY, qty int, parent int, note text)",
		"INSERT INTO src SELECT g, CASE WHEN g % 100 = 0 THEN -1 ELSE g % 50 END, CASE WHEN g IN (7, 4242, 9999) THEN 1000 + g ELSE g % 100 END, 'n' || g FROM generate_series(1, 20000) g",
		"CREATE TABLE dst (id bigint PRIMARY KEY, qty int CONSTRAINT qty_positive CHECK (qty >= 0), parent int CONSTRAINT dst_parent_fk REFERENCES parents (id), note text)",
	)
	r := cli(t, "start", "--source", db, "--job", "poison", "--from", "src", "--to", "dst", "--rate", "0", "--log-format", "json")
	if r.code != 3 {
		t.Fatalf("want exit 3 for a job done with failed rows, got %s", r)
	}
	if !strings.Contains(r.stderr, "--retry-failed") || !strings.Contains(r.stderr, "failed_rows") {
		t.Fatalf("no hint on how to inspect and retry failed rows:\n%s", r.stderr)
	}
	s := status(t, db, "poison")
	if s.State != "done" || s.RowsFailed != 203 || s.RowsInserted != 20000-203 || s.RowsSkipped != 0 {
		t.Fatalf("want done with 203 failed and 19797 inserted, got %+v", s)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM backfill.failed_rows WHERE job = 'poison' AND sqlstate = '23514' AND message LIKE '%qty_positive%'"); n != 200 {
		t.Fatalf("%d CHECK failures recorded, want 200", n)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM backfill.failed_rows WHERE job = 'poison' AND sqlstate = '23503' AND source_row->>'parent' IS NOT NULL"); n != 3 {
		t.Fatalf("%d FK failures recorded with their source row, want 3", n)
	}
	// the values passed through raw are shown as their text, not as bytes
	if got := queryString(t, db, "SELECT source_row::text FROM backfill.failed_rows WHERE job = 'poison' AND key = '[\"7\"]'"); got != `{"id": "7", "qty": "7", "note": "n7", "parent": "1007"}` {
		t.Fatalf("failed row 7's source_row is %s", got)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM src s WHERE NOT EXISTS (SELECT 1 FROM dst d WHERE d.id = s.id) AND NOT EXISTS (SELECT 1 FROM backfill.failed_rows f WHERE f.key = jsonb_build_array(s.id::text))"); n != 0 {
		t.Fatalf("%d source rows neither copied nor recorded as failed", n)
	}

	sql(t, db, "ALTER TABLE dst DROP CONSTRAINT qty_positive", "ALTER TABLE dst DROP CONSTRAINT dst_parent_fk")
	mustSucceed(t, "resume", "--source", db, "--job", "poison", "--retry-failed")
	s = status(t, db, "poison")
	if s.RowsFailed != 0 || s.RowsInserted != 20000 || s.State != "done" {
		t.Fatalf("after retry-failed: %+v", s)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM backfill.failed_rows"); n != 0 {
		t.Fatalf("%d failed rows left", n)
	}
	assertSameRows(t, db, "src", db, "dst")
}

// TestTooManyFailedRows: past --max-failed-rows the job stops as failed,
// resumably, with the reason in status.
func TestTooManyFailedRows(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE src (id bigint PRIMARY KEY, qty int)",
		"INSERT INTO src SELECT g, CASE WHEN g % 10 = 0 THEN -1 ELSE 1 END FROM generate_series(1, 50000) g",
		"CREATE TABLE dst (id bigint PRIMARY KEY, qty int CHECK (qty >= 0))",
	)
	r := cli(t, "start", "--source", db, "--job", "toomany", "--from", "src", "--to", "dst", "--rate", "0", "--max-failed-rows", "50", "--workers", "2")
	if r.code != 1 {
		t.Fatalf("want exit 1, got %s", r)
	}
	s := status(t, db, "toomany")
	if s.State != "failed" || s.LastError == nil || !strings.Contains(*s.LastError, "max-failed-rows") {
		t.Fatalf("want failed with the limit in last_error, got %+v", s)
	}
	if s.RowsRead >= 50000 {
		t.Fatalf("the job went on to the end (%d rows) despite the limit", s.RowsRead)
	}
}

// TestSurvivesRestartsAndTerminatedBackends: the server is restarted twice
// mid-run and every backend of the tool terminated once; the same process
// finishes the job and the destination is exact.
func TestSurvivesRestartsAndTerminatedBackends(t *testing.T) {
	if pgtest.Path() != "local" {
		t.Skipf("restarting the server needs the harness's local cluster; this run uses %s", pgtest.Path())
	}
	const n = 120_000
	db := pgtest.NewDatabase(t)
	createItems(t, db, "src")
	fillItems(t, db, "src", n)
	createItems(t, db, "dst")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := startBackground(ctx, t, "start", "--source", db, "--job", "faults", "--from", "src", "--to", "dst", "--rate", "12000", "--workers", "4", "--log-format", "json")
	done, out := b.done, b.stderr

	waitForRows := func(min int64) {
		t.Helper()
		waitUntil(t, done, out, fmt.Sprintf("%d rows copied", min), func() bool {
			// a new connection each time: the server restarts under us
			return pollInt(ctx, db, "SELECT coalesce(sum(rows_read), 0) FROM backfill.chunks WHERE job = 'faults'") >= min
		})
	}
	waitForRows(15_000)
	pgtest.Restart(t)
	waitForRows(40_000)
	sql(t, db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'backfill:faults'")
	waitForRows(70_000)
	pgtest.Restart(t)

	if err := <-done; err != nil {
		t.Fatalf("backfill did not finish by itself: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "retrying") {
		t.Fatalf("the run never retried; the faults did not hit it:\n%s", out.String())
	}
	assertSameRows(t, db, "src", db, "dst")
	if s := status(t, db, "faults"); s.RowsInserted != n || s.RowsSkipped != 0 || s.ChunksDone != n/1000 {
		t.Fatalf("counters after faults: %+v", s)
	}
}

// TestWaitsOutATableLock: another session holds LOCK TABLE dest IN
// EXCLUSIVE MODE for 20 s; the job waits (lock_timeout, retry) and finishes
// with nothing lost.
func TestWaitsOutATableLock(t *testing.T) {
	db := itemsDatabase(t, 20_000)

	locker := connect(t, db)
	ctx := context.Background()
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE dst IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(20 * time.Second)
		_ = tx.Rollback(ctx)
	})
	began := time.Now()
	r := mustSucceed(t, "start", "--source", db, "--job", "locked", "--from", "src", "--to", "dst", "--rate", "0", "--lock-timeout", "2s", "--log-format", "json")
	wg.Wait()
	if took := time.Since(began); took < 19*time.Second {
		t.Fatalf("finished in %v while the table was locked for 20 s", took)
	}
	if !strings.Contains(r.stderr, "55P03") {
		t.Fatalf("no lock timeout was retried:\n%s", r.stderr)
	}
	assertSameRows(t, db, "src", db, "dst")
}

// TestConcurrentStarts: two starts of the same job at once; exactly one
// runs, the other exits non-zero within 2 s naming the holder.
func TestConcurrentStarts(t *testing.T) {
	db := itemsDatabase(t, 20_000)
	args := []string{"start", "--source", db, "--job", "twice", "--from", "src", "--to", "dst", "--rate", "10000"}
	var wg sync.WaitGroup
	results := make([]result, 2)
	took := make([]time.Duration, 2)
	for i := range 2 {
		wg.Go(func() {
			began := time.Now()
			results[i] = cli(t, args...)
			took[i] = time.Since(began)
		})
	}
	wg.Wait()
	ok, refused := -1, -1
	for i, r := range results {
		switch r.code {
		case 0:
			ok = i
		case 1:
			refused = i
		}
	}
	if ok < 0 || refused < 0 {
		t.Fatalf("want one success and one refusal:\n%s\n---\n%s", results[0], results[1])
	}
	msg := results[refused].stderr
	if took[refused] > 2*time.Second || !(strings.Contains(msg, "held by") || strings.Contains(msg, "already exists")) {
		t.Fatalf("the second start took %v and said:\n%s", took[refused], msg)
	}
	if strings.Contains(msg, "held by") && !strings.Contains(msg, "pid") {
		t.Fatalf("the refusal does not name the holder's pid:\n%s", msg)
	}
	assertSameRows(t, db, "src", db, "dst")
	if s := status(t, db, "twice"); s.RowsInserted != 20000 || s.RowsSkipped != 0 {
		t.Fatalf("counters: %+v", s)
	}
}

// TestLeastPrivilege: a role with only the documented grants (SELECT on
// the source, INSERT on the destination, CREATE on the database for the
// state schema) runs a job.
func TestLeastPrivilege(t *testing.T) {
	db := itemsDatabase(t, 5000)
	dbname := queryString(t, db, "SELECT current_database()")
	sql(t, db,
		"DROP ROLE IF EXISTS bf_runner",
		"CREATE ROLE bf_runner LOGIN",
		"GRANT SELECT ON src TO bf_runner",
		"GRANT INSERT ON dst TO bf_runner",
		`GRANT CREATE ON DATABASE "`+dbname+`" TO bf_runner`,
	)
	t.Cleanup(func() {
		sql(t, db, "DROP OWNED BY bf_runner", "DROP ROLE bf_runner")
	})
	asRunner := strings.Replace(db, "postgres://postgres@", "postgres://bf_runner@", 1)
	mustSucceed(t, "start", "--source", asRunner, "--job", "leastpriv", "--from", "src", "--to", "dst", "--rate", "0")
	assertSameRows(t, db, "src", db, "dst")
	mustSucceed(t, "status", "--dest", asRunner, "--job", "leastpriv")
	if r := cli(t, "start", "--source", asRunner, "--job", "nopriv", "--from", "dst", "--to", "src"); r.code != 1 || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("reading a table without SELECT must fail clearly, got %s", r)
	}
	// the workers' stages are temporary tables: without the privilege the
	// job is refused, naming it, before anything is written
	sql(t, db, `REVOKE TEMPORARY ON DATABASE "`+dbname+`" FROM PUBLIC`, "TRUNCATE dst")
	r := cli(t, "start", "--source", asRunner, "--job", "notemp", "--from", "src", "--to", "dst", "--rate", "0")
	if r.code == 0 || !strings.Contains(r.stderr, "GRANT TEMPORARY ON DATABASE") {
		t.Fatalf("a role that may not create temporary tables must be refused clearly, got %s", r)
	}
	if n := queryString(t, db, "SELECT count(*) FROM dst"); n != "0" {
		t.Fatalf("the refused job wrote %s rows", n)
	}
}

// TestKillTenTimes is the SIGKILL invariant at scale: ten kills at random
// moments of one job, resumed each time.
func TestKillTenTimes(t *testing.T) {
	killResume(t, 300_000, 10, 20_000, 800*time.Millisecond)
}
