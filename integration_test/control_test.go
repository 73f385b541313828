package integration_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/backfill/backfill"
)

// TestRetuneAndPauseWhileRunning: `backfill set --rate` changes a running
// job's rate within seconds, and `backfill pause` from another terminal
// stops it as paused (exit 130); resume finishes it exactly.
func TestRetuneAndPauseWhileRunning(t *testing.T) {
	db := itemsDatabase(t, 60_000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := startBackground(ctx, t, "start", "--source", db, "--job", "tuned", "--from", "src", "--to", "dst", "--rate", "1000", "--chunk-size", "1000", "--log-format", "json")
	done, out := b.done, b.stderr
	rowsDone := func() int64 {
		return pollInt(ctx, db, "SELECT coalesce(sum(rows_read), 0) FROM backfill.chunks WHERE job = 'tuned'")
	}
	waitUntil(t, done, out, "the first chunk", func() bool { return rowsDone() >= 1000 })

	r := mustSucceed(t, "set", "--dest", db, "--job", "tuned", "--rate", "20000")
	if !strings.Contains(r.stdout, "20000 rows/s") || !strings.Contains(r.stdout, "within seconds") {
		t.Fatalf("set: %s", r)
	}
	// at 1000 rows/s, 10,000 more rows would take 10 s; at 20,000 rows/s
	// well under that
	began := time.Now()
	before := rowsDone()
	waitUntil(t, done, out, "10,000 more rows", func() bool { return rowsDone() >= before+10_000 })
	if took := time.Since(began); took > 8*time.Second {
		t.Fatalf("10,000 rows took %v after raising the rate to 20,000 rows/s", took)
	}
	if s := status(t, db, "tuned"); s.Rate != 20000 || s.State != "running" || s.RowsPerSec <= 0 || s.ETASeconds == nil {
		t.Fatalf("status of the running job after set (want the new cap, a measured rate and an ETA): %+v", s)
	}

	mustSucceed(t, "pause", "--dest", db, "--job", "tuned")
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("the runner did not stop within 15 s of the pause:\n%s", out.String())
	}
	if code := b.cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(out.String(), "pause requested") {
		t.Fatalf("paused runner: exit %d\n%s", code, out.String())
	}
	s := status(t, db, "tuned")
	if s.State != "paused" || s.RowsRead >= 60_000 {
		t.Fatalf("after pause: %+v", s)
	}
	if r := cli(t, "pause", "--dest", db, "--job", "tuned"); r.code != 1 || !strings.Contains(r.stderr, "not running") {
		t.Fatalf("pausing a paused job must be refused, got %s", r)
	}
	if r := cli(t, "start", "--source", db, "--job", "tuned", "--from", "src", "--to", "dst", "--chunk-size", "1000"); r.code != 1 || !strings.Contains(r.stderr, "paused") {
		t.Fatalf("start of a paused job must point to resume, got %s", r)
	}
	mustSucceed(t, "resume", "--source", db, "--job", "tuned", "--rate", "0")
	assertSameRows(t, db, "src", db, "dst")
	if s := status(t, db, "tuned"); s.State != "done" || s.RowsInserted != 60_000 || s.RowsSkipped != 0 || s.ChunksDone != 60 {
		t.Fatalf("after resume: %+v", s)
	}
}

// TestVerify: after a copy, verify finds the tables identical (exit 0);
// after a row is changed and another deleted in the destination, it names
// the two ranges that hold them (exit 3).
func TestVerify(t *testing.T) {
	db := itemsDatabase(t, 20_000)
	// fixed chunks: the ranges verify compares are runs of them
	mustSucceed(t, "start", "--source", db, "--job", "checked", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "1000")
	r := mustSucceed(t, "verify", "--source", db, "--job", "checked")
	if !strings.Contains(r.stdout, "identical") || !strings.Contains(r.stdout, "20000 rows in the source, 20000 in the destination") {
		t.Fatalf("verify of an exact copy: %s", r)
	}
	sql(t, db, "UPDATE dst SET name = 'tampered' WHERE id = 4321", "DELETE FROM dst WHERE id = 15000")
	r = cli(t, "verify", "--source", db, "--job", "checked", "--json")
	if r.code != 3 {
		t.Fatalf("want exit 3 for a differing destination, got %s", r)
	}
	var rep backfill.VerifyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Ranges != 2 || rep.MismatchedRanges != 2 || rep.RowsDest != 19_999 || len(rep.Mismatches) != 2 ||
		rep.Mismatches[0].Last[0] != "10000" || rep.Mismatches[1].After[0] != "10000" || rep.Mismatches[1].RowsDest != 9_999 {
		t.Fatalf("verify after tampering: %+v", rep)
	}
	spec := writeSpec(t, "job: computed\nsource:\n  table: src\ndest:\n  table: dst\ncolumns:\n  id: id\n  name: upper(name ?? '')\n")
	sql(t, db, "TRUNCATE dst")
	mustSucceed(t, "start", "--config", spec, "--source", db, "--rate", "0")
	if r := cli(t, "verify", "--source", db, "--job", "computed"); r.code != 1 || !strings.Contains(r.stderr, "computes its destination columns") {
		t.Fatalf("verify of a transforming job must be refused, got %s", r)
	}
}
