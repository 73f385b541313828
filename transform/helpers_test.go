package transform

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // timezone(...) without the machine's zoneinfo

	"github.com/jackc/pgx/v5/pgtype"
)

var testNow = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// testSource is a source table with a column of every kind; testRow is one
// of its rows, as pgx decodes it.
var testSource = []Column{
	{Name: "id", Type: "bigint", NotNull: true},
	{Name: "small", Type: "smallint"},
	{Name: "n", Type: "integer"},
	{Name: "score", Type: "bigint"},
	{Name: "price", Type: "double precision"},
	{Name: "ratio", Type: "real"},
	{Name: "amount", Type: "numeric(12,2)"},
	{Name: "name", Type: "text"},
	{Name: "email", Type: "text"},
	{Name: "first_name", Type: "text"},
	{Name: "last_name", Type: "text"},
	{Name: "nick", Type: "text"},
	{Name: "code", Type: "character varying(5)"},
	{Name: "active", Type: "boolean"},
	{Name: "created_at", Type: "timestamp with time zone"},
	{Name: "day", Type: "date"},
	{Name: "uid", Type: "uuid"},
	{Name: "payload", Type: "jsonb"},
	{Name: "doc", Type: "json"},
	{Name: "blob", Type: "bytea"},
	{Name: "tags", Type: "text[]"},
	{Name: "mood", Type: "mood"},
}

var testUUID = [16]byte{0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00}

func testRow() []any {
	var amount pgtype.Numeric
	if err := amount.Scan("1234.56"); err != nil {
		panic(err)
	}
	return []any{
		int64(42), int16(7), int32(100000), int64(700), 19.99, float32(0.5), amount,
		"Ada", " Ada@Example.COM ", "Ada", "Lovelace", nil, "ab", true,
		time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
		testUUID, `{"region":"eu","n":3,"tags":["a","b"],"nested":{"x":1}}`, `[1,2,3]`,
		[]byte("hi"), "{a,b}", "happy",
	}
}

// testCompiler compiles expressions against testSource; the inputs put
// every column of testRow in the environment.
func testCompiler() (*exprCompiler, []input) {
	types := make([]pgType, len(testSource))
	inputs := make([]input, len(testSource))
	for i, c := range testSource {
		types[i] = parsePGType(c.Type)
		inputs[i] = input{index: i, name: c.Name, typ: types[i]}
	}
	return newExprCompiler(testSource, types, helpers(testNow)), inputs
}

// eval compiles one expression against testSource and runs it on testRow
// the way Apply does, returning the expression's raw result.
func eval(t *testing.T, expr string) (any, error) {
	t.Helper()
	c, inputs := testCompiler()
	ce, err := c.compile(expr, false)
	if err != nil {
		t.Fatalf("compile %q: %v", expr, err)
	}
	st := newState(len(inputs))
	if err := st.load(inputs, testRow()); err != nil {
		t.Fatal(err)
	}
	return st.run(ce.program)
}

