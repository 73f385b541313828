package integration_test

import (
	"strings"
	"testing"

	"github.com/backfill/backfill/internal/pgtest"
)

// TestRefusals: every refusal exits non-zero with a message naming the
// object and what to do, and writes nothing: no state schema, no row.
func TestRefusals(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE src (id bigint PRIMARY KEY, email text, nick text, v text)",
		"CREATE UNIQUE INDEX src_email_partial ON src (nick) WHERE nick IS NOT NULL",
		"INSERT INTO src SELECT g, 'e' || g, NULL, 'v' FROM generate_series(1, 100) g",
		"CREATE TABLE nopk (id bigint NOT NULL, v text)",
		"INSERT INTO nopk SELECT g, 'v' FROM generate_series(1, 10) g",
		"CREATE TABLE dst (id bigint PRIMARY KEY, email text, nick text, v text)",
		"CREATE TABLE dst_nounique (id bigint, email text, v text)",
		"CREATE TABLE dst_required (id bigint PRIMARY KEY, v text, extra text NOT NULL)",
		"CREATE TABLE disjoint (a int PRIMARY KEY, b text)",
		"CREATE TABLE dst_int_email (id bigint PRIMARY KEY, email integer, v text)",
		`CREATE TABLE "Victim" (id int)`,
	)
	base := []string{"start", "--source", db, "--rate", "0"}
	cases := []struct {
		name     string
		args     []string
		code     int
		mentions []string
	}{
		{"missing source table", []string{"--job", "r1", "--from", "nosuch", "--to", "dst"}, 1, []string{`"nosuch"`, "does not exist"}},
		{"missing destination table", []string{"--job", "r2", "--from", "src", "--to", "public.nowhere"}, 1, []string{`"public"."nowhere"`, "does not exist"}},
		{"missing schema", []string{"--job", "r3", "--from", "nosuchschema.src", "--to", "dst"}, 1, []string{`"nosuchschema"."src"`, "does not exist"}},
		{"nullable key", []string{"--job", "r4", "--from", "src", "--to", "dst", "--key", "email"}, 1, []string{`"email"`, "nullable"}},
		{"key without unique index", []string{"--job", "r5", "--from", "src", "--to", "dst", "--key", "id,v"}, 1, nil},
		{"partial unique index is no key", []string{"--job", "r6", "--from", "src", "--to", "dst", "--key", "nick"}, 1, []string{`"nick"`}},
		{"missing key column", []string{"--job", "r7", "--from", "src", "--to", "dst", "--key", "nope"}, 1, []string{`"nope"`, "does not exist"}},
		{"source without primary key", []string{"--job", "r8", "--from", "nopk", "--to", "dst"}, 1, []string{`"nopk"`, "primary key", "--key"}},
		{"destination without unique constraint", []string{"--job", "r9", "--from", "src", "--to", "dst_nounique"}, 1, []string{`"dst_nounique"`, "unique"}},
		{"unwritten NOT NULL column", []string{"--job", "r10", "--from", "src", "--to", "dst_required"}, 1, []string{`"extra"`, "NOT NULL"}},
		{"no common column", []string{"--job", "r11", "--from", "src", "--to", "disjoint"}, 1, []string{"share no column"}},
		{"same table", []string{"--job", "r12", "--from", "src", "--to", "public.src"}, 1, []string{"same table"}},
		// text into integer has no assignment cast: refused before the job
		// exists, not at its first chunk
		{"destination type without assignment", []string{"--job", "r19", "--from", "src", "--to", "dst_int_email"}, 1, []string{`"dst_int_email"`, `"email"`, "integer"}},
		{"where that does not compile", []string{"--job", "r20", "--from", "src", "--to", "dst", "--where", "no_such_column > 0"}, 1, []string{`"src"`, "no_such_column"}},
		{"injection in a table name", []string{"--job", "r13", "--from", `src; DROP TABLE "Victim"`, "--to", "dst"}, 2, []string{"source table name", "DROP TABLE"}},
		{"quoted injection is just a name", []string{"--job", "r14", "--from", `"src; DROP TABLE ""Victim"""`, "--to", "dst"}, 1, []string{`does not exist`}},
		{"zero chunk size", []string{"--job", "r15", "--from", "src", "--to", "dst", "--chunk-size", "0"}, 2, []string{"--chunk-size"}},
		{"zero workers", []string{"--job", "r16", "--from", "src", "--to", "dst", "--workers", "0"}, 2, []string{"--workers"}},
		{"negative rate", []string{"--job", "r17", "--from", "src", "--to", "dst", "--rate", "-5"}, 2, []string{"--rate"}},
		{"bad job name", []string{"--job", "no spaces allowed", "--from", "src", "--to", "dst"}, 2, []string{"job name"}},
		{"missing --job", []string{"--from", "src", "--to", "dst"}, 2, []string{"--job"}},
		{"unclosed quote", []string{"--job", "r18", "--from", `"src`, "--to", "dst"}, 2, []string{"unterminated"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := cli(t, append(base, c.args...)...)
			if r.code != c.code {
				t.Fatalf("want exit %d, got %s", c.code, r)
			}
			for _, m := range c.mentions {
				if !strings.Contains(r.stderr, m) {
					t.Errorf("message does not mention %s:\n%s", m, r.stderr)
				}
			}
			if schemaExists(t, db, "backfill") {
				t.Fatalf("a refused job created the state schema")
			}
			if n := queryInt(t, db, "SELECT (SELECT count(*) FROM dst) + (SELECT count(*) FROM dst_nounique) + (SELECT count(*) FROM dst_required)"); n != 0 {
				t.Fatalf("a refused job wrote %d rows", n)
			}
			if !queryBool(t, db, `SELECT to_regclass('"Victim"') IS NOT NULL`) {
				t.Fatalf("the victim table was dropped")
			}
		})
	}

	t.Run("resume of an unknown job", func(t *testing.T) {
		r := cli(t, "resume", "--source", db, "--job", "never-started")
		if r.code != 1 || !strings.Contains(r.stderr, `"never-started"`) || !strings.Contains(r.stderr, "backfill start") {
			t.Fatalf("want exit 1 naming the job and pointing to start, got %s", r)
		}
		if schemaExists(t, db, "backfill") {
			t.Fatalf("resume of an unknown job created the state schema")
		}
	})

	t.Run("changed spec", func(t *testing.T) {
		mustSucceed(t, append(base, "--job", "spec", "--from", "src", "--to", "dst", "--chunk-size", "10")...)
		sql(t, db, "TRUNCATE dst")
		r := cli(t, append(base, "--job", "spec", "--from", "src", "--to", "dst", "--chunk-size", "20")...)
		if r.code != 1 || !strings.Contains(r.stderr, "chunk_size: stored 10, given 20") {
			t.Fatalf("want a refusal naming the difference, got %s", r)
		}
		if n := queryInt(t, db, "SELECT count(*) FROM dst"); n != 0 {
			t.Fatalf("refused start wrote %d rows", n)
		}
	})
}

