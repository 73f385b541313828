package integration_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/backfill/backfill/internal/pgtest"
)

// withParam adds a connection parameter to a URL.
func withParam(url, kv string) string {
	if strings.Contains(url, "?") {
		return url + "&" + kv
	}
	return url + "?" + kv
}

// TestSourceQueryExecModes: a job copies the same whatever
// default_query_exec_mode the source and destination URLs name. Modes
// that ignore the result formats a query asks for (exec, simple_protocol)
// send every column as text; a column the plan meant to read in binary
// must then be read as text, not fail the job. A CHECK fails every 40th
// row, so that chunks are isolated too.
func TestSourceQueryExecModes(t *testing.T) {
	for _, mode := range []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			db := itemsDatabase(t, 400)
			sql(t, db, "ALTER TABLE dst ADD CHECK (id % 40 <> 0)")
			url := withParam(db, "default_query_exec_mode="+mode)
			r := cli(t, "start", "--source", url, "--dest", url,
				"--job", "modes", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "64")
			if r.code != 3 {
				t.Fatalf("want exit 3 (done, rows failed), got %s", r)
			}
			sql(t, db, "CREATE TABLE want AS SELECT * FROM src WHERE id % 40 <> 0")
			assertSameRows(t, db, "want", db, "dst")
			if s := status(t, db, "modes"); s.State != "done" || s.RowsInserted != 390 || s.RowsFailed != 10 {
				t.Fatalf("status: %+v", s)
			}
			if n := queryInt(t, db, `SELECT count(*) FROM backfill.failed_rows f JOIN src s ON s.id = (f.key->>0)::int
				WHERE (f.source_row->>'created')::timestamptz IS NOT DISTINCT FROM s.created
				AND (f.source_row->>'ratio')::float8 IS NOT DISTINCT FROM s.ratio AND (f.source_row->>'name') IS NOT DISTINCT FROM s.name`); n != 10 {
				t.Fatalf("%d of 10 failed rows show their source row", n)
			}
		})
	}
}

// encodedDatabase makes a database in the given encoding and drops it
// when t ends.
func encodedDatabase(t *testing.T, encoding string, suffix ...string) string {
	t.Helper()
	admin := pgtest.AdminURL(t)
	name := strings.ToLower(encoding) + strings.Join(suffix, "") + "_" + strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name()))
	name = name[:min(len(name), 60)]
	if _, err := connect(t, admin).Exec(context.Background(),
		fmt.Sprintf(`CREATE DATABASE %q ENCODING %s LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`, name, quoteLiteral(encoding))); err != nil {
		t.Fatalf("create a %s database: %v", encoding, err)
	}
	t.Cleanup(func() {
		if _, err := connect(t, admin).Exec(context.Background(), fmt.Sprintf(`DROP DATABASE IF EXISTS %q WITH (FORCE)`, name)); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parse the admin URL: %v", err)
	}
	u.Path, u.RawPath = "/"+name, ""
	return u.String()
}

// TestLatin1DestinationGetsTheSameCharacters: a destination database in
// LATIN1 holds 'café' as the source does. A session left in the server's
// encoding took each byte of the UTF-8 that pgx sends for a character of
// its own, and stored 'cafÃ©'.
func TestLatin1DestinationGetsTheSameCharacters(t *testing.T) {
	src, dst := pgtest.NewDatabase(t), encodedDatabase(t, "LATIN1")
	ddl := "CREATE TABLE t (id int PRIMARY KEY, name text, code char(6), tags text[])"
	sql(t, src, ddl, "INSERT INTO t SELECT g, 'café ' || g, 'ñ' || g, ARRAY['Zürich', NULL] FROM generate_series(1, 300) g")
	sql(t, dst, ddl)
	mustSucceed(t, "start", "--source", src, "--dest", dst, "--job", "latin", "--from", "t", "--to", "t", "--rate", "0", "--chunk-size", "100")
	// both read by a UTF-8 session: the same text if the same characters
	assertSameText(t, src, dst, "t")
	if n := queryInt(t, dst, "SELECT count(*) FROM t WHERE length(name) = 5 + length(id::text)"); n != 300 {
		t.Fatalf("%d of 300 names hold the characters of the source's", n)
	}
}

