package integration_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/internal/pgtest"
)

func dryRunJSON(t *testing.T, wantCode int, args ...string) backfill.DryRunReport {
	t.Helper()
	r := cli(t, append([]string{"dry-run", "--json"}, args...)...)
	if r.code != wantCode {
		t.Fatalf("dry-run: want exit %d, got %s", wantCode, r)
	}
	var rep backfill.DryRunReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("decode dry-run --json: %v\n%s", err, r.stdout)
	}
	return rep
}

// TestDryRunMeetsRealConflictsAndViolations: against a destination with
// existing rows and a CHECK some rows violate, the sample's would-insert,
// would-skip and would-fail counts equal what SQL says; the destination is
// unchanged and no state schema exists afterwards; the exit code is 3.
func TestDryRunMeetsRealConflictsAndViolations(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE src (id bigint PRIMARY KEY, qty int, note text)",
		"INSERT INTO src SELECT g, CASE WHEN g % 37 = 0 THEN -g ELSE g END, 'n' || g FROM generate_series(1, 30000) g",
		"CREATE TABLE dst (id bigint PRIMARY KEY, qty int CONSTRAINT qty_positive CHECK (qty > 0), note text)",
		"INSERT INTO dst SELECT g, 1, 'existing' FROM generate_series(5, 30000, 11) g",
	)
	before := tableFingerprint(t, db, "dst")
	rep := dryRunJSON(t, 3, "--source", db, "--job", "rehearsal", "--from", "src", "--to", "dst", "--sample-chunks", "4", "--chunk-size", "1000")

	// The sample is the first 4 chunks: ids 1..4000. PostgreSQL checks CHECK
	// constraints before looking for a conflict, so a row that both
	// conflicts and violates the CHECK fails; it is not skipped.
	inSample := "FROM src WHERE id <= 4000"
	skip := queryInt(t, db, "SELECT count(*) "+inSample+" AND id IN (SELECT id FROM dst) AND qty > 0")
	fail := queryInt(t, db, "SELECT count(*) "+inSample+" AND qty <= 0")
	insert := 4000 - skip - fail
	s := rep.Sample
	if s.Chunks != 4 || s.RowsRead != 4000 || s.WouldSkip != skip || s.WouldFail != fail || s.WouldInsert != insert {
		t.Fatalf("sample %+v; SQL says insert %d, skip %d, fail %d", s, insert, skip, fail)
	}
	if rep.OK || len(rep.Failures) == 0 || rep.Failures[0].SQLState != "23514" || !strings.Contains(rep.Failures[0].Message, "qty_positive") {
		t.Fatalf("failures not reported with their SQLSTATE and constraint: %+v", rep.Failures)
	}
	if len(rep.Preview.Rows) == 0 || len(rep.Preview.Columns) != 3 || !strings.Contains(rep.SQL.FirstPage, `ORDER BY "src"."id" LIMIT $1`) ||
		!strings.Contains(rep.SQL.Insert, "ON CONFLICT DO NOTHING") || rep.Estimate.SecondsAtRate == nil {
		t.Fatalf("report incomplete: preview %+v, sql %+v, estimate %+v", rep.Preview, rep.SQL, rep.Estimate)
	}
	if after := tableFingerprint(t, db, "dst"); after != before {
		t.Fatalf("dry-run changed the destination: %+v → %+v", before, after)
	}
	if schemaExists(t, db, "backfill") {
		t.Fatal("dry-run created the state schema")
	}
	// The process has exited, but its backends end asynchronously after
	// their sockets close: a lock that outlived the dry-run is one still
	// held once they are gone.
	const dstLocks = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'dst'"
	const dryRunBackends = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'backfill:rehearsal'"
	for deadline := time.Now().Add(10 * time.Second); queryInt(t, db, dryRunBackends) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := queryInt(t, db, dstLocks); n != 0 {
		t.Fatalf("%d locks on the destination outlived the dry-run (its backends still connected: %d)", n, queryInt(t, db, dryRunBackends))
	}

	// the human report says the same
	r := cli(t, "dry-run", "--source", db, "--job", "rehearsal", "--from", "src", "--to", "dst", "--sample-chunks", "4")
	if r.code != 3 || !strings.Contains(r.stdout, "would fail") || !strings.Contains(r.stdout, "unthrottled this database pair sustained") {
		t.Fatalf("human report: %s", r)
	}
	// and which way chunks are written: a straight copy into a table whose
	// key ranges it can probe
	if !strings.HasPrefix(rep.SQL.WritePath, "direct COPY") || !strings.Contains(rep.SQL.CopyDirect, `COPY "public"."dst"`) ||
		!strings.Contains(r.stdout, "write path") || !strings.Contains(r.stdout, "a chunk whose key range is empty: COPY") {
		t.Fatalf("the write path is not reported: %q, %q\n%s", rep.SQL.WritePath, rep.SQL.CopyDirect, r.stdout)
	}
}