// TestUsageErrors: mistakes in how the command is called exit 2.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"start", "--no-such-flag"},
		{"start", "--chunk-size", "many"},
		{"no-such-command"},
		{"status", "--json=maybe"},
		{"set", "--job", "x"},
	} {
		if r := cli(t, args...); r.code != 2 || r.stderr == "" {
			t.Errorf("backfill %s: want exit 2 with a message, got %s", strings.Join(args, " "), r)
		}
	}
}

// TestKeyWithoutComparisonOperatorsIsRefused: hstore has a unique btree
// index but no < or > (its operators are #<# and the like), so keyset
// pages cannot compare it. Refused before the job exists, naming the key.
func TestKeyWithoutComparisonOperatorsIsRefused(t *testing.T) {
	db := pgtest.NewDatabase(t)
	if !queryBool(t, db, "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'hstore')") {
		t.Skip("the hstore extension is not installed on this server")
	}
	sql(t, db,
		"CREATE EXTENSION hstore",
		"CREATE TABLE src (k hstore PRIMARY KEY, v text)",
		"INSERT INTO src SELECT hstore('n', g::text), 'v' FROM generate_series(1, 10) g",
		"CREATE TABLE dst (LIKE src INCLUDING ALL)")
	r := cli(t, "start", "--source", db, "--job", "h", "--from", "src", "--to", "dst", "--rate", "0")
	if r.code != 1 || !strings.Contains(r.stderr, `"src"`) || !strings.Contains(r.stderr, "key order (k)") {
		t.Fatalf("want exit 1 naming the table and its key, got %s", r)
	}
	if schemaExists(t, db, "backfill") {
		t.Fatal("a refused job created the state schema")
	}
}
