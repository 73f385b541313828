package integration_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/backfill/backfill/internal/pgtest"
)

func writeSpec(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func createUsers(t *testing.T, db string, n int) {
	t.Helper()
	sql(t, db,
		`CREATE TABLE users (id bigint PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, email text,
			score int, payload jsonb, deleted_at timestamptz)`,
		`INSERT INTO users SELECT g, 'Ünä' || g, 'Last' || (g % 97), CASE WHEN g % 50 = 0 THEN NULL ELSE '  User' || g || '@Example.COM ' END,
			g % 1000,
			CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN jsonb_build_object('region', 'eu-' || (g % 3)) WHEN 2 THEN '{"other": 1}' ELSE jsonb_build_object('region', 'us') END,
			CASE WHEN g % 33 = 0 THEN now() END
		 FROM generate_series(1, `+strconv.Itoa(n)+`) g`,
		`CREATE TABLE users_v2 (id bigint PRIMARY KEY, email text NOT NULL, full_name text, tier text, region text,
			email_hash text, migrated_at timestamptz DEFAULT now())`,
	)
}

// TestSpecFileTransform: a spec with renamed, computed, json-extracted and
// filtered columns copies 100,000 rows, and the destination matches values
// computed independently in SQL.
func TestSpecFileTransform(t *testing.T) {
	db := pgtest.NewDatabase(t)
	createUsers(t, db, 100_000)
	spec := writeSpec(t, `job: users_v2
source:
  table: users
  key: [id]
  where: "deleted_at IS NULL"
dest:
  table: users_v2
columns:
  id: id
  email: lower(trim(email))
  full_name: first_name + " " + last_name
  tier: 'score >= 500 ? "gold" : "basic"'
  region: payload?.region ?? "unknown"
  email_hash: sha256(lower(trim(email)))
skip_if: email == nil
rate: 0
chunk_size: 700
`)
	mustSucceed(t, "start", "--config", spec, "--source", db)
	const expected = `SELECT id, lower(trim(email)), first_name || ' ' || last_name,
			CASE WHEN score >= 500 THEN 'gold' ELSE 'basic' END,
			coalesce(payload->>'region', 'unknown'),
			encode(sha256(convert_to(lower(trim(email)), 'UTF8')), 'hex')
		FROM users WHERE deleted_at IS NULL AND email IS NOT NULL`
	const actual = `SELECT id, email, full_name, tier, region, email_hash FROM users_v2`
	if n := queryInt(t, db, "SELECT count(*) FROM (("+expected+") EXCEPT ("+actual+")) d"); n != 0 {
		t.Fatalf("%d expected rows missing or different in the destination", n)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM (("+actual+") EXCEPT ("+expected+")) d"); n != 0 {
		t.Fatalf("%d destination rows that SQL does not expect", n)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM users_v2 WHERE migrated_at IS NULL"); n != 0 {
		t.Fatalf("%d rows without the default of an unlisted column", n)
	}
	read := queryInt(t, db, "SELECT count(*) FROM users WHERE deleted_at IS NULL")
	filtered := queryInt(t, db, "SELECT count(*) FROM users WHERE deleted_at IS NULL AND email IS NULL")
	s := status(t, db, "users_v2")
	if s.RowsRead != read || s.RowsFiltered != filtered || s.RowsInserted != read-filtered || s.RowsFailed != 0 {
		t.Fatalf("counters %+v; want read %d, filtered %d, inserted %d", s, read, filtered, read-filtered)
	}

	// the stored spec is compared on resume and on start
	r := cli(t, "start", "--config", spec, "--source", db, "--chunk-size", "100")
	if r.code != 1 || !strings.Contains(r.stderr, "chunk_size: stored 700, given 100") {
		t.Fatalf("a changed chunk size must be refused, got %s", r)
	}
	changed := writeSpec(t, strings.Replace(readFile(t, spec), `"gold"`, `"GOLD"`, 1))
	r = cli(t, "resume", "--config", changed, "--source", db)
	if r.code != 1 || !strings.Contains(r.stderr, "columns: stored") {
		t.Fatalf("a changed mapping must be refused on resume, got %s", r)
	}
}

// TestBadSpecFiles: an unknown key, a type mismatch and an expression
// that does not compile exit non-zero before writing anything, naming the
// offending line and column.
func TestBadSpecFiles(t *testing.T) {
	db := pgtest.NewDatabase(t)
	createUsers(t, db, 100)
	head := "job: bad\nsource:\n  table: users\ndest:\n  table: users_v2\n"
	cases := []struct {
		name, body string
		code       int
		mentions   []string
	}{
		{"unknown key", head + "columns:\n  id: id\n  email: email\nchunksize: 10\n", 2, []string{"line 9", `unknown field "chunksize"`}},
		{"wrong type", head + "workers: eight\n", 2, []string{"line 6", "Workers"}},
		{"missing table", "job: bad\nsource:\n  key: [id]\ndest:\n  table: users_v2\n", 2, []string{"source.table"}},
		{"type mismatch", head + "columns:\n  id: email\n  email: email\n", 1, []string{`column "id"`, "line 7", "email", "bigint"}},
		{"does not compile", head + "columns:\n  id: id\n  email: lower(email\n", 1, []string{`column "email"`, "line 8", "lower(email"}},
		{"unknown source column", head + "columns:\n  id: id\n  email: mail\n", 1, []string{`column "email"`, "line 8", "mail"}},
		{"unknown destination column", head + "columns:\n  id: id\n  email: email\n  nope: id\n", 1, []string{`column "nope"`, "line 9"}},
		{"skip_if not boolean", head + "columns:\n  id: id\n  email: email\nskip_if: score\n", 1, []string{"skip_if", "line 9"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := cli(t, "start", "--config", writeSpec(t, c.body), "--source", db, "--rate", "0")
			if r.code != c.code {
				t.Fatalf("want exit %d, got %s", c.code, r)
			}
			for _, m := range c.mentions {
				if !strings.Contains(r.stderr, m) {
					t.Errorf("message does not mention %s:\n%s", m, r.stderr)
				}
			}
			if schemaExists(t, db, "backfill") || queryInt(t, db, "SELECT count(*) FROM users_v2") != 0 {
				t.Fatal("a refused spec wrote something")
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestResumeWithASpecWithoutChunkSize: the same spec file serves start and
// resume; without chunk_size it means sized by time (with rate 0) on both,
// and resume takes it as the stored spec instead of refusing
// "--chunk-size 0", a flag resume does not have.
func TestResumeWithASpecWithoutChunkSize(t *testing.T) {
	db := itemsDatabase(t, 5000)
	spec := writeSpec(t, "job: nochunk\nsource:\n  table: src\ndest:\n  table: dst\nrate: 0\n")
	mustSucceed(t, "start", "--config", spec, "--source", db)
	sql(t, db, undoEveryThirdChunk("nochunk", "dst", "d.id", "(%[1]s)[1]::bigint")...)
	mustSucceed(t, "resume", "--config", spec, "--source", db)
	assertSameRows(t, db, "src", db, "dst")
	if s := status(t, db, "nochunk"); s.State != "done" || s.RowsInserted != 5000 || s.RowsRead != 5000 || s.RowsSkipped != 0 {
		t.Fatalf("after resume with the spec file: %+v", s)
	}
	if size := queryInt(t, db, "SELECT (spec->>'chunk_size')::int FROM backfill.jobs WHERE name = 'nochunk'"); size != 0 {
		t.Fatalf("stored chunk_size %d, want 0 (sized by time)", size)
	}
}
