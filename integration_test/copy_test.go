package integration_test

import (
	"strings"
	"testing"

	"github.com/backfill/backfill"
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
	// --rate 0 without --chunk-size sizes chunks by time, within bounds
	fewest, most := int64((n+backfill.MaxTimedChunkSize-1)/backfill.MaxTimedChunkSize), int64((n+backfill.DefaultChunkSize-1)/backfill.DefaultChunkSize)
	if s.State != "done" || s.RowsInserted != int64(n) || s.RowsRead != int64(n) || s.RowsSkipped != 0 ||
		s.ChunksDone < fewest || s.ChunksDone > most {
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

// TestSpecialColumnsAndTypes: identity columns keep their values
// (OVERRIDING SYSTEM VALUE), generated columns are computed by the
// destination, and enums, domains, intervals, inet, int4 arrays and
// multi-dimensional arrays copy exactly; the state lives in a custom
// schema.
func TestSpecialColumnsAndTypes(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
		"CREATE DOMAIN positive AS numeric CHECK (VALUE > 0)",
		`CREATE TABLE src (id bigint PRIMARY KEY, m mood, p positive, span interval, addr inet, nums int4[], grid text[][], price numeric)`,
		`INSERT INTO src SELECT g, (ARRAY['sad','ok','happy'])[g % 3 + 1]::mood, g + 0.5, g * interval '1 minute 1.5 seconds',
			('10.0.' || (g % 250) || '.' || (g % 200) || '/32')::inet, ARRAY[g, -g, NULL], ARRAY[ARRAY['a' || g, 'b'], ARRAY['c', NULL]], g * 1.25
		 FROM generate_series(1, 3000) g`,
		`CREATE TABLE dst (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, m mood, p positive, span interval, addr inet,
			nums int4[], grid text[][], price numeric, doubled numeric GENERATED ALWAYS AS (price * 2) STORED)`,
	)
	mustSucceed(t, "start", "--source", db, "--job", "special", "--from", "src", "--to", "dst", "--rate", "0", "--state-schema", "ops_state", "--chunk-size", "250")
	const cols = "id, m, p, span, addr, nums, grid, price"
	if n := queryInt(t, db, "SELECT count(*) FROM ((SELECT "+cols+" FROM src) EXCEPT (SELECT "+cols+" FROM dst)) d"); n != 0 {
		t.Fatalf("%d rows differ", n)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM dst WHERE doubled = price * 2"); n != 3000 {
		t.Fatalf("%d of 3000 generated values computed", n)
	}
	if schemaExists(t, db, "backfill") || !schemaExists(t, db, "ops_state") {
		t.Fatal("the state was not kept in --state-schema ops_state")
	}
	if s := status(t, db, "special", "--state-schema", "ops_state"); s.RowsInserted != 3000 || s.ChunksDone != 12 {
		t.Fatalf("status in the custom schema: %+v", s)
	}
}