// TestDryRunOfTheWholeTablePredictsTheRun: --sample-chunks 0 on a clean
// destination predicts exactly the counters that start then reports.
func TestDryRunOfTheWholeTablePredictsTheRun(t *testing.T) {
	db := pgtest.NewDatabase(t)
	createUsers(t, db, 20_000)
	spec := writeSpec(t, `job: predicted
source:
  table: users
  where: "deleted_at IS NULL"
dest:
  table: users_v2
columns:
  id: id
  email: lower(trim(email))
  full_name: first_name + " " + last_name
  tier: 'score >= 500 ? "gold" : "basic"'
  region: payload?.region ?? "unknown"
skip_if: 'email != nil && id % 7 == 0'
rate: 0
chunk_size: 500
`)
	sql(t, db, "ALTER TABLE users_v2 ADD CONSTRAINT no_blank CHECK (email IS NOT NULL)")
	rep := dryRunJSON(t, 3, "--config", spec, "--source", db, "--sample-chunks", "0")
	if !rep.Sample.WholeTable {
		t.Fatalf("sample did not cover the whole table: %+v", rep.Sample)
	}
	r := cli(t, "start", "--config", spec, "--source", db)
	if r.code != 3 {
		t.Fatalf("start: want exit 3 (rows fail the CHECK), got %s", r)
	}
	s := status(t, db, "predicted")
	got := [5]int64{s.RowsRead, s.RowsInserted, s.RowsSkipped, s.RowsFailed, s.RowsFiltered}
	want := [5]int64{rep.Sample.RowsRead, rep.Sample.WouldInsert, rep.Sample.WouldSkip, rep.Sample.WouldFail, rep.Sample.Filtered}
	if got != want || s.RowsFailed == 0 || s.RowsFiltered == 0 {
		t.Fatalf("start counted read/inserted/skipped/failed/filtered %v, dry-run predicted %v", got, want)
	}
}

// TestDryRunRefusals: problems that stop the job are all reported, exit 1,
// and a job running right now is not rehearsed against.
func TestDryRunRefusals(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE src (id bigint, v text)",
		"CREATE TABLE dst (id bigint, v text)",
	)
	rep := dryRunJSON(t, 1, "--source", db, "--job", "bad", "--from", "src", "--to", "dst")
	all := strings.Join(rep.Problems, "\n")
	if len(rep.Problems) < 2 || !strings.Contains(all, "primary key") || !strings.Contains(all, `"dst"`) {
		t.Fatalf("want both problems (no source key, no destination unique constraint), got %q", rep.Problems)
	}

	createItems(t, db, "items")
	fillItems(t, db, "items", 20_000)
	createItems(t, db, "items_copy")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	startBackground(ctx, t, "start", "--source", db, "--job", "busy", "--from", "items", "--to", "items_copy", "--rate", "2000")
	deadline := time.Now().Add(30 * time.Second)
	for !schemaExists(t, db, "backfill") || queryInt(t, db, "SELECT count(*) FROM backfill.jobs") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the job never started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := cli(t, "dry-run", "--source", db, "--job", "busy", "--from", "items", "--to", "items_copy")
	if r.code != 1 || !strings.Contains(r.stderr, "running now") {
		t.Fatalf("a dry-run of a running job must be refused, got %s", r)
	}
}

// TestDryRunPrintsEachStatementAlone: each statement dry-run prints is the
// one it names, with no comment of the next block in sql/ behind it (the
// chunk's insert once ended in chunk-after's "-- Where the committed chunk
// that ends at a key begins…", which the one-line form then commented the
// rest of the line out with).
func TestDryRunPrintsEachStatementAlone(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE src (id bigint PRIMARY KEY, qty int)",
		"INSERT INTO src SELECT g, g FROM generate_series(1, 3000) g",
		"CREATE TABLE dst (id bigint PRIMARY KEY, qty int)",
	)
	rep := dryRunJSON(t, 0, "--source", db, "--job", "alone", "--from", "src", "--to", "dst", "--where", "qty % 2 = 0", "--chunk-size", "1000")
	statements := map[string]string{
		"first page": rep.SQL.FirstPage, "next page": rep.SQL.NextPage, "chunk end": rep.SQL.ChunkEnd,
		"copy to stage": rep.SQL.CopyToStage, "insert": rep.SQL.Insert, "copy direct": rep.SQL.CopyDirect,
	}
	for name, q := range statements {
		if q == "" || strings.Contains(q, "--") || strings.Contains(q, "…") {
			t.Errorf("%s: %q", name, q)
		}
	}
	if !strings.HasSuffix(rep.SQL.Insert, "RETURNING rows_inserted") {
		t.Errorf("the insert does not end where commit-chunk does: %q", rep.SQL.Insert)
	}
	r := cli(t, "dry-run", "--source", db, "--job", "alone", "--from", "src", "--to", "dst", "--where", "qty % 2 = 0", "--chunk-size", "1000")
	_, printed, found := strings.Cut(r.stdout, "Statements the run would use:")
	if r.code != 0 || !found || strings.Contains(printed, "--") {
		t.Fatalf("the printed statements hold a comment: %s", r)
	}
}