func TestHelpers(t *testing.T) {
	for _, c := range []struct {
		name    string
		expr    string
		want    any
		wantErr string
	}{
		{"now is the job start", "now()", testNow, ""},
		{"now is fixed across calls", "now() == now()", true, ""},

		{"coalesce skips nil", "coalesce(nick, name)", "Ada", ""},
		{"coalesce keeps first", "coalesce(name, nick)", "Ada", ""},
		{"coalesce of nils", "coalesce(nick, nil)", nil, ""},
		{"coalesce mixed types", "coalesce(nick, 5)", 5, ""},
		{"coalesce ints", "coalesce(score, 0)", int64(700), ""},

		{"nullif equal", `nullif(name, "Ada")`, nil, ""},
		{"nullif different", `nullif(name, "Bob")`, "Ada", ""},
		{"nullif int64 vs int", "nullif(score, 700)", nil, ""},
		{"nullif of nil", `nullif(nick, "")`, nil, ""},
		{"nullif empty string", `nullif(trim("  "), "")`, nil, ""},

		{"sha256 string", `sha256("abc")`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", ""},
		{"sha256 empty", `sha256("")`, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", ""},
		{"sha256 bytes", `sha256(b"abc")`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", ""},
		{"sha256 of NULL", "sha256(nick)", nil, ""},

		{"mask_email", `mask_email("ada@example.com")`, "a***@example.com", ""},
		{"mask_email multibyte", `mask_email("élan@x.fr")`, "é***@x.fr", ""},
		{"mask_email last at", `mask_email("a@b@c.org")`, "a***@c.org", ""},
		{"mask_email empty local", `mask_email("@x.org")`, "***@x.org", ""},
		{"mask_email no at", `mask_email("nobody")`, "***", ""},
		{"mask_email of NULL", "mask_email(nick)", nil, ""},
		{"mask_email of column", "mask_email(trim(email))", "A***@Example.COM", ""},

		{"json sorts keys", `json({"b": 1, "a": [1, "x"]})`, JSON(`{"a":[1,"x"],"b":1}`), ""},
		{"json of nil is null", "json(nil)", JSON("null"), ""},
		{"json keeps html", `json("<&>")`, JSON(`"<&>"`), ""},
		{"json of a json column", "json(payload.nested)", JSON(`{"x":1}`), ""},
		{"json of time", "json(created_at)", JSON(`"2024-01-02T03:04:05Z"`), ""},

		{"parse_json", `parse_json("{\"a\": [1, true]}")`, map[string]any{"a": []any{1.0, true}}, ""},
		{"parse_json of NULL", "parse_json(nick)", nil, ""},
		{"parse_json invalid", `parse_json("{")`, nil, "parse_json: unexpected end of JSON input"},

		{"uuid_v5 dns", `uuid_v5("dns", "python.org")`, "886313e1-3b8a-5372-9b90-0c9aee199e5d", ""},
		{"uuid_v5 url", `uuid_v5("url", "https://example.com/a")`, "6639460f-3425-5329-8097-a58f06127860", ""},
		{"uuid_v5 oid", `uuid_v5("OID", "1.2.3")`, "42d5e23b-3a02-5135-85c6-52d1102f1f00", ""},
		{"uuid_v5 x500", `uuid_v5("x500", "cn=x")`, "a951fb6d-5aab-5a72-8e2e-9aa8df8d1f8f", ""},
		{"uuid_v5 uuid column namespace", `uuid_v5(uid, "user-" + string(id))`, "06afb7ab-84c1-5192-b36d-7b1d0f00fef0", ""},
		{"uuid_v5 of NULL", `uuid_v5("dns", nick)`, nil, ""},
		{"uuid_v5 in NULL", `uuid_v5(nick, "x")`, nil, ""},
		{"time zone by name", `string(now().In(timezone("Europe/Berlin")))`, "2024-05-01 14:00:00 +0200 CEST", ""},
		{"uuid_v5 bad namespace", `uuid_v5("nope", "x")`, nil, `uuid_v5 namespace: invalid UUID "nope"`},

		{"keys sorted", "keys(payload)", []any{"n", "nested", "region", "tags"}, ""},
		{"values sorted by key", `values({"b": 2, "a": 1, "c": 3})`, []any{1, 2, 3}, ""},
		{"toPairs sorted by key", `toPairs({"b": 2, "a": 1})`, [][2]any{{"a", 1}, {"b", 2}}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := eval(t, c.expr)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("%s = %v, %v; want error containing %q", c.expr, got, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: %v", c.expr, err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("%s = %#v; want %#v", c.expr, got, c.want)
			}
		})
	}
}

// TestEnvironment checks what expressions see of each source type.
func TestEnvironment(t *testing.T) {
	for _, c := range []struct {
		expr string
		want any
	}{
		{"id", int64(42)},
		{"small", int64(7)},
		{"n", int64(100000)},
		{"small + 1", 8},
		{"score >= 500", true},
		{"n * 2", 200000},
		{"ratio", 0.5},
		{"ratio * 10", 5.0},
		{"price > 19", true},
		{"amount", 1234.56},
		{"amount > 1000", true},
		{"uid", "123e4567-e89b-12d3-a456-426614174000"},
		{"payload.region", "eu"},
		{"payload.n", 3.0},
		{"payload.tags[1]", "b"},
		{`payload?.missing ?? "unknown"`, "unknown"},
		{"doc[2]", 3.0},
		{"blob", []byte("hi")},
		{"tags", "{a,b}"},
		{"mood", "happy"},
		{"day.Year()", 2024},
		{"created_at < now()", true},
		{"nick == nil", true},
		{`nick ?? "none"`, "none"},
		{`$env["first_name"]`, "Ada"},
		{`date("2024-03-01") < now()`, true},
	} {
		t.Run(c.expr, func(t *testing.T) {
			got, err := eval(t, c.expr)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("%s = %#v (%T); want %#v (%T)", c.expr, got, got, c.want, c.want)
			}
		})
	}
}

func TestEnvValueSpecials(t *testing.T) {
	for _, c := range []struct {
		typ  string
		in   any
		want any
	}{
		{"numeric", pgtype.Numeric{}, nil},
		{"numeric", pgtype.Numeric{NaN: true, Valid: true}, math.NaN()},
		{"numeric", pgtype.Numeric{InfinityModifier: pgtype.Infinity, Valid: true}, math.Inf(1)},
		{"real", float32(0.1), 0.1},
		{"real", float32(math.Inf(-1)), math.Inf(-1)},
		{"real", float32(math.NaN()), math.NaN()},
		{"real", float32(3.4028235e38), 3.4028235e38},
	} {
		got, err := parsePGType(c.typ).envValue(c.in)
		if err != nil {
			t.Fatal(err)
		}
		if f, ok := c.want.(float64); ok && math.IsNaN(f) {
			if g, ok := got.(float64); !ok || !math.IsNaN(g) {
				t.Errorf("envValue(%v) = %v; want NaN", c.in, got)
			}
			continue
		}
		if got != c.want {
			t.Errorf("envValue(%v) = %v; want %v", c.in, got, c.want)
		}
	}
}

func TestParseUUID(t *testing.T) {
	want := testUUID
	for _, in := range []string{
		"123e4567-e89b-12d3-a456-426614174000",
		"123E4567-E89B-12D3-A456-426614174000",
		"123e4567e89b12d3a456426614174000",
		"{123e4567-e89b-12d3-a456-426614174000}",
	} {
		got, err := parseUUID(in)
		if err != nil || got != want {
			t.Errorf("parseUUID(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "123e4567", "123e4567-e89b-12d3-a456-42661417400g", "123e4567-e89b-12d3-a456_426614174000"} {
		if _, err := parseUUID(in); err == nil {
			t.Errorf("parseUUID(%q) succeeded", in)
		}
	}
	if got := formatUUID(want); got != "123e4567-e89b-12d3-a456-426614174000" {
		t.Errorf("formatUUID = %s", got)
	}
}
