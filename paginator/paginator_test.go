package paginator

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestPageSQL(t *testing.T) {
	cases := []struct {
		name        string
		cfg         Config
		first, next string
		step        string
	}{
		{
			name:  "single key, bounded",
			cfg:   Config{Table: pgx.Identifier{"public", "users"}, Key: []KeyColumn{{"id", "bigint"}}, Columns: []ReadColumn{{Name: "id"}, {Name: "doc", AsText: true}}, ChunkSize: 10, Upper: []string{"99"}},
			first: `SELECT "src"."id"::text, "id", "doc" FROM "public"."users" AS src WHERE ("src"."id") <= ($2::text::bigint) ORDER BY "src"."id" LIMIT $1`,
			next:  `SELECT "src"."id"::text, "id", "doc" FROM "public"."users" AS src WHERE ("src"."id") > ($2::text::bigint) AND ("src"."id") <= ($3::text::bigint) ORDER BY "src"."id" LIMIT $1`,
		},
		{
			name:  "composite key, quoted names, where, no end",
			cfg:   Config{Table: pgx.Identifier{"Order Items"}, Key: []KeyColumn{{"Tenant", "text"}, {"n", "integer"}}, Columns: []ReadColumn{{Name: `a"b`}}, ChunkSize: 10, Where: "n > 0"},
			first: `SELECT "src"."Tenant"::text, "src"."n"::text, "a""b" FROM "Order Items" AS src WHERE (n > 0) ORDER BY "src"."Tenant", "src"."n" LIMIT $1`,
			next:  `SELECT "src"."Tenant"::text, "src"."n"::text, "a""b" FROM "Order Items" AS src WHERE ("src"."Tenant", "src"."n") > ($2::text::text, $3::text::integer) AND (n > 0) ORDER BY "src"."Tenant", "src"."n" LIMIT $1`,
			// the step ignores the predicate: it bounds the scan, not the rows
			step: `SELECT "src"."Tenant"::text, "src"."n"::text FROM "Order Items" AS src WHERE ("src"."Tenant", "src"."n") > ($2::text::text, $3::text::integer) ORDER BY "src"."Tenant", "src"."n" LIMIT 1 OFFSET $1 - 1`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := New(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			st := p.SQL()
			if st.FirstPage != c.first {
				t.Errorf("first page:\n got %s\nwant %s", st.FirstPage, c.first)
			}
			if st.NextPage != c.next {
				t.Errorf("next page:\n got %s\nwant %s", st.NextPage, c.next)
			}
			if st.Step != c.step {
				t.Errorf("step:\n got %s\nwant %s", st.Step, c.step)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{Table: pgx.Identifier{"t"}, Key: []KeyColumn{{"id", "int"}}}); err == nil {
		t.Error("chunk size 0 accepted")
	}
	if _, err := New(Config{Table: pgx.Identifier{"t"}, ChunkSize: 5}); err == nil {
		t.Error("no key accepted")
	}
}

func TestEncodeDistinguishesStartFromEmptyKey(t *testing.T) {
	seen := map[string][]string{}
	// PostgreSQL text cannot hold NUL, so a key part never contains the separator.
	for _, k := range [][]string{nil, {""}, {"", ""}, {"a", "b"}, {"ab"}, {"a,b"}} {
		e := KeyString(k)
		if prev, dup := seen[e]; dup && !(prev == nil && k == nil) {
			t.Errorf("keys %q and %q encode the same", prev, k)
		}
		seen[e] = k
	}
}

// TestColumnsReadAsTextComeAsTheServersText: a column read AsText is
// selected bare and asked for in text format, so the server sends its
// output function's text (a bpchar keeps its padding, which ::text would
// trim), unless its output function rewrites the value (xml), when it is
// cast to text; the key comes as text, the other columns binary, for pgx to
// decode.
func TestColumnsReadAsTextComeAsTheServersText(t *testing.T) {
	p, err := New(Config{Table: pgx.Identifier{"t"}, Key: []KeyColumn{{"code", "bpchar"}, {"n", "integer"}},
		Columns: []ReadColumn{{Name: "code", AsText: true}, {Name: "amount"}, {Name: "span", AsText: true}, {Name: "doc", AsText: true, StoredText: true}}, ChunkSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	want := pgx.QueryResultFormats{pgx.TextFormatCode, pgx.TextFormatCode, pgx.TextFormatCode, pgx.BinaryFormatCode, pgx.TextFormatCode, pgx.TextFormatCode}
	if !slices.Equal(p.formats, want) {
		t.Errorf("result formats %v; want %v", p.formats, want)
	}
	if got := p.SQL().NextPage; !strings.HasPrefix(got, `SELECT "src"."code"::text, "src"."n"::text, "code", "amount", "span", "doc"::text FROM`) ||
		!strings.Contains(got, "($2::text::bpchar, $3::text::integer)") {
		t.Errorf("next page: %s", got)
	}
}

// TestRowsComeAsTextOrDecoded reads a page over the extended and the simple
// protocol: the key and the columns read AsText are the server's text (a
// bpchar with its padding, a range, an xml declaration kept), the others
// pgx's Go values, whatever format the protocol sent them in.
func TestRowsComeAsTextOrDecoded(t *testing.T) {
	pool := testPool(t,
		"CREATE TABLE t (code char(4) PRIMARY KEY, n int, span int4range, doc xml)",
		`INSERT INTO t VALUES ('ab', 7, '[1,5)', '<?xml version="1.0"?><r/>'), ('cd', NULL, NULL, NULL)`)
	p, err := New(Config{Table: pgx.Identifier{"t"}, Key: []KeyColumn{{"code", "bpchar"}}, ChunkSize: 10,
		Columns: []ReadColumn{{Name: "code", AsText: true}, {Name: "n"}, {Name: "span", AsText: true}, {Name: "doc", AsText: true, StoredText: true}}})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]any{{"ab  ", int32(7), "[1,5)", `<?xml version="1.0"?><r/>`}, {"cd  ", nil, nil, nil}}
	for _, mode := range []string{"cache_statement", "simple_protocol"} {
		cfg := pool.Config().ConnConfig.Copy()
		cfg.RuntimeParams = map[string]string{}
		cfg.DefaultQueryExecMode, _ = map[string]pgx.QueryExecMode{
			"cache_statement": pgx.QueryExecModeCacheStatement, "simple_protocol": pgx.QueryExecModeSimpleProtocol}[mode]
		conn, err := pgx.ConnectConfig(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(t.Context())
		c, err := p.First(t.Context(), conn)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if !reflect.DeepEqual(c.Rows, want) || !reflect.DeepEqual(c.Keys, [][]string{{"ab"}, {"cd"}}) {
			t.Errorf("%s: rows %#v, keys %q; want %#v", mode, c.Rows, c.Keys, want)
		}
	}
}
