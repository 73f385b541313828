package integration_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/internal/pgtest"
)

// Session defaults that make two databases print and read text as
// differently as PostgreSQL lets them: an engine that relied on either
// side's defaults would move values wrongly. array_nulls and xmloption
// change only how text is read, so they are set where it is read.
// (lc_monetary can only be set to a locale the server has; this machine
// has C and C.utf8, which format money alike.)
var (
	sourceDefaults = map[string]string{
		"TimeZone": "Asia/Kathmandu", "DateStyle": "SQL, DMY", "IntervalStyle": "sql_standard",
		"extra_float_digits": "-3", "bytea_output": "escape", "lc_monetary": "C.utf8",
	}
	destDefaults = map[string]string{
		"TimeZone": "America/St_Johns", "DateStyle": "Postgres, YMD", "IntervalStyle": "iso_8601",
		"extra_float_digits": "0", "bytea_output": "hex", "lc_monetary": "C",
		"array_nulls": "off", "xmloption": "document",
	}
	// normalSession is how the tests read both sides to compare them:
	// settings under which every built-in type prints without loss, the
	// same for both databases, and unlike backfill's own.
	normalSession = map[string]string{
		"TimeZone": "Pacific/Chatham", "DateStyle": "ISO, YMD", "IntervalStyle": "iso_8601",
		"extra_float_digits": "3", "bytea_output": "hex", "lc_monetary": "C",
		"array_nulls": "on", "xmloption": "content", "client_encoding": "UTF8",
	}
)

// databaseWithDefaults makes a database and sets its session defaults.
func databaseWithDefaults(t *testing.T, defaults map[string]string) string {
	t.Helper()
	db := pgtest.NewDatabase(t)
	conn := connect(t, db)
	for _, name := range slices.Sorted(maps.Keys(defaults)) {
		q := fmt.Sprintf(`DO $$ BEGIN EXECUTE format('ALTER DATABASE %%I SET %s = %%L', current_database(), %s); END $$`,
			name, quoteLiteral(defaults[name]))
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("set %s for the database: %v", name, err)
		}
	}
	// a new session must see them, or the test would prove nothing
	fresh := connect(t, db)
	for name, want := range defaults {
		var got string
		if err := fresh.QueryRow(context.Background(), "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !strings.EqualFold(got, want) {
			t.Fatalf("database default %s is %q, want %q", name, got, want)
		}
	}
	return db
}

// normalConn connects with normalSession's settings.
func normalConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	return connectWith(t, url, normalSession)
}

