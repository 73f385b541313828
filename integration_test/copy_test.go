package integration_test

import (
	"strings"
	"testing"

	"github.com/backfill/backfill/internal/pgtest"
)

// TestCopyAcrossDatabases copies a million rows of every common type from
// one database to another without a rate cap.
func TestCopyAcrossDatabases(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 50_000
	}
	src, dst := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	createItems(t, src, "items")
	fillItems(t, src, "items", n)
	createItems(t, dst, "items")

	r := mustSucceed(t, "start", "--source", src, "--dest", dst, "--job", "million",
		"--from", "items", "--to", "items", "--rate", "0", "--log-format", "json")
	want := assertSameRows(t, src, "items", dst, "items")
	if want.Rows != int64(n) {
		t.Fatalf("source has %d rows, want %d", want.Rows, n)
	}
	s := status(t, dst, "million")
	if s.State != "done" || s.RowsInserted != int64(n) || s.RowsRead != int64(n) || s.RowsSkipped != 0 ||
		s.ChunksDone != int64((n+999)/1000) {
		t.Fatalf("status after a clean run: %+v", s)
	}
	if !strings.Contains(r.stderr, `"message":"job done"`) {
		t.Fatalf("no final log line:\n%s", r.stderr)
	}
}

// TestExistingRowsAreSkippedNotOverwritten: rows already in the destination
// keep their values and are counted as skipped.
func TestExistingRowsAreSkippedNotOverwritten(t *testing.T) {
	db := itemsDatabase(t, 10_000)
	sql(t, db, "INSERT INTO dst (id, name) SELECT g, 'kept' FROM generate_series(1, 10000, 10) g") // 1000 rows

	mustSucceed(t, "start", "--source", db, "--job", "conflicts", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "333")
	s := status(t, db, "conflicts")
	if s.RowsInserted != 9000 || s.RowsSkipped != 1000 || s.RowsRead != 10_000 {
		t.Fatalf("want 9000 inserted and 1000 skipped of 10000 read, got %+v", s)
	}
	if kept := queryInt(t, db, "SELECT count(*) FROM dst WHERE name = 'kept' AND price IS NULL"); kept != 1000 {
		t.Fatalf("%d pre-existing rows kept their values, want 1000", kept)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM src s JOIN dst d USING (id) WHERE d.name IS DISTINCT FROM 'kept' AND (s.*)::text <> (d.*)::text`); n != 0 {
		t.Fatalf("%d copied rows differ from the source", n)
	}
}

// TestRestartOfFinishedJobIsNoop: start on a done job exits 0 and writes
// nothing.
func TestRestartOfFinishedJobIsNoop(t *testing.T) {
	db := itemsDatabase(t, 3000)
	args := []string{"start", "--source", db, "--job", "again", "--from", "src", "--to", "dst", "--rate", "0"}
	mustSucceed(t, args...)
	before := status(t, db, "again")
	sql(t, db, "DELETE FROM dst WHERE id <= 10") // a re-copy would bring these back
	r := mustSucceed(t, args...)
	if !strings.Contains(r.stderr, "already done") {
		t.Fatalf("second start did not say the job is done:\n%s", r)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM dst"); n != 2990 {
		t.Fatalf("second start wrote rows: dst has %d rows, want 2990", n)
	}
	after := status(t, db, "again")
	if countersOf(before) != countersOf(after) || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatalf("second start changed the job: before %+v, after %+v", before, after)
	}
	mustSucceed(t, "resume", "--source", db, "--job", "again")
	if n := queryInt(t, db, "SELECT count(*) FROM dst"); n != 2990 {
		t.Fatalf("resume of a done job wrote rows: dst has %d rows", n)
	}
}