// TestSQLASCIIBytesTravelAsTheyAre: a SQL_ASCII database holds bytes in
// no encoding, some not UTF-8; copied into another, every byte arrives.
func TestSQLASCIIBytesTravelAsTheyAre(t *testing.T) {
	src, dst := encodedDatabase(t, "SQL_ASCII", "src"), encodedDatabase(t, "SQL_ASCII", "dst")
	ddl := "CREATE TABLE t (id int PRIMARY KEY, name text, note varchar(10))"
	sql(t, src, ddl, `INSERT INTO t SELECT g, convert_from('\xe9'::bytea, 'SQL_ASCII') || g, 'caf' || convert_from('\xe9'::bytea, 'SQL_ASCII') FROM generate_series(1, 300) g`)
	sql(t, dst, ddl)
	mustSucceed(t, "start", "--source", src, "--dest", dst, "--job", "ascii", "--from", "t", "--to", "t", "--rate", "0", "--chunk-size", "100")
	want := queryString(t, src, "SELECT md5(string_agg(convert_to(name || note, 'SQL_ASCII')::text, ',' ORDER BY id)) FROM t")
	if got := queryString(t, dst, "SELECT md5(string_agg(convert_to(name || note, 'SQL_ASCII')::text, ',' ORDER BY id)) FROM t"); got != want {
		t.Fatalf("the destination's bytes differ from the source's (md5 %s, want %s)", got, want)
	}
}

