package paginator

import (
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
			first: `SELECT "src"."id"::text, "id", "doc"::text FROM "public"."users" AS src WHERE ("src"."id") <= ($2::text::bigint) ORDER BY "src"."id" LIMIT $1`,
			next:  `SELECT "src"."id"::text, "id", "doc"::text FROM "public"."users" AS src WHERE ("src"."id") > ($2::text::bigint) AND ("src"."id") <= ($3::text::bigint) ORDER BY "src"."id" LIMIT $1`,
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
