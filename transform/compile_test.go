package transform

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// testDest is a destination table for testSource.
var testDest = []Column{
	{Name: "id", Type: "bigint", NotNull: true},
	{Name: "email", Type: "text"},
	{Name: "full_name", Type: "text"},
	{Name: "tier", Type: "text", NotNull: true},
	{Name: "region", Type: "text"},
	{Name: "small", Type: "smallint"},
	{Name: "uid", Type: "uuid"},
	{Name: "doc", Type: "jsonb"},
	{Name: "code", Type: "character varying(3)"},
	{Name: "amount", Type: "numeric"},
	{Name: "created_at", Type: "timestamp with time zone", NotNull: true, HasDefault: true},
}

func TestCompileErrors(t *testing.T) {
	ok := []Mapping{{"id", "id"}, {"tier", `"basic"`}}
	with := func(m ...Mapping) Spec { return Spec{Columns: append(append([]Mapping{}, ok...), m...)} }
	for _, c := range []struct {
		name string
		spec Spec
		opts Options
		want []string // each must appear in the error
	}{
		{"unknown destination column", with(Mapping{"nope", "name"}),
			Options{}, []string{`column "nope" (expression "name"): no such column in the destination table`}},
		{"unknown source column", with(Mapping{"email", "lower(emial)"}),
			Options{}, []string{`column "email" (text): expression "lower(emial)": unknown name emial (at character 7)`}},
		{"syntax error", with(Mapping{"email", "lower(email"}),
			Options{}, []string{`column "email" (text): expression "lower(email": unexpected token EOF`}},
		{"static type mismatch", with(Mapping{"email", "score + 1"}),
			Options{}, []string{`column "email" (text): expression "score + 1" has type int, which cannot be written to text; convert with string(...)`}},
		{"bare copy type mismatch", with(Mapping{"small", "name"}),
			Options{}, []string{`column "small" (smallint): source column "name" of type text cannot be written to smallint`}},
		{"listed twice", with(Mapping{"tier", `"gold"`}),
			Options{}, []string{`column "tier" (expression "\"gold\""): listed twice`}},
		{"empty expression", with(Mapping{"email", "  "}),
			Options{}, []string{`column "email": empty expression`}},
		{"NOT NULL column not written", Spec{Columns: []Mapping{{"id", "id"}}},
			Options{}, []string{`destination column "tier" is NOT NULL and has no default, but nothing writes it`}},
		{"skip_if not boolean", Spec{Columns: ok, SkipIf: "name"},
			Options{}, []string{`skip_if: expression "name": expected bool, but got string`}},
		{"skip_if unknown name", Spec{Columns: ok, SkipIf: "emial == nil"},
			Options{}, []string{`skip_if: expression "emial == nil": unknown name emial`}},
		{"now without Options.Now", with(Mapping{"email", "string(now())"}),
			Options{}, []string{`column "email" (text): expression "string(now())" calls now(), but Options.Now (the job's start time) is not set`}},
		{"reserved name", with(Mapping{"email", `$cat`}),
			Options{}, []string{`column "email" (text): expression "$cat": $cat is reserved`}},
		{"machine time zone", with(Mapping{"email", "string(now().Local())"}),
			Options{Now: testNow}, []string{`Local() depends on the machine's time zone`}},
		{"machine time zone by name", with(Mapping{"email", `string(date("2024-01-02", "2006-01-02", "Local"))`}),
			Options{}, []string{`the "Local" time zone depends on the machine`}},
		{"Func shadows a helper", Spec{Columns: ok},
			Options{Funcs: map[string]Func{"sha256": {Fn: sha256Hex}}}, []string{`Options.Funcs["sha256"]: a built-in helper has that name`}},
		{"Func without Fn", Spec{Columns: ok},
			Options{Funcs: map[string]Func{"f": {}}}, []string{`Options.Funcs["f"]: Fn is nil`}},
		{"Func with a bad type", Spec{Columns: ok},
			Options{Funcs: map[string]Func{"f": {Fn: sha256Hex, Types: []any{"string"}}}}, []string{`Options.Funcs["f"]: Types[0] is string, not a function value`}},
		{"call refused by a Func's types", Spec{Columns: with(Mapping{"email", "f(1)"}).Columns},
			Options{Funcs: map[string]Func{"f": {Fn: sha256Hex, Types: []any{new(func(string) string)}}}}, []string{`column "email" (text): expression "f(1)": cannot use int as argument (type string) to call f`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, err := Compile(c.spec, testSource, testDest, c.opts)
			if err == nil {
				t.Fatalf("Compile succeeded with columns %v", tr.Columns())
			}
			for _, want := range c.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, want)
				}
			}
		})
	}
}