// TestValueTheStageRefusesFailsItsRowOnly: a transform that computes
// text with a NUL in it, which no text column takes (22021), for some
// rows: the destination refuses it already as the stage's COPY reads it.
// Those rows fail on their own, recorded in failed_rows, as INSERT failed
// them; every other row of their chunks is written and the job ends done.
func TestValueTheStageRefusesFailsItsRowOnly(t *testing.T) {
	db := pgtest.NewDatabase(t)
	ddl := "CREATE TABLE %s (id int PRIMARY KEY, name text, n int)"
	sql(t, db, fmt.Sprintf(ddl, "src"), fmt.Sprintf(ddl, "dst"),
		"INSERT INTO src SELECT g, 'name ' || g, g FROM generate_series(1, 500) g")
	spec := writeSpec(t, `job: nul
source:
  table: src
dest:
  table: dst
columns:
  id: id
  name: 'id % 50 == 0 ? name + "\x00" : name'
  n: n
rate: 0
chunk_size: 100
`)
	const bad = 10
	r := cli(t, "start", "--config", spec, "--source", db)
	if r.code != 3 {
		t.Fatalf("want exit 3 (done, rows failed), got %s", r)
	}
	if s := status(t, db, "nul"); s.State != "done" || s.RowsFailed != bad || s.RowsInserted != 500-bad {
		t.Fatalf("want %d failed and %d inserted, got %+v", bad, 500-bad, s)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM backfill.failed_rows f WHERE job = 'nul' AND sqlstate = '22021'
		AND (key->>0)::int % 50 = 0 AND (source_row->>'n')::int = (key->>0)::int`); n != bad {
		t.Fatalf("%d rows recorded failed with 22021 and their source row, want %d", n, bad)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM dst WHERE id % 50 <> 0 AND name = 'name ' || id AND n = id"); n != 500-bad {
		t.Fatalf("%d of the %d good rows written", n, 500-bad)
	}
}

// TestFailedRowsShowRawValuesAsText: a failed row's source_row holds each
// value as its type's text, which reads back as the value (and as it did
// before values travelled raw): NaN and infinite floats, timestamps beyond
// year 9999 or BC, intervals, ranges, money, pg_lsn, tsquery, timetz. A
// value JSON cannot hold must not cost the row its whole copy.
func TestFailedRowsShowRawValuesAsText(t *testing.T) {
	db := pgtest.NewDatabase(t)
	cols := []struct{ name, typ, value string }{
		{"f", "double precision", "CASE WHEN g % 2 = 0 THEN 'NaN' ELSE '-Infinity' END"},
		{"ts", "timestamp", "CASE WHEN g % 2 = 0 THEN '0044-03-15 12:00:00 BC' ELSE '12345-01-01 00:00:00' END"},
		{"tstz", "timestamptz", "CASE WHEN g % 2 = 0 THEN 'infinity' ELSE '2024-01-01 00:00:00.5+05:45' END"},
		{"d", "date", "'4713-01-01 BC'"},
		{"iv", "interval", "'1 year 2 mons -3 days +04:05:06.789'"},
		{"nr", "numrange", "'[1.5,2.50)'"},
		{"m", "money", "'1234.56'"},
		{"lsn", "pg_lsn", "'16/B374D848'"},
		{"q", "tsquery", "'fat & (rat | cat)'"},
		{"tz", "timetz", "'12:34:56.789+05:45'"},
		{"b", "bit(5)", "B'10101'"},
		{"ip", "inet", "'2001:db8::1/64'"},
	}
	var defs, exprs, same []string
	for _, c := range cols {
		defs = append(defs, c.name+" "+c.typ)
		exprs = append(exprs, "("+c.value+")::"+c.typ)
		same = append(same, fmt.Sprintf("(f.source_row->>'%s')::%s IS NOT DISTINCT FROM s.%s", c.name, c.typ, c.name))
	}
	sql(t, db,
		"CREATE TABLE src (id int PRIMARY KEY, "+strings.Join(defs, ", ")+")",
		"CREATE TABLE dst (id int PRIMARY KEY CHECK (id % 10 <> 0), "+strings.Join(defs, ", ")+")",
		"INSERT INTO src SELECT g, "+strings.Join(exprs, ", ")+" FROM generate_series(1, 100) g")
	r := cli(t, "start", "--source", db, "--job", "shown", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "50")
	if r.code != 3 {
		t.Fatalf("want exit 3 (done, rows failed), got %s", r)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM backfill.failed_rows WHERE job = 'shown' AND source_row ? 'unrenderable'"); n != 0 {
		t.Errorf("%d failed rows have no copy of their source row: %s", n,
			queryString(t, db, "SELECT source_row::text FROM backfill.failed_rows WHERE job = 'shown' AND source_row ? 'unrenderable' LIMIT 1"))
	}
	for i, c := range cols {
		q := fmt.Sprintf(`SELECT count(*) FROM backfill.failed_rows f JOIN src s ON s.id = (f.key->>0)::int
			WHERE f.job = 'shown' AND jsonb_typeof(f.source_row->'%s') = 'string' AND %s`, c.name, same[i])
		if n := queryInt(t, db, "SELECT count(*) FROM backfill.failed_rows WHERE job = 'shown'"); n != 10 {
			t.Fatalf("%d failed rows, want 10", n)
		}
		var shown string
		if err := connect(t, db).QueryRow(context.Background(), fmt.Sprintf(
			"SELECT coalesce((SELECT (source_row->'%s')::text FROM backfill.failed_rows WHERE job = 'shown' LIMIT 1), 'none')", c.name)).Scan(&shown); err != nil {
			t.Fatal(err)
		}
		var n int64
		err := connect(t, db).QueryRow(context.Background(), q).Scan(&n)
		if err != nil || n != 10 {
			t.Errorf("%s (%s): %d of 10 failed rows show it as its text (err %v); one shows %s", c.name, c.typ, n, err, shown)
		}
	}
}

// TestDirectCopyWritesWhatInsertWrites: for destinations whose features
// COPY and INSERT might honour differently, a job writes what INSERT …
// SELECT … ON CONFLICT DO NOTHING writes into a twin table (the oracle),
// and counts the rows it skipped as skipped. Rows of the source are
// 1..300; the destination holds a few rows beforehand where a case says.
func TestDirectCopyWritesWhatInsertWrites(t *testing.T) {
	cases := []struct {
		name  string
		setup []string // %[1]s is the table
	}{
		{"before trigger skips and changes rows", []string{
			"CREATE TABLE %[1]s (id int PRIMARY KEY, name text, at timestamptz, n numeric)",
			`CREATE FUNCTION %[1]s_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
				IF NEW.id %% 7 = 0 THEN RETURN NULL; END IF; NEW.name := upper(NEW.name); RETURN NEW; END $$`,
			"CREATE TRIGGER t BEFORE INSERT ON %[1]s FOR EACH ROW EXECUTE FUNCTION %[1]s_f()"}},
		{"unique index on another column, rows already there", []string{
			"CREATE TABLE %[1]s (id int PRIMARY KEY, name text UNIQUE, at timestamptz, n numeric)",
			"INSERT INTO %[1]s VALUES (1000, 'name 5', NULL, NULL), (1001, 'name 150', NULL, NULL)"}},
		{"identity always and a default not written", []string{
			"CREATE TABLE %[1]s (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, at timestamptz, n numeric, extra text DEFAULT 'dflt')"}},
		{"row-level security", []string{
			"CREATE TABLE %[1]s (id int PRIMARY KEY, name text, at timestamptz, n numeric)",
			"ALTER TABLE %[1]s ENABLE ROW LEVEL SECURITY", "ALTER TABLE %[1]s FORCE ROW LEVEL SECURITY",
			"CREATE POLICY p ON %[1]s USING (true) WITH CHECK (true)"}},
		{"partitioned", []string{
			"CREATE TABLE %[1]s (id int PRIMARY KEY, name text, at timestamptz, n numeric) PARTITION BY RANGE (id)",
			"CREATE TABLE %[1]s_a PARTITION OF %[1]s FOR VALUES FROM (1) TO (101)",
			"CREATE TABLE %[1]s_b PARTITION OF %[1]s FOR VALUES FROM (101) TO (1000)"}},
		{"rows already there in some ranges", []string{
			"CREATE TABLE %[1]s (id int PRIMARY KEY, name text, at timestamptz, n numeric)",
			"INSERT INTO %[1]s SELECT g, 'old', NULL, NULL FROM generate_series(1, 300, 37) g"}},
		// the key the rows there have is not the key a row gets: a key the
		// destination holds is no conflict, and no row may be left out
		{"rows already there, and a before trigger that moves keys", []string{
			"CREATE TABLE %[1]s (id int PRIMARY KEY, name text, at timestamptz, n numeric)",
			"INSERT INTO %[1]s SELECT g, 'old', NULL, NULL FROM generate_series(5, 300, 40) g",
			`CREATE FUNCTION %[1]s_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
				NEW.id := NEW.id + 100000; RETURN NEW; END $$`,
			"CREATE TRIGGER t BEFORE INSERT ON %[1]s FOR EACH ROW EXECUTE FUNCTION %[1]s_f()"}},
		{"rows already there, and a before trigger on a partition", []string{
			"CREATE TABLE %[1]s (id int PRIMARY KEY, name text, at timestamptz, n numeric) PARTITION BY RANGE (id)",
			"CREATE TABLE %[1]s_a PARTITION OF %[1]s FOR VALUES FROM (1) TO (100000)",
			"CREATE TABLE %[1]s_b PARTITION OF %[1]s FOR VALUES FROM (100000) TO (1000000)",
			"INSERT INTO %[1]s SELECT g, 'old', NULL, NULL FROM generate_series(5, 300, 40) g",
			`CREATE FUNCTION %[1]s_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
				IF NEW.id < 100 THEN NEW.id := NEW.id + 50000; END IF; RETURN NEW; END $$`, // within the partition
			"CREATE TRIGGER t BEFORE INSERT ON %[1]s_a FOR EACH ROW EXECUTE FUNCTION %[1]s_f()"}},
	}
	db := pgtest.NewDatabase(t)
	sql(t, db, `CREATE TABLE src AS SELECT g AS id, 'name ' || g AS name,
		timestamptz '2024-01-01 00:00:00.5+00' + g * interval '1 day' AS at, g / 7.0 AS n FROM generate_series(1, 300) g`,
		"ALTER TABLE src ADD PRIMARY KEY (id)")
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst, want := fmt.Sprintf("dst_%d", i), fmt.Sprintf("want_%d", i)
			for _, table := range []string{dst, want} {
				for _, s := range c.setup {
					sql(t, db, fmt.Sprintf(s, table))
				}
			}
			before := queryInt(t, db, "SELECT count(*) FROM "+dst)
			insert := "INSERT INTO %s (id, name, at, n)"
			if strings.Contains(c.name, "identity") {
				insert += " OVERRIDING SYSTEM VALUE"
			}
			sql(t, db, fmt.Sprintf(insert+" SELECT id, name, at, n FROM src ON CONFLICT DO NOTHING", want))
			job := fmt.Sprintf("oracle_%d", i)
			if strings.Contains(c.name, "trigger that moves keys") {
				// and the rehearsal says why no row is left out
				r := mustSucceed(t, "dry-run", "--source", db, "--job", job, "--from", "src", "--to", dst, "--sample-chunks", "1")
				if !strings.Contains(r.stdout, "BEFORE INSERT row trigger on") {
					t.Fatalf("dry-run does not say that a trigger keeps rows in ranges that hold some from the direct COPY:\n%s", r.stdout)
				}
			}
			mustSucceed(t, "start", "--source", db, "--job", job, "--from", "src", "--to", dst, "--rate", "0", "--chunk-size", "40")
			assertSameRows(t, db, want, db, dst)
			written := queryInt(t, db, "SELECT count(*) FROM "+dst) - before
			if s := status(t, db, job); s.RowsInserted != written || s.RowsSkipped != 300-written || s.RowsFailed != 0 {
				t.Fatalf("%d rows written, %d not: status %+v", written, 300-written, s)
			}
		})
	}
}

// TestDirectCopyAroundANullKeyPart: a destination whose unique key has a
// nullable column may hold a row with a NULL part inside a chunk's range;
// the range probe lists it, no source key equals it, and the job copies
// as INSERT … ON CONFLICT DO NOTHING does.
func TestDirectCopyAroundANullKeyPart(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db, "CREATE TABLE src (a int, b int, v text, PRIMARY KEY (a, b))",
		"INSERT INTO src SELECT g / 3, g % 3, 'v' || g FROM generate_series(0, 299) g")
	for _, table := range []string{"dst", "want"} {
		sql(t, db, "CREATE TABLE "+table+" (a int, b int, v text, UNIQUE (a, b))",
			"INSERT INTO "+table+" VALUES (50, NULL, 'old'), (51, 1, 'old'), (52, NULL, 'old')")
	}
	sql(t, db, "INSERT INTO want SELECT * FROM src ON CONFLICT DO NOTHING")
	r := mustSucceed(t, "start", "--source", db, "--job", "nulls", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "40",
		"--log-level", "debug")
	assertSameRows(t, db, "want", db, "dst")
	if s := status(t, db, "nulls"); s.RowsInserted != 299 || s.RowsSkipped != 1 || s.ChunksDirect == 0 {
		t.Fatalf("status %+v; want 299 inserted, 1 skipped, the chunks direct", s)
	}
	if !strings.Contains(r.stderr, `"skipped":1,`) {
		t.Fatalf("no chunk went around the row already there:\n%s", r.stderr)
	}
}

// TestRawValuesMeetTheDestinationsDomainsAndTypmods: values that travel
// raw into a domain with a CHECK, a narrower varchar, varbit and numeric,
// and arrays of them, fail their rows as INSERT would (recorded, never cut
// to fit); the rest arrive whole.
func TestRawValuesMeetTheDestinationsDomainsAndTypmods(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE DOMAIN small AS numeric(6,2) CHECK (VALUE < 1000)",
		"CREATE DOMAIN code5 AS varchar(5) CHECK (VALUE <> 'bad')",
		"CREATE TABLE src (id int PRIMARY KEY, amount numeric, code varchar(10), codes varchar(10)[], flags varbit(10), n numeric(12,4))",
		"CREATE TABLE dst (id int PRIMARY KEY, amount small, code code5, codes varchar(5)[], flags varbit(5), n numeric(8,2))",
		`INSERT INTO src SELECT g,
			CASE WHEN g % 25 = 1 THEN 5000 ELSE g + 0.125 END,
			CASE WHEN g % 25 = 2 THEN 'bad' WHEN g % 25 = 3 THEN 'toolong' || g ELSE 'c' || g % 1000 END,
			CASE WHEN g % 25 = 4 THEN ARRAY['ok', 'toolong'] ELSE ARRAY['a', NULL] END,
			CASE WHEN g % 25 = 5 THEN B'1010101010' ELSE B'101' END,
			CASE WHEN g % 25 = 6 THEN 12345678.9 ELSE g / 7.0 END
		 FROM generate_series(1, 500) g`)
	r := cli(t, "start", "--source", db, "--job", "narrow", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "50")
	if r.code != 3 {
		t.Fatalf("want exit 3 (done, rows failed), got %s", r)
	}
	const bad = 6 * 20
	if s := status(t, db, "narrow"); s.State != "done" || s.RowsFailed != bad || s.RowsInserted != 500-bad {
		t.Fatalf("want %d failed and %d inserted, got %+v", bad, 500-bad, s)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM backfill.failed_rows WHERE job = 'narrow' AND (key->>0)::int % 25 BETWEEN 1 AND 6`); n != bad {
		t.Fatalf("%d of the failed rows are the %d bad ones", n, bad)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM dst JOIN src USING (id) WHERE dst.amount = round(src.amount, 2)
		AND dst.code = src.code AND dst.codes = src.codes::varchar(5)[] AND dst.flags = src.flags AND dst.n = round(src.n, 2)`); n != 500-bad {
		t.Fatalf("%d of the %d good rows arrived as INSERT writes them", n, 500-bad)
	}
}
