package integration_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backfill/backfill/internal/pgtest"
)

// runUntilKilled starts the binary, waits until the job has committed at
// least minChunks chunks, waits delay more, then sends sig and waits for
// the process. It returns the process's result.
func runUntilKilled(t *testing.T, dest, job string, minChunks int64, delay time.Duration, sig syscall.Signal, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := startBackground(ctx, t, args...)
	conn := connect(t, dest)
	waitUntil(t, b.done, b.stderr, fmt.Sprintf("%d chunks committed", minChunks), func() bool {
		var n int64
		// the state table may not exist yet
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM backfill.chunks WHERE job = $1`, job).Scan(&n)
		return n >= minChunks
	})
	select {
	case err := <-b.done:
		t.Fatalf("backfill finished (%v) before it could be killed; make the job longer", err)
	case <-time.After(delay):
	}
	if err := b.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal backfill: %v", err)
	}
	return result{code: b.exitCode(), stderr: b.stderr.String()}
}

// TestKillAndResume kills the runner with SIGKILL at random moments and
// resumes it each time; the destination must equal the source exactly and
// the counters must equal those of one clean run.
func TestKillAndResume(t *testing.T) {
	killResume(t, 200_000, 3, 40_000, 1500*time.Millisecond)
}

// killResume copies n rows at rate rows/s, killing the runner kills times,
// each at a random moment up to maxDelay after it has committed a chunk.
func killResume(t *testing.T, n, kills, rate int, maxDelay time.Duration) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("random seed %d", seed)

	db := pgtest.NewDatabase(t)
	createItems(t, db, "src")
	fillItems(t, db, "src", n)
	createItems(t, db, "dst")
	createItems(t, db, "clean")

	// fixed chunks on both: the counters, chunks included, must be equal
	mustSucceed(t, "start", "--source", db, "--job", "clean", "--from", "src", "--to", "clean", "--rate", "0", "--chunk-size", "1000")
	clean := countersOf(status(t, db, "clean"))

	args := []string{"--source", db, "--job", "killed", "--rate", fmt.Sprint(rate), "--workers", "4"}
	startArgs := append([]string{"start", "--from", "src", "--to", "dst", "--chunk-size", "1000"}, args...)
	resumeArgs := append([]string{"resume"}, args...)
	var prev int64
	for i := range kills {
		delay := time.Duration(rng.Int64N(int64(maxDelay)))
		a := resumeArgs
		if i == 0 {
			a = startArgs
		}
		r := runUntilKilled(t, db, "killed", prev+1, delay, syscall.SIGKILL, a...)
		if r.code != -1 {
			t.Fatalf("kill %d: want death by signal, got %s", i+1, r)
		}
		s := status(t, db, "killed")
		t.Logf("kill %d after %v: %d chunks, %d rows done, state %s", i+1, delay, s.ChunksDone, s.RowsRead, s.State)
		if s.State != "interrupted" {
			t.Fatalf("kill %d: status says %q for a job whose runner is dead, want interrupted", i+1, s.State)
		}
		if s.RowsRead >= int64(n) {
			t.Fatalf("kill %d came after the job finished; make the job longer", i+1)
		}
		prev = s.ChunksDone
	}
	mustSucceed(t, append(resumeArgs, "--rate", "0")...)
	assertSameRows(t, db, "src", db, "dst")
	got := status(t, db, "killed")
	if got.State != "done" || countersOf(got) != clean {
		t.Fatalf("after kills and resumes: state %s, counters %+v; one clean run: %+v", got.State, countersOf(got), clean)
	}
	if got.RowsInserted != int64(n) || got.RowsSkipped != 0 {
		t.Fatalf("rows_inserted %d (want %d), rows_skipped %d (want 0)", got.RowsInserted, n, got.RowsSkipped)
	}
}

// TestResumeAfterRowsDeletedAtAGapsEdge: between a kill and the resume,
// rows are deleted from the source across the edge of a gap (a chunk that
// was in flight) and the committed chunk after it, including the row where
// that chunk begins. The resume must read the gap's surviving rows up to
// where the committed chunk begins and no further: a read that ran on to
// the committed chunk's last key would be taken for that chunk, and the
// gap's rows would be lost.
func TestResumeAfterRowsDeletedAtAGapsEdge(t *testing.T) {
	db := itemsDatabase(t, 40_000)
	args := []string{"--source", db, "--job", "edges", "--workers", "4"}
	r := runUntilKilled(t, db, "edges", 20, 0, syscall.SIGKILL, append([]string{"start", "--from", "src", "--to", "dst", "--chunk-size", "100", "--rate", "5000"}, args...)...)
	if r.code != -1 {
		t.Fatalf("want death by signal, got %s", r)
	}
	// A committed chunk (gapAfter, gapLast] followed by two committed
	// chunks; the first of them ends at nextLast. Undo the chunk, as if it
	// had been in flight at the kill: that is the gap.
	q := `SELECT c.after_key[1]::bigint, c.last_key[1]::bigint, n.last_key[1]::bigint
		FROM backfill.chunks c
		JOIN backfill.chunks n ON n.job = c.job AND n.after_key = c.last_key
		JOIN backfill.chunks n2 ON n2.job = c.job AND n2.after_key = n.last_key
		WHERE c.job = 'edges' AND c.after_key IS NOT NULL
		ORDER BY c.seq LIMIT 1`
	var gapAfter, gapLast, nextLast int64
	if err := connect(t, db).QueryRow(context.Background(), q).Scan(&gapAfter, &gapLast, &nextLast); err != nil {
		t.Fatalf("find three committed chunks in a row: %v", err)
	}
	sql(t, db,
		fmt.Sprintf("DELETE FROM backfill.chunks WHERE job = 'edges' AND last_key = '{%d}'", gapLast),
		fmt.Sprintf("DELETE FROM dst WHERE id > %d AND id <= %d", gapAfter, gapLast),
		// 20 rows of the gap and 10 of the next chunk survive: together
		// they fit in one chunk, which would end at nextLast
		fmt.Sprintf("DELETE FROM src WHERE id > %d AND id <= %d", gapAfter+20, nextLast-10),
	)
	t.Logf("gap (%d, %d], rows %d…%d deleted", gapAfter, gapLast, gapAfter+21, nextLast-10)

	mustSucceed(t, append([]string{"resume", "--rate", "0"}, args...)...)
	if n := queryInt(t, db, "SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) missing"); n != 0 {
		t.Fatalf("%d source rows missing or different in the destination after the resume", n)
	}
	if n := queryInt(t, db, fmt.Sprintf("SELECT count(*) FROM dst WHERE id > %d AND id <= %d", gapAfter, gapAfter+20)); n != 20 {
		t.Fatalf("%d of the gap's 20 surviving rows copied", n)
	}
}

// TestInterruptWithSIGINT: the runner finishes in-flight chunks, records
// interrupted, says how to resume and exits 130; resume then completes.
func TestInterruptWithSIGINT(t *testing.T) {
	db := itemsDatabase(t, 50_000)
	r := runUntilKilled(t, db, "sigint", 2, 200*time.Millisecond, syscall.SIGINT,
		"start", "--source", db, "--job", "sigint", "--from", "src", "--to", "dst", "--rate", "10000", "--log-format", "json")
	if r.code != 130 {
		t.Fatalf("want exit 130 after SIGINT, got %s", r)
	}
	if !strings.Contains(r.stderr, "backfill resume --job sigint") {
		t.Fatalf("no resume hint in the output:\n%s", r.stderr)
	}
	s := status(t, db, "sigint")
	if s.State != "interrupted" || s.RowsRead == 0 || s.RowsRead >= 50_000 {
		t.Fatalf("after SIGINT: %+v", s)
	}
	// what was committed is exactly what is in the destination
	if n := queryInt(t, db, "SELECT count(*) FROM dst"); n != s.RowsInserted {
		t.Fatalf("destination has %d rows, checkpoint says %d inserted", n, s.RowsInserted)
	}
	r = cli(t, "start", "--source", db, "--job", "sigint", "--from", "src", "--to", "dst")
	if r.code != 1 || !strings.Contains(r.stderr, "backfill resume --job sigint") {
		t.Fatalf("start of an interrupted job must be refused with a hint to resume, got %s", r)
	}
	mustSucceed(t, "resume", "--source", db, "--job", "sigint", "--rate", "0")
	assertSameRows(t, db, "src", db, "dst")
	// resumed with --rate 0 and no chunk size: sized by time, so the rows,
	// not the chunks, are counted exactly
	if s := status(t, db, "sigint"); s.RowsInserted != 50_000 || s.RowsRead != 50_000 || s.RowsSkipped != 0 || s.State != "done" {
		t.Fatalf("after resume: %+v", s)
	}
}

// TestKeyTypes pages by every kind of key users have, single and
// composite, with a chunk size that leaves a partial last chunk.
func TestKeyTypes(t *testing.T) {
	cases := []struct {
		name, ddl, fill string
		// keys and cast let SQL compare a row with a stored key: cast
		// turns a text[] (%[1]s) back into the key's row
		keys, cast string
	}{
		{"bigint", "k bigint PRIMARY KEY", "g * 3 - 1000", "k", "%[1]s[1]::bigint"},
		{"integer", "k integer PRIMARY KEY", "g - 500", "k", "%[1]s[1]::integer"},
		{"uuid", "k uuid PRIMARY KEY", "md5(g::text)::uuid", "k", "%[1]s[1]::uuid"},
		{"text", "k text PRIMARY KEY", "'ключ-' || g || CASE WHEN g % 3 = 0 THEN ' Z' ELSE 'a' END", "k", "%[1]s[1]::text"},
		{"timestamptz", "k timestamptz PRIMARY KEY", "timestamptz '2020-02-29 23:59:59.999999+00' + g * interval '1.5 seconds'", "k", "%[1]s[1]::timestamptz"},
		{"numeric", "k numeric PRIMARY KEY", "g / 7.0", "k", "%[1]s[1]::numeric"},
		{"composite text,int", "tenant text NOT NULL, k int NOT NULL, PRIMARY KEY (tenant, k)", "g % 5", "(tenant, k)", "(%[1]s[1]::text, %[1]s[2]::int)"},
	}
	db := pgtest.NewDatabase(t)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, dst := fmt.Sprintf("src_%d", i), fmt.Sprintf("dst_%d", i)
			fill := fmt.Sprintf("INSERT INTO %s SELECT %s, 'v' || g FROM generate_series(1, 2345) g", src, c.fill)
			if strings.HasPrefix(c.name, "composite") {
				fill = fmt.Sprintf("INSERT INTO %s SELECT 'tenant ' || (g %% 7), g, 'v' || g FROM generate_series(1, 2345) g", src)
			}
			sql(t, db,
				fmt.Sprintf("CREATE TABLE %s (%s, v text)", src, c.ddl),
				fmt.Sprintf("CREATE TABLE %s (%s, v text)", dst, c.ddl),
				fill)
			job := fmt.Sprintf("keys_%d", i)
			mustSucceed(t, "start", "--source", db, "--job", job, "--from", src, "--to", dst, "--rate", "0", "--chunk-size", "100", "--workers", "3")
			assertSameRows(t, db, src, db, dst)
			if s := status(t, db, job); s.RowsInserted != 2345 || s.ChunksDone != 24 {
				t.Fatalf("want 2345 rows in 24 chunks, got %+v", s)
			}

			// Undo every third chunk, rows and checkpoint row, as if they
			// had been in flight at a kill: resume must find the gaps
			// between committed runs in this key type's order.
			sql(t, db, undoEveryThirdChunk(job, dst, c.keys, c.cast)...)
			if n := queryInt(t, db, "SELECT count(*) FROM "+dst); n >= 2345 || n < 1400 {
				t.Fatalf("undoing a third of the chunks left %d of 2345 rows", n)
			}
			mustSucceed(t, "resume", "--source", db, "--job", job, "--rate", "0")
			assertSameRows(t, db, src, db, dst)
			if s := status(t, db, job); s.RowsInserted != 2345 || s.RowsSkipped != 0 || s.ChunksDone != 24 {
				t.Fatalf("after resuming the gaps: want 2345 rows inserted, 0 skipped, 24 chunks, got %+v", s)
			}
		})
	}
}
