package integration_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/internal/pgtest"
)

// lockHolderSQL finds the backend holding a job's runner lock in the
// default state schema: the runner's control session. $1 is the job.
const lockHolderSQL = `SELECT coalesce((SELECT l.pid FROM pg_locks l
	WHERE l.locktype = 'advisory' AND l.granted
	  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended('backfill:backfill:' || $1, 0)), 0)`

// lockHolder returns the pid of the backend holding the job's runner lock,
// 0 when none does.
func lockHolder(ctx context.Context, conn *pgx.Conn, job string) (int32, error) {
	var pid int32
	err := conn.QueryRow(ctx, lockHolderSQL, job).Scan(&pid)
	return pid, err
}

// insertBetween inserts rows with odd ids into src (id bigint, v text),
// whose rows have even ids up to 2·n, until stop is closed, at most max
// rows or a minute; it returns how many it inserted.
func insertBetween(t *testing.T, db string, n, max int, stop <-chan struct{}) <-chan int {
	t.Helper()
	conn := connect(t, db)
	done := make(chan int, 1)
	go func() {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
		deadline := time.Now().Add(time.Minute)
		inserted := 0
		for inserted < max && time.Now().Before(deadline) {
			select {
			case <-stop:
				done <- inserted
				return
			case <-time.After(2 * time.Millisecond):
			}
			ids := make([]int64, 20)
			for i := range ids {
				ids[i] = 2*rng.Int64N(int64(n)) + 1
			}
			tag, err := conn.Exec(context.Background(), "INSERT INTO src SELECT id, 'app ' || id FROM unnest($1::bigint[]) id ON CONFLICT DO NOTHING", ids)
			if err != nil {
				break
			}
			inserted += int(tag.RowsAffected())
		}
		done <- inserted
	}()
	return done
}

// assertNoOverlapAndUniqueSeqs checks a job's committed chunks, keyed by one
// bigint: no two cover a common key, and no two share a seq.
func assertNoOverlapAndUniqueSeqs(t *testing.T, db, job string) {
	t.Helper()
	overlapping := queryInt(t, db, `SELECT count(*) FROM backfill.chunks a JOIN backfill.chunks b
		ON a.job = b.job AND a.ctid < b.ctid
		AND (a.after_key IS NULL OR a.after_key[1]::bigint < b.last_key[1]::bigint)
		AND (b.after_key IS NULL OR b.after_key[1]::bigint < a.last_key[1]::bigint)
		WHERE a.job = $1`, job)
	if overlapping != 0 {
		t.Errorf("%d pairs of committed chunks overlap", overlapping)
	}
	if dup := queryInt(t, db, `SELECT count(*) FROM (SELECT seq FROM backfill.chunks WHERE job = $1 GROUP BY seq HAVING count(*) > 1) d`, job); dup != 0 {
		t.Errorf("%d seqs are shared by several chunks", dup)
	}
}

