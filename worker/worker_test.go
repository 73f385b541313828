package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/backfill/backfill/chunk"
	"github.com/backfill/backfill/transform"
)

func TestInsertSQL(t *testing.T) {
	// The casts name the unconstrained types: character(8) and bit(5)
	// would cut a longer value to fit instead of failing it.
	cols := []Column{
		{Name: "id", Type: "bigint", Cast: "bigint", OID: pgtype.Int8OID},
		{Name: `Odd "name"`, Type: "text", Cast: "text", OID: pgtype.TextOID},
		{Name: "doc", Type: "jsonb", Cast: "jsonb", OID: pgtype.JSONBOID, AsText: true, JSON: true},
		{Name: "tags", Type: "character(8)[]", Cast: "bpchar[]", OID: pgtype.BPCharArrayOID, AsText: true},
		{Name: "code", Type: "character(8)", Cast: "bpchar", OID: pgtype.BPCharOID},
		{Name: "flags", Type: "bit(5)", Cast: `"bit"`, OID: pgtype.BitOID, AsText: true},
	}
	got := insertSQL(pgx.Identifier{"sales", "Order Items"}, cols, true, "pg_temp.stage", "bf_row < $1")
	want := `INSERT INTO "sales"."Order Items" ("id", "Odd ""name""", "doc", "tags", "code", "flags") OVERRIDING SYSTEM VALUE ` +
		`SELECT c1, c2, c3::jsonb, c4::bpchar[], c5, c6::"bit" FROM pg_temp.stage WHERE bf_row < $1 ON CONFLICT DO NOTHING`
	if got != want {
		t.Fatalf("insertSQL:\n got %s\nwant %s", got, want)
	}
	if plain := insertSQL(pgx.Identifier{"t"}, cols[:1], false, "s", ""); strings.Contains(plain, "OVERRIDING") || strings.Contains(plain, "WHERE") {
		t.Fatalf("OVERRIDING without identity columns, or WHERE without a condition: %s", plain)
	}
	check := CheckSQL(pgx.Identifier{"t"}, cols[4:], false)
	if want := `INSERT INTO "t" ("code", "flags") SELECT c1, c2::"bit" FROM (SELECT NULL::bpchar AS c1, NULL::text AS c2) AS s ON CONFLICT DO NOTHING`; check != want {
		t.Fatalf("CheckSQL:\n got %s\nwant %s", check, want)
	}
}

func TestNewRefusesAColumnWithoutACast(t *testing.T) {
	cols := []transform.Column{{Name: "code", Type: "character(8)"}}
	identity, err := transform.Identity(cols, cols)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Table: pgx.Identifier{"t"}, Transformer: identity, Workers: 1, Columns: []Column{{Name: "code", Type: "character(8)"}}})
	if err == nil || !strings.Contains(err.Error(), `"code"`) {
		t.Fatalf("a column without a cast type: %v", err)
	}
}

func TestTextForm(t *testing.T) {
	w := (&Pool{cfg: Config{}}).newWorker()
	jsonCol := Column{Name: "doc", Type: "jsonb", OID: pgtype.JSONBOID, AsText: true, JSON: true}
	arrayCol := Column{Name: "tags", Type: "integer[]", OID: pgtype.Int4ArrayOID, AsText: true}
	enumCol := Column{Name: "mood", Type: "mood", OID: 99999, AsText: true}
	cases := []struct {
		name    string
		col     Column
		in      any
		want    any
		wantErr string
	}{
		{"NULL stays NULL", jsonCol, nil, nil, ""},
		{"JSON text passes as is", jsonCol, `{"a": 1}`, `{"a": 1}`, ""},
		{"JSON null is not SQL NULL", jsonCol, `null`, `null`, ""},
		{"JSON text in a named string type passes as is", jsonCol, transform.JSON(`{"a":1}`), `{"a":1}`, ""},
		{"a map becomes JSON", jsonCol, map[string]any{"b": []any{1, "x"}}, `{"b":[1,"x"]}`, ""},
		{"an array in PostgreSQL's text form", arrayCol, []int32{1, 2, 3}, "{1,2,3}", ""},
		{"bytes are text", enumCol, []byte("happy"), "happy", ""},
		{"an unknown type needs a string", enumCol, 42, nil, "no text form"},
		{"a Stringer is its string", enumCol, time.Duration(0), "0s", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := w.textForm(c.col, c.in)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("textForm(%v) = %v, %v; want error %q", c.in, got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("textForm(%v) = %v, %v; want %v", c.in, got, err, c.want)
			}
		})
	}
}

func TestPieceSplitCoversTheRangeExactly(t *testing.T) {
	keys := [][]string{{"1"}, {"2"}, {"3"}, {"4"}, {"5"}}
	pc := piece{chunk: chunkWithKeys(keys), lo: 0, hi: 5, after: []string{"0"}, last: []string{"5"}}
	left, right := pc.split()
	if left.lo != 0 || left.hi != 2 || right.lo != 2 || right.hi != 5 {
		t.Fatalf("rows split as [%d,%d) [%d,%d)", left.lo, left.hi, right.lo, right.hi)
	}
	if left.after[0] != "0" || left.last[0] != "2" || right.after[0] != "2" || right.last[0] != "5" {
		t.Fatalf("key ranges (%v, %v] and (%v, %v] do not tile (0, 5]", left.after, left.last, right.after, right.last)
	}
}

func chunkWithKeys(keys [][]string) *chunk.Chunk {
	rows := make([][]any, len(keys))
	return &chunk.Chunk{Keys: keys, Rows: rows}
}