func TestCompileReportsEveryProblem(t *testing.T) {
	_, err := Compile(Spec{
		Columns: []Mapping{
			{"id", "id"},
			{"nope", "name"},
			{"email", "lower(emial)"},
			{"full_name", "score * 2"},
			{"small", "price"},
		},
		SkipIf: "name",
	}, testSource, testDest, Options{})
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("want a joined error, got %v", err)
	}
	var got []string
	for _, e := range joined.Unwrap() {
		got = append(got, strings.SplitN(e.Error(), ":", 2)[0])
	}
	want := []string{`column "nope" (expression "name")`, `column "email" (text)`, `column "full_name" (text)`,
		`column "small" (smallint)`, "skip_if", `destination column "tier" is NOT NULL and has no default, but nothing writes it`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems reported:\n%q\nwant\n%q\nerror:\n%v", got, want, err)
	}
}

func TestCompileWithoutColumns(t *testing.T) {
	source := []Column{
		{Name: "id", Type: "integer", NotNull: true},
		{Name: "doc", Type: "json"},
		{Name: "uid", Type: "uuid"},
		{Name: "note", Type: "text"},
		{Name: "only_in_source", Type: "text"},
	}
	dest := []Column{
		{Name: "id", Type: "bigint", NotNull: true},
		{Name: "doc", Type: "jsonb"},
		{Name: "uid", Type: "text"},
		{Name: "note", Type: "text"},
		{Name: "only_in_dest", Type: "text"},
	}
	tr, err := Compile(Spec{SkipIf: `note == "skip"`}, source, dest, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tr.Columns(), []string{"id", "doc", "uid", "note"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Columns() = %v; want %v", got, want)
	}
	dst := make([]any, 4)
	// Every copy here passes the source's text form through: json into
	// jsonb is text either way, and integer into bigint and uuid into text
	// are the destination's to convert, as INSERT … SELECT converts.
	keep, err := tr.Apply([]any{"7", `{"b": 1, "a": 2}`, "123e4567-e89b-12d3-a456-426614174000", "hello", "x"}, dst)
	if err != nil || !keep {
		t.Fatalf("Apply = %v, %v", keep, err)
	}
	want := []any{"7", `{"b": 1, "a": 2}`, "123e4567-e89b-12d3-a456-426614174000", "hello"}
	if !reflect.DeepEqual(dst, want) {
		t.Errorf("dst = %#v; want %#v", dst, want)
	}
	if keep, err := tr.Apply([]any{int32(8), nil, nil, "skip", nil}, dst); keep || err != nil {
		t.Errorf("filtered row: Apply = %v, %v", keep, err)
	}

	_, err = Compile(Spec{}, []Column{{Name: "a", Type: "text"}}, []Column{{Name: "b", Type: "text"}}, Options{})
	if !errors.Is(err, ErrNoCommonColumns) {
		t.Errorf("no common columns: err = %v", err)
	}
}

// TestReadsNamesWhatTheSpecNeeds: the engine selects only the columns Reads
// names, so it must name every column an expression, skip_if or a bare copy
// touches, and a transformer compiled against just those must write what
// the full one writes.
func TestReadsNamesWhatTheSpecNeeds(t *testing.T) {
	full := setup(t, issueSpec, Options{}).(PartialReader)
	want := []string{"id", "score", "email", "first_name", "last_name", "payload"} // source order
	if got := full.Reads(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Reads() = %v; want %v", got, want)
	}

	var needed []Column
	for _, name := range want {
		needed = append(needed, testSource[columnIndex(testSource, name)])
	}
	narrow, err := Compile(issueSpec, needed, testDest, Options{Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	wide := row(nil)
	thin := make([]any, len(needed))
	for i, c := range needed {
		thin[i] = wide[columnIndex(testSource, c.Name)]
	}
	fromFull, fromNarrow := make([]any, len(full.Columns())), make([]any, len(narrow.Columns()))
	keepFull, errFull := full.Apply(wide, fromFull)
	keepNarrow, errNarrow := narrow.Apply(thin, fromNarrow)
	if errFull != nil || errNarrow != nil || !keepFull || !keepNarrow {
		t.Fatalf("Apply: full %v, %v; narrow %v, %v", keepFull, errFull, keepNarrow, errNarrow)
	}
	if !reflect.DeepEqual(fromFull, fromNarrow) {
		t.Fatalf("narrow transformer wrote %#v; the full one %#v", fromNarrow, fromFull)
	}

	constant, err := Compile(Spec{Columns: []Mapping{{"id", "7"}, {"tier", `"basic"`}}}, testSource, testDest, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := constant.(PartialReader).Reads(); len(got) != 0 {
		t.Fatalf("constants read %v; want nothing", got)
	}
}

// TestPassesAndDecodes: a bare copy between columns of the same type,
// typmods aside, passes the value untouched and never needs it decoded;
// a copy that converts, and every column an expression reads, must be
// decoded. Identity passes everything.
func TestPassesAndDecodes(t *testing.T) {
	source := []Column{
		{Name: "id", Type: "integer", NotNull: true},
		{Name: "code", Type: "character(6)"},
		{Name: "flags", Type: "bit(5)"},
		{Name: "span", Type: "int4range"},
		{Name: "email", Type: "text"},
		{Name: "doc", Type: "json"},
		{Name: "unused", Type: "text"},
	}
	dest := []Column{
		{Name: "id", Type: "bigint", NotNull: true},
		{Name: "code", Type: "character(8)"},
		{Name: "flags", Type: "bit(5)"},
		{Name: "span", Type: "int4range"},
		{Name: "email", Type: "text"},
		{Name: "email_hash", Type: "text"},
		{Name: "doc", Type: "jsonb"},
	}
	spec := Spec{Columns: []Mapping{
		{"id", "id"},                    // integer to bigint: the destination converts
		{"code", "code"},                // character(6) to character(8): the same type
		{"flags", "flags"},              // the same type
		{"span", "span"},                // a type the transform has no Go value for
		{"email", "email"},              // copied, and read by an expression
		{"email_hash", "sha256(email)"}, // computed
		{"doc", "doc"},                  // json to jsonb: text either way
	}}
	tr, err := Compile(spec, source, dest, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pt := tr.(Passthrough)
	if got, want := pt.Passes(), []int{0, 1, 2, 3, 4, -1, 5}; !reflect.DeepEqual(got, want) {
		t.Errorf("Passes() = %v; want %v", got, want)
	}
	if got, want := pt.Decodes(), []string{"email"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Decodes() = %v; want %v", got, want)
	}
	// A passed value arrives in whatever form the engine reads it in (its
	// text) and leaves untouched.
	dst := make([]any, len(tr.Columns()))
	keep, err := tr.Apply([]any{"7", "ab", "10101", "[1,5)", "a@b.c", ` {"a": 1, "a": 2} `, "x"}, dst)
	if err != nil || !keep {
		t.Fatalf("Apply = %v, %v", keep, err)
	}
	passed := []any{dst[0], dst[1], dst[2], dst[3], dst[4], dst[6]}
	if want := []any{"7", "ab", "10101", "[1,5)", "a@b.c", ` {"a": 1, "a": 2} `}; !reflect.DeepEqual(passed, want) {
		t.Errorf("copied values = %#v; want %#v", passed, want)
	}

	id, err := Identity(source, dest)
	if err != nil {
		t.Fatal(err)
	}
	ip := id.(Passthrough)
	if got, want := ip.Passes(), []int{0, 1, 2, 3, 4, 5}; !reflect.DeepEqual(got, want) {
		t.Errorf("Identity Passes() = %v; want %v", got, want)
	}
	if got := ip.Decodes(); len(got) != 0 {
		t.Errorf("Identity Decodes() = %v; want none", got)
	}
}

// TestCopyConvertedByTheDestinationOnlyWhenNotDecoded: a bare copy into
// another type is left to the destination only while the copy gets the
// column's text form; once an expression reads the column it arrives
// decoded, and the copy converts the Go value instead.
func TestCopyConvertedByTheDestinationOnlyWhenNotDecoded(t *testing.T) {
	source := []Column{{Name: "n", Type: "integer"}, {Name: "r", Type: "real"}}
	dest := []Column{{Name: "n", Type: "bigint"}, {Name: "r", Type: "numeric"}, {Name: "twice", Type: "bigint"}}
	tr, err := Compile(Spec{Columns: []Mapping{{"n", "n"}, {"r", "r"}, {"twice", "n * 2"}}}, source, dest, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pt := tr.(Passthrough)
	if got, want := pt.Passes(), []int{-1, 1, -1}; !reflect.DeepEqual(got, want) {
		t.Errorf("Passes() = %v; want %v", got, want)
	}
	if got, want := pt.Decodes(), []string{"n"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Decodes() = %v; want %v", got, want)
	}
	dst := make([]any, 3)
	if keep, err := tr.Apply([]any{int32(21), "0.1"}, dst); err != nil || !keep {
		t.Fatalf("Apply = %v, %v", keep, err)
	}
	if want := []any{int64(21), "0.1", int64(42)}; !reflect.DeepEqual(dst, want) {
		t.Errorf("dst = %#v; want %#v", dst, want)
	}
}