// TestControlSessionTerminatedWithASecondRunner: the runner's control
// session (the one holding the runner lock) is terminated three times, and
// each time a second runner resumes the job at once, while the application
// inserts rows between the source's keys. Whichever runner keeps the job,
// the other stops: the lock's loss stops the old runner's workers, and the
// new runner's generation fences whatever of the old one's was in flight.
// After the resumes the job is done, no two committed chunks overlap, seqs
// are unique, rows_inserted equals the destination's rows and every row
// that was there before the job is copied.
func TestControlSessionTerminatedWithASecondRunner(t *testing.T) {
	const n = 60_000
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE src (id bigint PRIMARY KEY, v text)",
		fmt.Sprintf("INSERT INTO src SELECT 2 * g, 'v' || g FROM generate_series(1, %d) g", n),
		"CREATE TABLE dst (id bigint PRIMARY KEY, v text)",
	)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	args := []string{"--source", db, "--job", "fenced", "--log-format", "json"}
	runners := []*background{startBackground(ctx, t, append([]string{"start", "--from", "src", "--to", "dst",
		"--rate", "12000", "--workers", "4", "--chunk-size", "500"}, args...)...)}
	stop := make(chan struct{})
	inserted := insertBetween(t, db, n, 40_000, stop)

	conn := connect(t, db)
	var terminated []int32
	for i := range 3 {
		// progress under the current runner, then its control session
		progress := int64(15 * (i + 1))
		var pid int32
		waitUntil(t, nil, runners[len(runners)-1].stderr, fmt.Sprintf("%d chunks and a lock holder", progress), func() bool {
			var chunks int64
			_ = conn.QueryRow(ctx, "SELECT count(*) FROM backfill.chunks WHERE job = 'fenced'").Scan(&chunks)
			var err error
			pid, err = lockHolder(ctx, conn, "fenced")
			return err == nil && pid != 0 && chunks >= progress && !slices.Contains(terminated, pid)
		})
		if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
		terminated = append(terminated, pid)
		runners = append(runners, startBackground(ctx, t, append([]string{"resume"}, args...)...))
	}
	kept := 0
	for i, b := range runners {
		switch code := b.exitCode(); code {
		case 0:
			kept++
		case 1:
			out := b.stderr.String()
			if !strings.Contains(out, "another runner") && !strings.Contains(out, "held by") {
				t.Fatalf("runner %d exited 1 for another reason than losing the job to another runner:\n%s", i, out)
			}
			t.Logf("runner %d stopped: %s", i, lastLine(out))
		default:
			t.Fatalf("runner %d exited %d:\n%s", i, code, b.stderr.String())
		}
	}
	close(stop)
	t.Logf("the application inserted %d rows meanwhile; %d of %d runners finished the job", <-inserted, kept, len(runners))

	if s := status(t, db, "fenced"); s.State != "done" {
		mustSucceed(t, append([]string{"resume", "--rate", "0"}, args...)...)
	}
	s := status(t, db, "fenced")
	if s.State != "done" {
		t.Fatalf("after the resumes the job is %s", s.State)
	}
	assertNoOverlapAndUniqueSeqs(t, db, "fenced")
	if rows := queryInt(t, db, "SELECT count(*) FROM dst"); s.RowsInserted != rows || s.RowsSkipped != 0 || s.RowsRead != rows {
		t.Errorf("rows_inserted %d, rows_skipped %d, rows_read %d; the destination holds %d rows", s.RowsInserted, s.RowsSkipped, s.RowsRead, rows)
	}
	if missing := queryInt(t, db, fmt.Sprintf("SELECT count(*) FROM generate_series(1, %d) g WHERE NOT EXISTS (SELECT 1 FROM dst WHERE id = 2 * g)", n)); missing != 0 {
		t.Errorf("%d rows that were in the source before the job are not in the destination", missing)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM (SELECT * FROM dst EXCEPT SELECT * FROM src) d"); n != 0 {
		t.Errorf("%d destination rows differ from the source", n)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestStateRowLockedKeepsTheRunnerLock: a DBA's transaction holds the job's
// row FOR UPDATE for 12 s, so the heartbeat's UPDATE (and each commit's
// check of the runner's generation) waits out its lock_timeout. The runner
// keeps its control session and its lock throughout (sampled in pg_locks),
// every resume tried meanwhile is refused, and the job finishes exact.
func TestStateRowLockedKeepsTheRunnerLock(t *testing.T) {
	const n = 30_000
	db := itemsDatabase(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"--source", db, "--job", "rowlock", "--log-format", "json"}
	b := startBackground(ctx, t, append([]string{"start", "--from", "src", "--to", "dst", "--rate", "5000"}, args...)...)
	conn := connect(t, db)
	var holder int32
	waitUntil(t, b.done, b.stderr, "the first chunk and a lock holder", func() bool {
		var chunks int64
		_ = conn.QueryRow(ctx, "SELECT count(*) FROM backfill.chunks WHERE job = 'rowlock'").Scan(&chunks)
		var err error
		holder, err = lockHolder(ctx, conn, "rowlock")
		return err == nil && holder != 0 && chunks > 0
	})

	locked := make(chan struct{})
	unlocked := make(chan error, 1)
	go func() {
		dba, err := pgx.Connect(ctx, db)
		if err != nil {
			unlocked <- err
			return
		}
		defer dba.Close(context.Background())
		tx, err := dba.Begin(ctx)
		if err == nil {
			_, err = tx.Exec(ctx, "SELECT * FROM backfill.jobs WHERE name = 'rowlock' FOR UPDATE")
		}
		if err != nil {
			unlocked <- err
			return
		}
		close(locked)
		_, err = tx.Exec(ctx, "SELECT pg_sleep(12)")
		if err == nil {
			err = tx.Commit(ctx)
		}
		unlocked <- err
	}()
	<-locked

	// sample the lock's holder every 50 ms and try a resume every 2 s until
	// the DBA's transaction ends
	var refusals []result
	samples := 0
	nextResume := time.Now()
sampling:
	for {
		select {
		case err := <-unlocked:
			if err != nil {
				t.Fatalf("the DBA's transaction: %v", err)
			}
			break sampling
		case <-time.After(50 * time.Millisecond):
		}
		pid, err := lockHolder(ctx, conn, "rowlock")
		if err != nil {
			t.Fatal(err)
		}
		if pid != holder {
			t.Fatalf("while the job's row was locked, the runner lock passed from backend %d to %d:\n%s", holder, pid, b.stderr.String())
		}
		samples++
		if time.Now().After(nextResume) {
			refusals = append(refusals, cli(t, append([]string{"resume"}, args...)...))
			nextResume = time.Now().Add(2 * time.Second)
		}
	}
	for _, r := range refusals {
		if r.code != 1 || !strings.Contains(r.stderr, "held by") {
			t.Fatalf("a resume tried while the runner ran was not refused: %s", r)
		}
	}
	if code := b.exitCode(); code != 0 {
		t.Fatalf("the runner exited %d:\n%s", code, b.stderr.String())
	}
	out := b.stderr.String()
	if !strings.Contains(out, "55P03") {
		t.Fatalf("nothing waited out a lock timeout; the row lock did not reach the runner:\n%s", out)
	}
	t.Logf("%d samples of pg_locks, all backend %d; %d resumes refused", samples, holder, len(refusals))
	assertSameRows(t, db, "src", db, "dst")
	if s := status(t, db, "rowlock"); s.State != "done" || s.RowsInserted != n || s.RowsSkipped != 0 || s.ChunksDone != n/1000 {
		t.Fatalf("after the lock: %+v", s)
	}
}

// TestSplitChunkKilledBetweenItsPiecesCountsOnce: a row whose insert
// sleeps past statement_timeout makes its chunk time out twice and split,
// and its pieces split again; the runner is killed once the first pieces
// committed and before the last. After the resume the counters, chunks
// included, equal one clean run's.
func TestSplitChunkKilledBetweenItsPiecesCountsOnce(t *testing.T) {
	db := itemsDatabase(t, 5000)
	createItems(t, db, "clean")
	// fixed chunks: the counters, chunks included, must equal the clean run's
	mustSucceed(t, "start", "--source", db, "--job", "clean", "--from", "src", "--to", "clean", "--rate", "0", "--chunk-size", "1000")
	clean := countersOf(status(t, db, "clean"))
	sql(t, db,
		`CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN IF NEW.id = 1000 THEN PERFORM pg_sleep(3); END IF; RETURN NEW; END $$`,
		"CREATE TRIGGER slow BEFORE INSERT ON dst FOR EACH ROW EXECUTE FUNCTION slow_row()",
	)
	args := []string{"--source", db, "--job", "split", "--statement-timeout", "1s", "--max-retries", "100", "--log-format", "json"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := startBackground(ctx, t, append([]string{"start", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "1000", "--workers", "2"}, args...)...)
	conn := connect(t, db)
	waitUntil(t, b.done, b.stderr, "two pieces of the first chunk committed", func() bool {
		var pieces int64
		_ = conn.QueryRow(ctx, "SELECT count(*) FROM backfill.chunks WHERE job = 'split' AND seq = 1").Scan(&pieces)
		return pieces >= 2
	})
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.exitCode()
	if !strings.Contains(b.stderr.String(), "splitting it in half") {
		t.Fatalf("the chunk was not split:\n%s", b.stderr.String())
	}
	if covered := queryInt(t, db, "SELECT coalesce(sum(rows_read), 0) FROM backfill.chunks WHERE job = 'split' AND seq = 1"); covered >= 1000 {
		t.Fatalf("the first chunk's pieces cover %d rows: the kill came after its last piece", covered)
	}
	sql(t, db, "DROP TRIGGER slow ON dst")
	mustSucceed(t, append([]string{"resume"}, args...)...)
	assertSameRows(t, db, "src", db, "dst")
	if got := countersOf(status(t, db, "split")); got != clean {
		t.Fatalf("after a split chunk was killed between its pieces and resumed: counters %+v; one clean run: %+v", got, clean)
	}
}

// TestRetriedFailedRowsNowExcludedCountAsFiltered: rows fail on a CHECK;
// before resume --retry-failed, some of them change in the source so that
// the job now excludes them, by its skip_if or by its where. Never skipped
// (skipped is for keys the destination already has): a row skip_if now
// skips counts as filtered, and a row the where now excludes as never
// read, for a clean run over the source as it now is would not read it.
// Either way the counters equal that clean run's.
func TestRetriedFailedRowsNowExcludedCountAsFiltered(t *testing.T) {
	for _, c := range []struct {
		name, spec string
		filtered   int64
	}{
		{"skip_if", "skip_if: keep == false\n", 3},
		{"where", "  where: keep\n", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := pgtest.NewDatabase(t)
			sql(t, db,
				"CREATE TABLE src (id bigint PRIMARY KEY, qty int, keep boolean NOT NULL)",
				"INSERT INTO src SELECT g, CASE WHEN g % 100 = 0 THEN -1 ELSE g END, true FROM generate_series(1, 3000) g",
				"CREATE TABLE dst (id bigint PRIMARY KEY, qty int CONSTRAINT qty_positive CHECK (qty >= 0), keep boolean)",
				"CREATE TABLE clean (id bigint PRIMARY KEY, qty int, keep boolean)",
			)
			source := "source:\n  table: src\n"
			skip := ""
			if c.name == "where" {
				source += c.spec
			} else {
				skip = c.spec
			}
			spec := func(job, to string) string {
				return writeSpec(t, "job: "+job+"\n"+source+"dest:\n  table: "+to+"\ncolumns:\n  id: id\n  qty: qty\n  keep: keep\n"+skip+"rate: 0\nchunk_size: 1000\n") // fixed: chunks are compared
			}
			if r := cli(t, "start", "--config", spec("retried", "dst"), "--source", db); r.code != 3 {
				t.Fatalf("want exit 3 for failed rows, got %s", r)
			}
			if s := status(t, db, "retried"); s.RowsFailed != 30 {
				t.Fatalf("want 30 failed rows, got %+v", s)
			}
			sql(t, db,
				"UPDATE src SET keep = false WHERE id IN (100, 200, 300)", // three of the failed rows
				"ALTER TABLE dst DROP CONSTRAINT qty_positive",
			)
			mustSucceed(t, "resume", "--job", "retried", "--source", db, "--retry-failed")
			s := status(t, db, "retried")
			if s.RowsFailed != 0 || s.RowsFiltered != c.filtered || s.RowsSkipped != 0 || s.RowsInserted != 2997 ||
				s.RowsRead != s.RowsInserted+s.RowsSkipped+s.RowsFiltered+s.RowsFailed {
				t.Fatalf("after retrying failed rows the job now excludes: want %d filtered, 0 skipped, 2997 inserted, got %+v", c.filtered, s)
			}
			mustSucceed(t, "start", "--config", spec("clean", "clean"), "--source", db)
			if got, want := countersOf(s), countersOf(status(t, db, "clean")); got != want {
				t.Fatalf("counters %+v; one clean run: %+v", got, want)
			}
		})
	}
}

// TestRarePredicateResumeSkipsTheEmptySteps: a where that matches 2 rows
// of 200,000 (the first and the last), read in steps of 100 rows. The
// steps without a match are recorded, so a runner killed on its way from
// one match to the other has recorded its progress, and the resume walks
// only the steps left. The job ends with one record per step and the
// counters of a clean run.
func TestRarePredicateResumeSkipsTheEmptySteps(t *testing.T) {
	const n, chunk = 200_000, 100
	db := itemsDatabase(t, n)
	createItems(t, db, "clean")
	where := fmt.Sprintf("id %% %d = 1", n-1) // ids 1 and n
	mustSucceed(t, "start", "--source", db, "--job", "clean", "--from", "src", "--to", "clean", "--where", where, "--chunk-size", fmt.Sprint(chunk), "--rate", "0")
	clean := countersOf(status(t, db, "clean"))

	args := []string{"--source", db, "--job", "rare", "--rate", "0", "--workers", "2", "--log-format", "json", "--log-level", "debug"}
	r := runUntilKilled(t, db, "rare", 200, 0, syscall.SIGKILL,
		append([]string{"start", "--from", "src", "--to", "dst", "--where", where, "--chunk-size", fmt.Sprint(chunk)}, args...)...)
	if r.code != -1 {
		t.Fatalf("want death by signal, got %s", r)
	}
	recorded := queryInt(t, db, "SELECT count(*) FROM backfill.chunks WHERE job = 'rare'")
	reached := queryInt(t, db, "SELECT max(last_key[1]::bigint) FROM backfill.chunks WHERE job = 'rare'")
	if recorded < 200 || reached >= n {
		t.Fatalf("killed having recorded %d steps, up to key %d: want at least 200, short of the end", recorded, reached)
	}

	resumed := mustSucceed(t, append([]string{"resume"}, args...)...)
	walked := int64(strings.Count(resumed.stderr, `"chunk committed"`))
	if steps := int64(n / chunk); walked > steps-recorded {
		t.Fatalf("the resume committed %d steps; %d of the %d were recorded before the kill", walked, recorded, steps)
	}
	t.Logf("killed with %d of %d steps recorded (to key %d); the resume committed %d", recorded, n/chunk, reached, walked)
	if total := queryInt(t, db, "SELECT count(*) FROM backfill.chunks WHERE job = 'rare'"); total != n/chunk {
		t.Fatalf("%d records of steps; want one per step, %d", total, n/chunk)
	}
	assertNoOverlapAndUniqueSeqs(t, db, "rare")
	if got := countersOf(status(t, db, "rare")); got != clean {
		t.Fatalf("counters %+v; one clean run: %+v", got, clean)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM (SELECT * FROM src WHERE "+where+" EXCEPT SELECT * FROM dst) d"); n != 0 {
		t.Fatalf("%d matching rows not copied", n)
	}
}

// TestResumeReconcilesOverlappingRanges: an older version, with two
// runners at once, left committed chunks that overlap: (100, 300] over
// (150, 200]. The resume reads only the keys no chunk covers instead of
// failing on every attempt with "the ranges overlap".
func TestResumeReconcilesOverlappingRanges(t *testing.T) {
	db := itemsDatabase(t, 1000)
	args := []string{"--source", db, "--job", "overlap", "--rate", "0"}
	mustSucceed(t, append([]string{"start", "--from", "src", "--to", "dst", "--chunk-size", "100"}, args...)...)
	sql(t, db,
		"DELETE FROM backfill.chunks WHERE job = 'overlap' AND last_key = '{300}'",
		"UPDATE backfill.chunks SET last_key = '{300}', rows_read = 200, rows_inserted = 200 WHERE job = 'overlap' AND last_key = '{200}'",
		// the chunk (900, 1000] becomes (150, 200]: (900, 1000] is a gap
		"UPDATE backfill.chunks SET after_key = '{150}', first_key = '{151}', last_key = '{200}', rows_read = 50, rows_inserted = 50 WHERE job = 'overlap' AND last_key = '{1000}'",
		"DELETE FROM dst WHERE id > 900",
		"UPDATE backfill.jobs SET state = 'interrupted' WHERE name = 'overlap'",
	)
	mustSucceed(t, append([]string{"resume"}, args...)...)
	assertSameRows(t, db, "src", db, "dst")
	if s := status(t, db, "overlap"); s.State != "done" {
		t.Fatalf("after the resume: %+v", s)
	}
}
