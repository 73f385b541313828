package transform

import (
	"cmp"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

func TestParsePGType(t *testing.T) {
	// The catalog gives the exact type, typmod included: every one must
	// classify as its type does without it.
	for _, c := range []struct {
		in, base string
		want     pgType
	}{
		{"smallint", "", pgType{kind: kindInt, bits: 16}},
		{"integer", "", pgType{kind: kindInt, bits: 32}},
		{"bigint", "", pgType{kind: kindInt, bits: 64}},
		{"real", "", pgType{kind: kindFloat, bits: 32}},
		{"double precision", "", pgType{kind: kindFloat, bits: 64}},
		{"numeric", "", pgType{kind: kindNumeric}},
		{"numeric(12,2)", "numeric", pgType{kind: kindNumeric}},
		{"numeric(10,2)", "numeric", pgType{kind: kindNumeric}},
		{"text", "", pgType{kind: kindText}},
		{"character varying", "", pgType{kind: kindText}},
		{"character varying(20)", "character varying", pgType{kind: kindText, length: 20}},
		{"character(3)", "character", pgType{kind: kindText, length: 3}},
		{"character(6)", "character", pgType{kind: kindText, length: 6}},
		{"bpchar", "", pgType{kind: kindText}},
		{"name", "", pgType{kind: kindText}},
		{"boolean", "", pgType{kind: kindBool}},
		{"timestamp with time zone", "", pgType{kind: kindTime}},
		{"timestamp(3) with time zone", "timestamp with time zone", pgType{kind: kindTime}},
		{"timestamp(0) without time zone", "timestamp without time zone", pgType{kind: kindTime}},
		{"timestamp without time zone", "", pgType{kind: kindTime}},
		{"date", "", pgType{kind: kindTime}},
		{"uuid", "", pgType{kind: kindUUID}},
		{"json", "", pgType{kind: kindJSON}},
		{"jsonb", "", pgType{kind: kindJSON}},
		{"bytea", "", pgType{kind: kindBytea}},
		{"integer[]", "", pgType{kind: kindArray}},
		{"character varying(20)[]", "character varying[]", pgType{kind: kindArray}},
		{"character(6)[]", "character[]", pgType{kind: kindArray}},
		{"bit(5)", "bit", pgType{kind: kindOther}},
		{"bit varying(8)", "bit varying", pgType{kind: kindOther}},
		{"time(3) without time zone", "time without time zone", pgType{kind: kindOther}},
		{"interval(2)", "interval", pgType{kind: kindOther}},
		{"mood", "", pgType{kind: kindOther}},
		{`"char"`, "", pgType{kind: kindOther}},
		{"time without time zone", "", pgType{kind: kindOther}},
		{"interval", "", pgType{kind: kindOther}},
		{"public.citext", "", pgType{kind: kindOther}},
	} {
		got := parsePGType(c.in)
		c.want.name, c.want.base = c.in, cmp.Or(c.base, c.in)
		if got != c.want {
			t.Errorf("parsePGType(%q) = %+v; want %+v", c.in, got, c.want)
		}
	}
}

// pairTypes are the column types of the type-pair tests, one or two of each
// kind.
var pairTypes = []string{
	"smallint", "integer", "bigint", "real", "double precision", "numeric", "numeric(10,2)",
	"text", "character varying(20)", "boolean", "timestamp with time zone",
	"timestamp without time zone", "date", "uuid", "json", "jsonb", "bytea",
	"integer[]", "text[]", "mood",
}

// TestCopyTypePairs is the catalog check for bare copies (email: email):
// every source type against every destination type.
func TestCopyTypePairs(t *testing.T) {
	ints := []string{"smallint", "integer", "bigint"}
	floats := []string{"real", "double precision", "numeric", "numeric(10,2)"}
	texts := []string{"text", "character varying(20)"}
	times := []string{"timestamp with time zone", "timestamp without time zone", "date"}
	jsons := []string{"json", "jsonb"}
	arrays := []string{"integer[]", "text[]"}
	join := func(lists ...[]string) []string { return slices.Concat(lists...) }

	// source type → the destination types a bare copy of it may go to.
	accepted := map[string][]string{
		"smallint":                    join(ints, floats, jsons),
		"integer":                     join(ints, floats, jsons),
		"bigint":                      join(ints, floats, jsons),
		"real":                        join(floats, jsons),
		"double precision":            join(floats, jsons),
		"numeric":                     join(floats, jsons),
		"numeric(10,2)":               join(floats, jsons),
		"text":                        join(texts, []string{"numeric", "numeric(10,2)", "uuid", "bytea", "mood"}, jsons, arrays),
		"character varying(20)":       join(texts, []string{"numeric", "numeric(10,2)", "uuid", "bytea", "mood"}, jsons, arrays),
		"boolean":                     join([]string{"boolean"}, jsons),
		"timestamp with time zone":    join(times, jsons),
		"timestamp without time zone": join(times, jsons),
		"date":                        join(times, jsons),
		"uuid":                        join([]string{"uuid"}, texts, jsons),
		"json":                        join(jsons, texts),
		"jsonb":                       join(jsons, texts),
		"bytea":                       {"bytea"},
		"integer[]":                   join(arrays, texts),
		"text[]":                      join(arrays, texts),
		"mood":                        join([]string{"mood"}, texts),
	}
	for _, src := range pairTypes {
		for _, dst := range pairTypes {
			want := slices.Contains(accepted[src], dst)
			t.Run(src+" to "+dst, func(t *testing.T) {
				_, err := Compile(Spec{Columns: []Mapping{{"b", "a"}}},
					[]Column{{Name: "a", Type: src}}, []Column{{Name: "b", Type: dst}}, Options{})
				switch {
				case want && err != nil:
					t.Errorf("refused: %v", err)
				case !want && err == nil:
					t.Errorf("accepted")
				case !want && !(strings.Contains(err.Error(), src) && strings.Contains(err.Error(), dst) && strings.Contains(err.Error(), `"b"`)):
					t.Errorf("error does not name the column and both types: %v", err)
				}
			})
		}
	}
}

// TestExpressionTypePairs is the catalog check for expressions: every static
// type expr can infer against every destination type.
func TestExpressionTypePairs(t *testing.T) {
	all := pairTypes
	none := []string{}
	for _, c := range []struct {
		expr     string // over testSource
		typ      string // the static type the error names
		accepted []string
	}{
		{"score + 1", "int", []string{"smallint", "integer", "bigint", "real", "double precision", "numeric", "numeric(10,2)", "json", "jsonb"}},
		{"price * 2", "float64", []string{"real", "double precision", "numeric", "numeric(10,2)", "json", "jsonb"}},
		{`name + "!"`, "string", []string{"numeric", "numeric(10,2)", "text", "character varying(20)", "uuid", "json", "jsonb", "bytea", "integer[]", "text[]", "mood"}},
		{"score > 1", "bool", []string{"boolean", "json", "jsonb"}},
		{"now()", "time.Time", []string{"timestamp with time zone", "timestamp without time zone", "date", "json", "jsonb"}},
		{"json(payload)", "transform.JSON", []string{"text", "character varying(20)", "json", "jsonb"}},
		{"[1, 2]", "[]interface {}", []string{"json", "jsonb", "integer[]", "text[]"}},
		{`{"a": 1}`, "map[string]interface {}", []string{"json", "jsonb"}},
		{`b"x"`, "[]uint8", []string{"bytea"}},
		{`duration("1h")`, "time.Duration", none},
		{"payload.region", "", all}, // unknown until run time
		{"nil", "", all},
	} {
		for _, dst := range pairTypes {
			want := slices.Contains(c.accepted, dst)
			t.Run(c.expr+" to "+dst, func(t *testing.T) {
				_, err := Compile(Spec{Columns: []Mapping{{"b", c.expr}}}, testSource,
					[]Column{{Name: "b", Type: dst}}, Options{Now: testNow})
				switch {
				case want && err != nil:
					t.Errorf("refused: %v", err)
				case !want && err == nil:
					t.Errorf("accepted")
				case !want && !(strings.Contains(err.Error(), c.typ) && strings.Contains(err.Error(), dst) && strings.Contains(err.Error(), strconv.Quote(c.expr))):
					t.Errorf("error does not name the expression and both types: %v", err)
				}
			})
		}
	}
}

// TestValue is the run-time half: what reaches the worker for a value of
// each Go type, or why the row fails.
func TestValue(t *testing.T) {
	var num pgtype.Numeric
	if err := num.Scan("12.50"); err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		typ     string
		in      any
		want    any
		wantErr string
	}{
		{"bigint", nil, nil, ""},
		{"bigint", int64(math.MaxInt64), int64(math.MaxInt64), ""},
		{"bigint", 7, int64(7), ""},
		{"bigint", uint64(math.MaxUint64), nil, "out of range for bigint"},
		{"bigint", 3.0, int64(3), ""},
		{"bigint", 3.5, nil, "not an integer"},
		{"bigint", 1e19, nil, "not an integer in range"},
		{"bigint", "3", nil, "cannot write string to bigint"},
		{"integer", int64(math.MaxInt32), int64(math.MaxInt32), ""},
		{"integer", int64(math.MaxInt32 + 1), nil, "value 2147483648 out of range for integer"},
		{"integer", int64(math.MinInt32), int64(math.MinInt32), ""},
		{"integer", int64(math.MinInt32 - 1), nil, "out of range for integer"},
		{"smallint", 32767, int64(32767), ""},
		{"smallint", 32768, nil, "value 32768 out of range for smallint"},
		{"smallint", -32769, nil, "out of range for smallint"},
		{"smallint", int16(-5), int64(-5), ""},

		{"double precision", 1.5, 1.5, ""},
		{"double precision", float32(0.5), 0.5, ""},
		{"double precision", 2, 2.0, ""},
		{"double precision", num, 12.5, ""},
		{"double precision", "1", nil, "cannot write string to double precision"},
		{"real", 1e39, nil, "out of range for real"},
		{"real", math.Inf(1), math.Inf(1), ""},

		{"numeric", int64(5), int64(5), ""},
		{"numeric", 5, int64(5), ""},
		{"numeric", 1.25, 1.25, ""},
		{"numeric", num, num, ""},
		{"numeric", "12.50", num, ""},
		{"numeric", "twelve", nil, `"twelve" is not a numeric`},
		{"numeric", true, nil, "cannot write bool to numeric"},

		{"text", "x", "x", ""},
		{"text", JSON(`{"a":1}`), `{"a":1}`, ""},
		{"text", testUUID, "123e4567-e89b-12d3-a456-426614174000", ""},
		{"text", 1, nil, "cannot write int to text"},
		{"character varying(3)", "abc", "abc", ""},
		{"character varying(3)", "äöü", "äöü", ""},
		{"character varying(3)", "abc   ", "abc   ", ""}, // PostgreSQL cuts trailing spaces
		{"character varying(3)", "abcd", nil, "value of 4 characters too long for character varying(3)"},
		{"character(2)", "abc", nil, "too long for character(2)"},

		{"boolean", true, true, ""},
		{"boolean", "true", nil, "cannot write string to boolean"},

		{"timestamp with time zone", ts, ts, ""},
		{"date", ts, ts, ""},
		{"date", "2024-01-02", nil, "cannot write string to date"},

		{"uuid", "123e4567-e89b-12d3-a456-426614174000", testUUID, ""},
		{"uuid", testUUID, testUUID, ""},
		{"uuid", pgtype.UUID{Bytes: testUUID, Valid: true}, testUUID, ""},
		{"uuid", pgtype.UUID{}, nil, ""},
		{"uuid", "not-a-uuid", nil, `invalid UUID "not-a-uuid"`},

		{"jsonb", JSON(`{"a": 1}`), `{"a": 1}`, ""},
		{"jsonb", JSON(`{"a": `), nil, "invalid JSON text"},
		{"jsonb", "eu", `"eu"`, ""},
		{"jsonb", `{"a":1}`, `"{\"a\":1}"`, ""}, // a string is a JSON string
		{"jsonb", map[string]any{"b": 1, "a": []any{true, nil}}, `{"a":[true,null],"b":1}`, ""},
		{"json", 1.5, "1.5", ""},
		{"json", ts, `"2024-01-02T03:04:05Z"`, ""},
		{"json", testUUID, `"123e4567-e89b-12d3-a456-426614174000"`, ""},
		{"json", math.NaN(), nil, "unsupported value: NaN"},
		{"json", []byte("x"), nil, "cannot write []byte to json"},

		{"bytea", []byte("x"), []byte("x"), ""},
		{"bytea", "x", []byte("x"), ""},
		{"bytea", 1, nil, "cannot write int to bytea"},

		{"integer[]", "{1,2}", "{1,2}", ""},
		{"integer[]", []any{1, nil, 3.5, math.Inf(-1)}, "{1,NULL,3.5,-Infinity}", ""},
		{"text[]", []any{"a b", `q"\`, "", JSON(`{"k":1}`)}, `{"a b","q\"\\","","{\"k\":1}"}`, ""},
		{"text[]", []string{"x", "y"}, `{"x","y"}`, ""},
		{"integer[]", [][]int{{1, 2}, {3, 4}}, "{{1,2},{3,4}}", ""},
		{"boolean[]", []any{true, false}, "{t,f}", ""},
		{"timestamp with time zone[]", []any{ts}, `{"2024-01-02T03:04:05Z"}`, ""},
		{"jsonb[]", []any{map[string]any{"a": 1}}, `{"{\"a\":1}"}`, ""},
		{"uuid[]", []any{testUUID}, `{"123e4567-e89b-12d3-a456-426614174000"}`, ""},
		{"integer[]", []any{struct{}{}}, nil, "array element 0: cannot write struct {} into an array"},
		{"integer[]", 1, nil, "cannot write int to integer[]"},

		{"mood", "happy", "happy", ""},
		{"mood", JSON(`"x"`), `"x"`, ""},
		{"mood", 1, nil, "cannot write int to mood: it needs a string in the type's text form"},
	} {
		t.Run(fmt.Sprintf("%s/%T", c.typ, c.in), func(t *testing.T) {
			got, err := parsePGType(c.typ).value(c.in)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("value(%#v) = %#v, %v; want error containing %q", c.in, got, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("value(%#v): %v", c.in, err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("value(%#v) = %#v (%T); want %#v (%T)", c.in, got, got, c.want, c.want)
			}
		})
	}
}