// normalSQL runs statements under normalSession, so that their literals
// mean the same on either side.
func normalSQL(t *testing.T, url string, statements ...string) {
	t.Helper()
	conn := normalConn(t, url)
	for _, s := range statements {
		if _, err := conn.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// textRows returns every row of query as text, under normalSession.
func textRows(t *testing.T, url, query string) [][]*string {
	t.Helper()
	rows, err := normalConn(t, url).Query(context.Background(), query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]*string, error) {
		vals := make([]*string, len(r.FieldDescriptions()))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		return vals, r.Scan(ptrs...)
	})
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

// userTypes are the types of the user's that the matrix uses, in both
// databases.
var userTypes = []string{
	"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
	"CREATE DOMAIN positive AS numeric CHECK (VALUE > 0)",
	"CREATE DOMAIN shortcode AS varchar(5) CHECK (VALUE <> 'bad')",
	"CREATE TYPE reading AS (at timestamptz, label text, code char(3), value numeric)",
	"CREATE TYPE pair AS (at timestamptz, label text)",
}

// typeColumn is one column of the type matrix: its type and the values
// its rows take in turn, as SQL expressions read under normalSession.
type typeColumn struct {
	name, typ string
	values    []string
}

var typeMatrix = []typeColumn{
	{"c_int2", "smallint", []string{"-32768", "32767", "0", "NULL"}},
	{"c_int4", "integer", []string{"-2147483648", "2147483647", "NULL"}},
	{"c_int8", "bigint", []string{"-9223372036854775808", "9223372036854775807", "NULL"}},
	{"c_numeric", "numeric", []string{"'NaN'", "'Infinity'", "'-Infinity'", "'1e-40'", "'123456789012345678901234567890123456789'",
		"'-0.000000000000000000000000000000000000001'", "'0.10'", "NULL"}},
	{"c_numeric_10_2", "numeric(10,2)", []string{"'12345678.91'", "'-0.01'", "'NaN'", "NULL"}},
	{"c_real", "real", []string{"'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "'1e-45'", "'1.17549435e-38'", "'3.4028235e+38'", "'0.1'", "NULL"}},
	{"c_double", "double precision", []string{"'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "'5e-324'", "'2.2250738585072014e-308'",
		"'1.7976931348623157e+308'", "'0.1'", "'0.3333333333333333'", "NULL"}},
	{"c_money", "money", []string{"'-92233720368547758.08'", "'92233720368547758.07'", "'0'", "'1234.56'", "NULL"}},
	{"c_char_6", "char(6)", []string{"'ab'", "'000042'", "'abcdef'", "' x'", "''", "'ä€𝄞'", "NULL"}},
	{"c_bpchar", "bpchar", []string{"'ab  '", "''", "NULL"}},
	{"c_varchar_10", "varchar(10)", []string{"'naïve ☃'", "''", "'trail  '", "NULL"}},
	{"c_varchar", "varchar", []string{"'x'", "NULL"}},
	{"c_text", "text", []string{"''", `E'line\nbreak\ttab'`, "'𝄞 non-BMP'", `'quote''s "dq"'`, `'back\slash'`, "'NULL'", "NULL"}},
	{"c_char1", `"char"`, []string{"'a'", "'Z'", `'\200'`, "''", "NULL"}},
	{"c_name", "name", []string{"'a name'", "repeat('n', 63)", "NULL"}},
	{"c_bytea", "bytea", []string{`'\x'`, "NULL", `'\x00ff10'`, "decode(repeat('ab5c', 50), 'hex')"}},
	{"c_bit_5", "bit(5)", []string{"B'10101'", "B'00000'", "NULL"}},
	{"c_varbit_8", "varbit(8)", []string{"B''", "B'1'", "B'10101010'", "NULL"}},
	{"c_varbit", "bit varying", []string{"B'1'", "NULL"}},
	{"c_bool", "boolean", []string{"true", "false", "NULL"}},
	{"c_date", "date", []string{"'infinity'", "'-infinity'", "'4713-01-01 BC'", "'0044-03-15 BC'", "'2024-02-29'", "'5874897-12-31'", "NULL"}},
	{"c_time_3", "time(3)", []string{"'00:00:00'", "'23:59:59.999'", "'24:00:00'", "NULL"}},
	{"c_time", "time", []string{"'12:34:56.789012'", "NULL"}},
	{"c_timetz", "timetz", []string{"'12:34:56.789012+05:45'", "'00:00:00+15:59'", "'23:59:59.999999-15:59'", "'12:00:00+01:02:03'", "NULL"}},
	{"c_timestamp_3", "timestamp(3)", []string{"'2024-01-01 00:00:00.123'", "'infinity'", "'-infinity'", "'0044-03-15 12:00:00 BC'", "NULL"}},
	{"c_timestamp", "timestamp", []string{"'294276-12-31 23:59:59.999999'", "'4713-01-01 00:00:00 BC'", "'2000-01-01 00:00:00'", "NULL"}},
	{"c_timestamptz", "timestamptz", []string{"'infinity'", "'-infinity'", "'2024-03-10 02:30:00.000001+00'", "'1900-01-01 00:00:00+00'",
		"'4713-01-01 00:00:00+00 BC'", "'294276-12-31 23:59:59.999999+00'", "NULL"}},
	{"c_timestamptz_0", "timestamptz(0)", []string{"'2024-01-01 12:34:56+05:45'", "NULL"}},
	{"c_interval", "interval", []string{"'1 year 2 mons -3 days +04:05:06.789'", "'-1 days -00:00:01'", "'178000000 years'", "'-178000000 years'",
		"'0'", "'1 day -1 second'", "'-1 year'", "NULL"}},
	{"c_interval_2", "interval(2)", []string{"'1.25 seconds'", "NULL"}},
	{"c_uuid", "uuid", []string{"'00000000-0000-0000-0000-000000000000'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "NULL"}},
	{"c_inet", "inet", []string{"'192.168.0.1/24'", "'::1'", "'2001:db8::1/64'", "'10.0.0.1'", "'::ffff:1.2.3.4'", "NULL"}},
	{"c_cidr", "cidr", []string{"'10.0.0.0/8'", "'2001:db8::/32'", "NULL"}},
	{"c_macaddr", "macaddr", []string{"'08:00:2b:01:02:03'", "NULL"}},
	{"c_macaddr8", "macaddr8", []string{"'08:00:2b:01:02:03:04:05'", "'08:00:2b:ff:fe:01:02:03'", "NULL"}},
	{"c_point", "point", []string{"'(1.5,-0)'", "'(0.1,1e-300)'", "'(0.3333333333333333,5e-324)'", "NULL"}},
	{"c_line", "line", []string{"'{1,-1,0}'", "'{0.1,2,-3.5}'", "NULL"}},
	{"c_lseg", "lseg", []string{"'[(0,0),(1,1)]'", "'[(0.1,0.2),(0.3,0.7)]'"}},
	{"c_box", "box", []string{"'(1,1),(0,0)'", "'(0.1,0.2),(-0.3,-0.4)'", "NULL"}},
	{"c_path", "path", []string{"'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1),(0.1,0.7))'", "NULL"}},
	{"c_polygon", "polygon", []string{"'((0,0),(1,1),(1,0))'", "'((0.1,0.2),(0.3,0.4),(0.5,0.6),(0.7,0.8))'", "NULL"}},
	{"c_circle", "circle", []string{"'<(0,0),1.5>'", "'<(0.1,-0.2),0.3333333333333333>'", "NULL"}},
	{"c_tsvector", "tsvector", []string{"'a fat cat:1A,2B sat'", `$$'quoted''s':3 'a b'$$`, "''", "NULL"}},
	{"c_tsquery", "tsquery", []string{"'fat & (rat | cat) & !dog'", "'super:*'", `$$'a b' <-> c$$`, "NULL"}},
	// json keeps its text byte for byte: whitespace, key order, duplicates
	{"c_json", "json", []string{`' {"b": 1,  "a": [1, 2], "a": "dup"} '`, `'"x"'`, "'null'", "'1.000000000000000000001'",
		`'{"é": "\u00e9", "s": "\ud83d\ude00"}'`, "NULL"}},
	{"c_jsonb", "jsonb", []string{`'{"b": 1, "a": [1, 2.50]}'`, "'null'", `'"s"'`, "'[1e400]'", `'{"a": {"nested": [null, true]}}'`, "NULL"}},
	{"c_xml", "xml", []string{`'<a b="1">t&amp;x</a>'`, "'text<b/>tail'", `'<?xml version="1.0"?><r/>'`, "NULL"}},
	{"c_int4range", "int4range", []string{"'[1,10)'", "'empty'", "'(,5]'", "'(,)'", "NULL"}},
	{"c_int8range", "int8range", []string{"'[-9223372036854775808,9223372036854775807)'", "NULL"}},
	{"c_numrange", "numrange", []string{"'[1.5,2.50]'", "'[0.1,)'", "NULL"}},
	{"c_tsrange", "tsrange", []string{"'[2024-01-01 00:00,2024-01-02)'", "'[-infinity,infinity]'", "NULL"}},
	{"c_tstzrange", "tstzrange", []string{"'[2024-01-01 00:00+00,infinity)'", "'(2024-03-10 02:30:00.000001+05:45,2024-03-11 00:00+00]'", "NULL"}},
	{"c_daterange", "daterange", []string{"'[2024-01-01,2024-02-01)'", `'["0044-03-15 BC",2024-01-01)'`, "NULL"}},
	{"c_int4multirange", "int4multirange", []string{"'{[1,3),[5,7)}'", "'{}'", "NULL"}},
	{"c_int8multirange", "int8multirange", []string{"'{[1,2)}'", "NULL"}},
	{"c_nummultirange", "nummultirange", []string{"'{[1.5,2.5]}'", "NULL"}},
	{"c_tsmultirange", "tsmultirange", []string{"'{[2024-01-01,2024-01-02)}'", "NULL"}},
	{"c_tstzmultirange", "tstzmultirange", []string{"'{[2024-01-01 00:00+00,2024-01-02 00:00+05:45)}'", "NULL"}},
	{"c_datemultirange", "datemultirange", []string{"'{[2024-01-01,2024-01-05),[2024-02-01,)}'", "NULL"}},
	{"c_text_arr", "text[]", []string{`ARRAY[NULL, 'NULL', 'a"b', 'c,d', 'e\f', '𝄞', '', ' sp ', '{}']`, "'{}'", "NULL"}},
	{"c_text_arr2", "text[][]", []string{`ARRAY[ARRAY['a', NULL], ARRAY['"', '\']]`, `ARRAY[ARRAY['NULL', 'x,y'], ARRAY['{', '}']]`}},
	{"c_int_arr", "integer[]", []string{"ARRAY[1, NULL, -2147483648]", "'{{1,2},{3,NULL}}'", "'[0:1]={7,8}'", "NULL"}},
	{"c_char_6_arr", "char(6)[]", []string{"ARRAY['a', 'bc ', 'abcdef', NULL]", "'{}'", "NULL"}},
	{"c_numeric_arr", "numeric[]", []string{"'{NaN,1e-40,Infinity,123456789012345678901234567890123456789}'", "NULL"}},
	{"c_real_arr", "real[]", []string{"'{-0,NaN,1e-45,0.1}'", "NULL"}},
	{"c_timestamptz_arr", "timestamptz[]", []string{"ARRAY['2024-01-01 00:00:00.000001+05:45'::timestamptz, 'infinity', NULL]", "NULL"}},
	{"c_bytea_arr", "bytea[]", []string{`ARRAY['\x00ff'::bytea, NULL, '\x']`, "NULL"}},
	{"c_json_arr", "json[]", []string{`ARRAY[' {"a" : 1} '::json, NULL]`, "NULL"}},
	{"c_mood", "mood", []string{"'sad'", "'happy'", "NULL"}},
	{"c_mood_arr", "mood[]", []string{"ARRAY['sad', NULL]::mood[]", "NULL"}},
	{"c_positive", "positive", []string{"'0.001'", "'1e30'", "NULL"}},
	{"c_shortcode", "shortcode", []string{"'ab'", "'abcde'", "NULL"}},
	{"c_reading", "reading", []string{`ROW('2024-01-01 00:00:00.5+05:45', 'a,b"c\', 'x', 'NaN')::reading`, "ROW(NULL, '', NULL, NULL)::reading", "NULL"}},
	{"c_pg_lsn", "pg_lsn", []string{"'0/0'", "'FFFFFFFF/FFFFFFFF'", "NULL"}},
	{"c_oid", "oid", []string{"0", "4294967295", "NULL"}},
	{"c_pg_snapshot", "pg_snapshot", []string{"'10:20:10,14,15'", "NULL"}},
	// raw arrays of the other built-in types, bounds other than 1, and the
	// rarer built-in types
	{"c_int_arr_bounds", "integer[]", []string{"'[2:3][-1:0]={{1,2},{3,NULL}}'", "'[-5:-5]={42}'", "NULL"}},
	{"c_interval_arr", "interval[]", []string{"ARRAY['1 year -2 days'::interval, NULL, '-178000000 years']", "NULL"}},
	{"c_range_arr", "int4range[]", []string{"ARRAY['[1,2)'::int4range, 'empty', NULL]", "NULL"}},
	{"c_varbit_arr", "varbit(8)[]", []string{"ARRAY[B'1', B'10101010', NULL]", "NULL"}},
	{"c_money_arr", "money[]", []string{"ARRAY['1234.56'::money, NULL, '-0.01']", "NULL"}},
	{"c_date_arr", "date[]", []string{"ARRAY['infinity'::date, '0044-03-15 BC', NULL]", "NULL"}},
	{"c_numeric_10_2_arr", "numeric(10,2)[]", []string{"ARRAY[1.5, NULL, 'NaN']::numeric(10,2)[]", "NULL"}},
	{"c_name_arr", "name[]", []string{`ARRAY['a b'::name, NULL, '"q"']`, "NULL"}},
	{"c_timetz_arr", "timetz[]", []string{"ARRAY['12:00:00+01:02:03'::timetz, NULL]", "NULL"}},
	{"c_tsvector_arr", "tsvector[]", []string{"ARRAY['a:1A b'::tsvector, NULL]", "NULL"}},
	{"c_macaddr8_arr", "macaddr8[]", []string{"ARRAY['08:00:2b:01:02:03:04:05'::macaddr8]", "NULL"}},
	{"c_jsonb_arr", "jsonb[]", []string{`ARRAY['{"é": [1, 2.50]}'::jsonb, NULL, 'null']`, "NULL"}},
	{"c_jsonpath", "jsonpath", []string{`'$.a[*] ? (@ > 1)'`, `'strict $."k é"'`, "NULL"}},
	{"c_xid8", "xid8", []string{"'18446744073709551615'", "'0'", "NULL"}},
	{"c_int2vector", "int2vector", []string{"'1 2 -3'", "''", "NULL"}},
	{"c_oidvector", "oidvector", []string{"'1 4294967295'", "''", "NULL"}},
	{"c_pg_lsn_arr", "pg_lsn[]", []string{"ARRAY['16/B374D848'::pg_lsn, NULL]", "NULL"}},
	{"c_regclass", "regclass", []string{"'pg_class'", "NULL"}},
	{"c_regtype_arr", "regtype[]", []string{"ARRAY['integer'::regtype, 'text']", "NULL"}},
}

// TestTypeMatrix copies a table with a column of every type a user can put
// in one, each through its edge values, across two databases whose session
// defaults differ in every setting that shapes text; each value must arrive
// exactly as it left, json byte for byte.
func TestTypeMatrix(t *testing.T) {
	src, dst := databaseWithDefaults(t, sourceDefaults), databaseWithDefaults(t, destDefaults)
	var cols []string
	for _, c := range typeMatrix {
		cols = append(cols, fmt.Sprintf("%s %s", c.name, c.typ))
	}
	ddl := "CREATE TABLE matrix (id int PRIMARY KEY, " + strings.Join(cols, ", ") + ")"
	const rows = 60
	fill := []string{fmt.Sprintf("INSERT INTO matrix (id) SELECT g FROM generate_series(1, %d) g", rows)}
	for _, c := range typeMatrix {
		var cases []string
		for i, v := range c.values {
			cases = append(cases, fmt.Sprintf("WHEN %d THEN (%s)::%s", i, v, c.typ))
		}
		fill = append(fill, fmt.Sprintf("UPDATE matrix SET %s = CASE id %% %d %s END", c.name, len(c.values), strings.Join(cases, " ")))
	}
	normalSQL(t, src, append(append(slices.Clone(userTypes), ddl), fill...)...)
	normalSQL(t, dst, append(slices.Clone(userTypes), ddl)...)

	mustSucceed(t, "start", "--source", src, "--dest", dst, "--job", "matrix", "--from", "matrix", "--to", "matrix",
		"--rate", "0", "--chunk-size", "7")
	if s := status(t, dst, "matrix"); s.State != "done" || s.RowsInserted != rows || s.RowsFailed != 0 {
		t.Fatalf("want %d rows inserted and none failed, got %+v", rows, s)
	}

	sel := "SELECT id::text"
	for _, c := range typeMatrix {
		sel += ", " + c.name + "::text"
	}
	sel += " FROM matrix ORDER BY id"
	want, got := textRows(t, src, sel), textRows(t, dst, sel)
	if len(got) != len(want) {
		t.Fatalf("destination has %d rows, source %d", len(got), len(want))
	}
	for r := range want {
		for i, c := range typeMatrix {
			w, g := want[r][i+1], got[r][i+1]
			if (w == nil) != (g == nil) || w != nil && *w != *g {
				t.Errorf("%s (%s), row %s: source %s, destination %s", c.name, c.typ, *want[r][0], show(w), show(g))
			}
		}
	}
	whole := "SELECT m::text FROM matrix m ORDER BY id"
	w, g := textRows(t, src, whole), textRows(t, dst, whole)
	for r := range w {
		if *w[r][0] != *g[r][0] {
			t.Errorf("row %d differs as a whole:\nsource      %s\ndestination %s", r+1, *w[r][0], *g[r][0])
		}
	}
}

func show(s *string) string {
	if s == nil {
		return "NULL"
	}
	return fmt.Sprintf("%q", *s)
}

// keyCase is a key type of the key matrix: the key columns' DDL, the fill
// expressions over g, and how SQL compares a destination row with a stored
// key (%[1]s is the stored key's text[]).
type keyCase struct {
	name, ddl, fill, keys, cast string
}

var keyMatrix = []keyCase{
	{"char(8)", "k char(8) PRIMARY KEY",
		"CASE WHEN g % 3 = 0 THEN lpad(g::text, 8, '0') ELSE 'k' || g END",
		"d.k", "%[1]s[1]::bpchar"},
	// en-x-icu sorts a < ä < B < Z, C sorts B < Z < a < ä: ranges must be
	// ordered as the column's collation orders them
	{"text collate en-x-icu", `k text COLLATE "en-x-icu" PRIMARY KEY`,
		"(ARRAY['a', 'B', 'ä', 'Z'])[g % 4 + 1] || g",
		"d.k", "%[1]s[1]::text"},
	{"numeric", "k numeric PRIMARY KEY",
		"CASE WHEN g % 2 = 0 THEN g / 7.0 ELSE g * 1e-30 END",
		"d.k", "%[1]s[1]::numeric"},
	{"bytea", "k bytea PRIMARY KEY",
		`CASE WHEN g = 1 THEN '\x'::bytea ELSE substr(decode(md5(g::text), 'hex'), 1, g % 16 + 1) || int4send(g) END`,
		"d.k", "%[1]s[1]::bytea"},
	{"uuid", "k uuid PRIMARY KEY", "md5(g::text)::uuid", "d.k", "%[1]s[1]::uuid"},
	{"timestamptz", "k timestamptz PRIMARY KEY",
		"CASE g WHEN 1 THEN '-infinity' WHEN 3000 THEN 'infinity' ELSE timestamptz '2020-02-29 23:59:59.999999+05:45' + g * interval '1.000001 s' END",
		"d.k", "%[1]s[1]::timestamptz"},
	{"composite (timestamptz, text)", "at timestamptz NOT NULL, label text NOT NULL, PRIMARY KEY (at, label)",
		"timestamptz '2024-01-01 00:00:00.5+00' + (g % 50) * interval '1 hour', 'v' || g",
		"(d.at, d.label)", "(%[1]s[1]::timestamptz, %[1]s[2]::text)"},
	{"composite type", "k pair PRIMARY KEY",
		"ROW(timestamptz '2024-01-01 00:00:00.5+00' + (g % 50) * interval '1 hour', 'v,\"' || g)::pair",
		"d.k", "%[1]s[1]::pair"},
}

// TestKeyMatrix pages by every key type of keyMatrix across two databases
// with different session defaults: a run killed with SIGKILL and resumed,
// then every third chunk undone (rows and checkpoint row, as if in flight
// at a kill) and resumed again, so the page queries, the resume's gaps and
// the sort of committed ranges all compare keys of the type. The
// destination must equal the source and the counters one clean run's.
func TestKeyMatrix(t *testing.T) {
	const n, chunk = 3000, 100
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("random seed %d", seed)
	src, dst := databaseWithDefaults(t, sourceDefaults), databaseWithDefaults(t, destDefaults)
	normalSQL(t, src, userTypes...)
	normalSQL(t, dst, userTypes...)
	for i, c := range keyMatrix {
		t.Run(c.name, func(t *testing.T) {
			table, job := fmt.Sprintf("keys_%d", i), fmt.Sprintf("keys_%d", i)
			ddl := fmt.Sprintf("CREATE TABLE %s (%s, v text, n numeric)", table, c.ddl)
			normalSQL(t, src, ddl, fmt.Sprintf("INSERT INTO %s SELECT %s, 'v' || g, g / 3.0 FROM generate_series(1, %d) g", table, c.fill, n))
			normalSQL(t, dst, ddl)
			args := []string{"--source", src, "--dest", dst, "--job", job, "--workers", "3"}

			delay := time.Duration(rng.Int64N(int64(200 * time.Millisecond)))
			r := runUntilKilled(t, dst, job, 3, delay, syscall.SIGKILL,
				append([]string{"start", "--from", table, "--to", table, "--chunk-size", fmt.Sprint(chunk), "--rate", "3000"}, args...)...)
			if r.code != -1 {
				t.Fatalf("want death by signal, got %s", r)
			}
			if s := status(t, dst, job); s.RowsRead >= n {
				t.Fatalf("the kill came after the job finished: %+v", s)
			}
			mustSucceed(t, append([]string{"resume", "--rate", "0"}, args...)...)
			assertSameText(t, src, dst, table)
			if s := status(t, dst, job); s.State != "done" || s.RowsInserted != n || s.RowsSkipped != 0 || s.ChunksDone != n/chunk {
				t.Fatalf("after a kill and a resume: want %d rows inserted in %d chunks, none skipped, got %+v", n, n/chunk, s)
			}

			normalSQL(t, dst, undoEveryThirdChunk(job, table, c.keys, c.cast)...)
			if left := queryInt(t, dst, "SELECT count(*) FROM "+table); left >= n*3/4 || left < n/2 {
				t.Fatalf("undoing a third of the chunks left %d of %d rows", left, n)
			}
			mustSucceed(t, append([]string{"resume", "--rate", "0"}, args...)...)
			assertSameText(t, src, dst, table)
			if s := status(t, dst, job); s.State != "done" || s.RowsInserted != n || s.RowsSkipped != 0 || s.ChunksDone != n/chunk {
				t.Fatalf("after resuming the undone chunks: want %d rows inserted in %d chunks, none skipped, got %+v", n, n/chunk, s)
			}
		})
	}
}

// undoEveryThirdChunk returns the statements that delete every third
// committed chunk of job, its rows in table and its checkpoint row, as if
// they had been in flight at a kill. keys and cast let SQL compare a row
// of table (alias d) with a stored key: cast turns a text[] (%[1]s) back
// into the key's row.
func undoEveryThirdChunk(job, table, keys, cast string) []string {
	inGap := fmt.Sprintf("c.job = '%s' AND c.seq %% 3 = 1", job)
	return []string{
		fmt.Sprintf("DELETE FROM %s d USING backfill.chunks c WHERE %s AND (c.after_key IS NULL OR %s > %s) AND %s <= %s",
			table, inGap, keys, fmt.Sprintf(cast, "c.after_key"), keys, fmt.Sprintf(cast, "c.last_key")),
		"DELETE FROM backfill.chunks c WHERE " + inGap,
		fmt.Sprintf("UPDATE backfill.jobs SET state = 'interrupted' WHERE name = '%s'", job),
	}
}

// assertSameText compares two tables row by row as text, under one
// normalised session.
func assertSameText(t *testing.T, src, dst, table string) {
	t.Helper()
	q := fmt.Sprintf("SELECT t::text FROM %s t ORDER BY 1", table)
	want, got := textRows(t, src, q), textRows(t, dst, q)
	if len(got) != len(want) {
		t.Fatalf("%s: destination has %d rows, source %d", table, len(got), len(want))
	}
	for i := range want {
		if *want[i][0] != *got[i][0] {
			t.Fatalf("%s: row %d differs: source %s, destination %s", table, i, *want[i][0], *got[i][0])
		}
	}
}

// TestCharKeyCopiesEveryRow: a table keyed by char(8) copies all its rows.
// The key's type was once cut to char(1) in every cast, so the first page
// query matched nothing and the job ended done with no row copied.
func TestCharKeyCopiesEveryRow(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE src (code char(8) PRIMARY KEY, v text)",
		"CREATE TABLE dst (code char(8) PRIMARY KEY, v text)",
		"INSERT INTO src SELECT lpad(g::text, 8, '0'), 'v' || g FROM generate_series(1, 2500) g")
	mustSucceed(t, "start", "--source", db, "--job", "codes", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "100")
	if n := queryInt(t, db, "SELECT count(*) FROM dst"); n != 2500 {
		t.Fatalf("%d of 2500 rows copied", n)
	}
	assertSameRows(t, db, "src", db, "dst")
	if s := status(t, db, "codes"); s.State != "done" || s.RowsRead != 2500 || s.RowsInserted != 2500 || s.ChunksDone != 25 {
		t.Fatalf("status: %+v", s)
	}
	// Deleting destination rows and making verify find them is verify's
	// to test (its whole-range accounting).
}

// TestTypmodsAreTheDestinations: the destination's own typmods decide what
// fits, as INSERT … SELECT decides. A value too long for a narrower char(n)
// fails its row with 22001 and is recorded; it is never cut to fit, and
// every other row is written. bit(5), char(6) and char(6)[] copy whole.
func TestTypmodsAreTheDestinations(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE src (id int PRIMARY KEY, code char(10), codes char(10)[], flags bit(5), tag char(6), tags char(6)[])",
		"CREATE TABLE dst (id int PRIMARY KEY, code char(6), codes char(6)[], flags bit(5), tag char(6), tags char(6)[])",
		`INSERT INTO src SELECT g,
			CASE WHEN g % 100 = 0 THEN 'L' || g || 'xyz' ELSE 'c' || g END,
			CASE WHEN g % 100 = 50 THEN ARRAY['ok', 'toolong' || g] ELSE ARRAY['a' || g, NULL] END,
			(g % 32)::bit(5), lpad(g::text, 6, '0'), ARRAY[lpad(g::text, 6, '0'), 'x', NULL]
		 FROM generate_series(1, 1000) g`)
	r := cli(t, "start", "--source", db, "--job", "narrow", "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "100")
	if r.code != 3 || !strings.Contains(r.stderr, "value too long for type character(6)") {
		t.Fatalf("want exit 3 (done, rows failed) naming the type the values do not fit, got %s", r)
	}

	s := status(t, db, "narrow")
	if s.State != "done" || s.RowsFailed != 20 || s.RowsInserted != 980 {
		t.Fatalf("want 20 failed rows and 980 inserted, got %+v", s)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM backfill.failed_rows WHERE job = 'narrow' AND sqlstate = '22001'"); n != 20 {
		t.Fatalf("%d failed rows recorded with 22001 (value too long), want 20", n)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM backfill.failed_rows f JOIN src ON src.id = (f.key->>0)::int
		WHERE f.job = 'narrow' AND (src.id % 100 IN (0, 50))`); n != 20 {
		t.Fatalf("%d of the failed rows are the 20 too long ones", n)
	}
	// every row written is the source's, whole: nothing was cut to fit
	if n := queryInt(t, db, `SELECT count(*) FROM dst JOIN src USING (id)
		WHERE dst.code::text <> src.code::text OR dst.codes::text[] <> src.codes::text[] OR dst.flags <> src.flags
			OR dst.tag <> src.tag OR dst.tags::text <> src.tags::text OR length(dst.tag) <> 6`); n != 0 {
		t.Fatalf("%d rows differ from the source", n)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM dst WHERE id % 100 IN (0, 50)"); n != 0 {
		t.Fatalf("%d too long values were written anyway", n)
	}
}

// TestSpecPassesWhatItDoesNotRead: a spec's bare copies of columns of the
// same type travel untouched, as text, even of types the transform has no
// Go value for (ranges, macaddr8, bit(n)); the columns an expression reads
// are decoded beside them.
func TestSpecPassesWhatItDoesNotRead(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE src (id bigint PRIMARY KEY, name text, span tstzrange, spans int4multirange, mac macaddr8, flags bit(5), code char(6))",
		"CREATE TABLE dst (id bigint PRIMARY KEY, name text, name_hash text, span tstzrange, spans int4multirange, mac macaddr8, flags bit(5), code char(8))",
		`INSERT INTO src SELECT g, 'n' || g, tstzrange(timestamptz '2024-01-01 00:00:00.000001+00' + g * interval '1 s', NULL),
			int4multirange(int4range(g, g + 2), int4range(g + 5, NULL)), ('08:00:2b:01:02:03:04:' || lpad(to_hex(g % 256), 2, '0'))::macaddr8,
			(g % 32)::bit(5), lpad(g::text, 6, 'x')
		 FROM generate_series(1, 500) g`)
	spec := writeSpec(t, `job: passes
source:
  table: src
dest:
  table: dst
columns:
  id: id
  name: name
  name_hash: sha256(name)
  span: span
  spans: spans
  mac: mac
  flags: flags
  code: code
rate: 0
chunk_size: 64
`)
	mustSucceed(t, "start", "--config", spec, "--source", db)
	if n := queryInt(t, db, `SELECT count(*) FROM src JOIN dst USING (id)
		WHERE dst.name = src.name AND dst.name_hash = encode(sha256(convert_to(src.name, 'UTF8')), 'hex')
			AND dst.span = src.span AND dst.spans = src.spans AND dst.mac = src.mac AND dst.flags = src.flags
			AND dst.code = src.code AND length(dst.code) = 6`); n != 500 {
		t.Fatalf("%d of 500 rows copied exactly", n)
	}
}

// TestSpecBareCopyConvertsAsInsertSelect: a spec's bare copy into a column
// of another built-in type must convert as INSERT … SELECT does (and as a
// plain copy of the same tables does), not through the transform's Go
// values: char(4) 'ab' into text is 'ab', real 0.1 into numeric is 0.1,
// timestamptz infinity into date is infinity. The expected rows are
// INSERT … SELECT's, written beside by the database itself.
func TestSpecBareCopyConvertsAsInsertSelect(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		"CREATE TABLE src (id int PRIMARY KEY, name text, code char(4), ratio real, at timestamptz)",
		"CREATE TABLE dst (id int PRIMARY KEY, name text, code text, ratio numeric, at date)",
		"CREATE TABLE want (LIKE dst)",
		`INSERT INTO src SELECT g, 'n' || g, left('ab', 1 + g % 2), CASE WHEN g % 3 = 0 THEN 1e-40 ELSE 0.1 * g END,
			CASE WHEN g % 10 = 0 THEN 'infinity' ELSE timestamptz '2024-01-01 23:30:00+00' + g * interval '1 h' END
		 FROM generate_series(1, 100) g`,
		"INSERT INTO want SELECT id, upper(name), code, ratio, at FROM src")
	spec := writeSpec(t, `job: bare
source:
  table: src
dest:
  table: dst
columns:
  id: id
  name: upper(name)
  code: code
  ratio: ratio
  at: at
rate: 0
chunk_size: 32
`)
	r := cli(t, "start", "--config", spec, "--source", db)
	if r.code != 0 {
		t.Errorf("want exit 0, every row converts as INSERT … SELECT converts it, got %s", r)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM want FULL JOIN dst USING (id)
		WHERE dst IS NULL OR want IS NULL OR (want.name, want.code, want.ratio, want.at) IS DISTINCT FROM (dst.name, dst.code, dst.ratio, dst.at)`); n != 0 {
		t.Fatalf("%d of 100 rows differ from what INSERT … SELECT writes", n)
	}
}
