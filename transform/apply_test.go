package transform

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/expr-lang/expr"
)

// issueSpec is the mapping of the issue that introduced expressions.
var issueSpec = Spec{
	Columns: []Mapping{
		{"id", "id"},
		{"email", "lower(trim(email))"},
		{"full_name", `first_name + " " + last_name`},
		{"tier", `score >= 500 ? "gold" : "basic"`},
		{"region", `payload?.region ?? "unknown"`},
	},
	SkipIf: "email == nil",
}

// setup compiles spec against testSource and testDest.
func setup(t *testing.T, spec Spec, opts Options) Transformer {
	t.Helper()
	if opts.Now.IsZero() {
		opts.Now = testNow
	}
	tr, err := Compile(spec, testSource, testDest, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// row is testRow with some columns changed.
func row(set map[string]any) []any {
	r := testRow()
	for name, v := range set {
		i := columnIndex(testSource, name)
		if i < 0 {
			panic("no column " + name)
		}
		r[i] = v
	}
	return r
}

func columnIndex(cols []Column, name string) int {
	for i, c := range cols {
		if c.Name == name {
			return i
		}
	}
	return -1
}

func TestApplyIssueMapping(t *testing.T) {
	tr := setup(t, issueSpec, Options{})
	if got, want := tr.Columns(), []string{"id", "email", "full_name", "tier", "region"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Columns() = %v; want %v", got, want)
	}
	for _, c := range []struct {
		name string
		src  []any
		keep bool
		want []any
	}{
		{"all set", row(nil), true, []any{int64(42), "ada@example.com", "Ada Lovelace", "gold", "eu"}},
		{"low score, no region", row(map[string]any{"score": int64(499), "payload": `{"other":1}`}), true,
			[]any{int64(42), "ada@example.com", "Ada Lovelace", "basic", "unknown"}},
		{"NULL payload", row(map[string]any{"payload": nil}), true,
			[]any{int64(42), "ada@example.com", "Ada Lovelace", "gold", "unknown"}},
		{"JSON null region", row(map[string]any{"payload": `{"region":null}`}), true,
			[]any{int64(42), "ada@example.com", "Ada Lovelace", "gold", "unknown"}},
		{"NULL email is filtered", row(map[string]any{"email": nil}), false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := make([]any, len(tr.Columns()))
			keep, err := tr.Apply(c.src, dst)
			if err != nil || keep != c.keep {
				t.Fatalf("Apply = %v, %v; want %v", keep, err, c.keep)
			}
			if keep && !reflect.DeepEqual(dst, c.want) {
				t.Errorf("dst = %#v; want %#v", dst, c.want)
			}
		})
	}
}

var errBoom = errors.New("boom")

func TestApplyRowErrors(t *testing.T) {
	failing := Options{Funcs: map[string]Func{
		"explode": {Fn: func(...any) (any, error) { return nil, errBoom }, Types: []any{new(func(string) string)}},
	}}
	base := []Mapping{{"id", "id"}, {"tier", `"basic"`}}
	for _, c := range []struct {
		name    string
		mapping Mapping // added to base; empty for a skip_if case
		skipIf  string
		opts    Options
		src     []any
		column  string // RowError.Column
		wantErr []string
		is      error
	}{
		{"concatenating NULL", Mapping{"full_name", `first_name + " " + last_name`}, "", Options{},
			row(map[string]any{"last_name": nil}), "full_name",
			[]string{`expression "first_name + \" \" + last_name"`, "cannot concatenate <nil>"}, nil},
		{"adding NULL", Mapping{"full_name", `first_name + last_name`}, "", Options{},
			row(map[string]any{"first_name": nil}), "full_name",
			[]string{`expression "first_name + last_name"`, "invalid operation"}, nil},
		{"string function on NULL", Mapping{"email", "lower(trim(email))"}, "", Options{},
			row(map[string]any{"email": nil}), "email",
			[]string{`expression "lower(trim(email))"`, "interface conversion: interface {} is nil, not string"}, nil},
		{"member of NULL", Mapping{"region", "payload.region"}, "", Options{},
			row(map[string]any{"payload": nil}), "region",
			[]string{`expression "payload.region"`, "cannot fetch region from <nil>"}, nil},
		// (a bare copy n: n into smallint is the destination's to convert,
		// and its 22003 fails the row there)
		{"out of range for smallint", Mapping{"small", "n * 1"}, "", Options{},
			row(nil), "small",
			[]string{`expression "n * 1"`, "value 100000 out of range for smallint"}, nil},
		{"expression out of range", Mapping{"small", "score * 100"}, "", Options{},
			row(nil), "small",
			[]string{`expression "score * 100"`, "value 70000 out of range for smallint"}, nil},
		{"NULL for NOT NULL", Mapping{"tier", "nick"}, "", Options{},
			row(nil), "tier",
			[]string{`expression "nick"`, "null value for a NOT NULL column"}, errNull},
		{"bad uuid text", Mapping{"uid", "name"}, "", Options{},
			row(nil), "uid",
			[]string{`expression "name"`, `invalid UUID "Ada"`}, nil},
		{"too long for varchar(3)", Mapping{"code", `name + "!!"`}, "", Options{},
			row(nil), "code",
			[]string{`expression "name + \"!!\""`, "value of 5 characters too long for character varying(3)"}, nil},
		{"not a numeric", Mapping{"amount", "payload.region"}, "", Options{},
			row(nil), "amount",
			[]string{`"eu" is not a numeric`}, nil},
		{"NaN into jsonb", Mapping{"doc", "price / 0 - price / 0"}, "", Options{},
			row(nil), "doc",
			[]string{"json: unsupported value: NaN"}, nil},
		{"a Func's error", Mapping{"email", "explode(name)"}, "", failing,
			row(nil), "email",
			[]string{`expression "explode(name)"`, "boom"}, errBoom},
		{"skip_if fails", Mapping{}, "lower(nick) == nil", Options{},
			row(nil), "",
			[]string{`skip_if: expression "lower(nick) == nil"`, "interface conversion"}, nil},
		{"skip_if not a bool at run time", Mapping{}, "payload.region", Options{},
			row(nil), "",
			[]string{`skip_if: expression "payload.region": invalid operation: bool(string)`}, nil},
		{"invalid json in the source", Mapping{"region", "payload.region"}, "", Options{},
			row(map[string]any{"payload": "{"}), "",
			[]string{`decode source column "payload"`}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := Spec{Columns: base, SkipIf: c.skipIf}
			if c.mapping.Column != "" {
				spec.Columns = append([]Mapping{}, base...)
				if c.mapping.Column == "tier" {
					spec.Columns = spec.Columns[:1]
				}
				spec.Columns = append(spec.Columns, c.mapping)
			}
			tr := setup(t, spec, c.opts)
			dst := make([]any, len(tr.Columns()))
			keep, err := tr.Apply(c.src, dst)
			var re *RowError
			if !errors.As(err, &re) || err != error(re) {
				t.Fatalf("Apply = %v, %v; want a *RowError", keep, err)
			}
			if keep {
				t.Error("a failed row is kept")
			}
			if re.Column != c.column {
				t.Errorf("RowError.Column = %q; want %q", re.Column, c.column)
			}
			for _, want := range c.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, c.is)
			}
		})
	}
}

// TestApplyFailedRows applies a chunk in which some rows fail: they are
// reported, the others are written.
func TestApplyFailedRows(t *testing.T) {
	tr := setup(t, issueSpec, Options{})
	chunk := [][]any{
		row(nil),
		row(map[string]any{"first_name": nil}),
		row(map[string]any{"email": nil}),
		row(map[string]any{"payload": `{"region": "us"}`}),
		row(map[string]any{"last_name": nil}),
	}
	var written, filtered []int
	failed := map[int]string{}
	for i, src := range chunk {
		dst := make([]any, len(tr.Columns()))
		keep, err := tr.Apply(src, dst)
		var re *RowError
		switch {
		case errors.As(err, &re):
			failed[i] = re.Column
		case err != nil:
			t.Fatalf("row %d: %v is not a *RowError", i, err)
		case keep:
			written = append(written, i)
		default:
			filtered = append(filtered, i)
		}
	}
	if !reflect.DeepEqual(written, []int{0, 3}) || !reflect.DeepEqual(filtered, []int{2}) ||
		!reflect.DeepEqual(failed, map[int]string{1: "full_name", 4: "full_name"}) {
		t.Errorf("written %v, filtered %v, failed %v", written, filtered, failed)
	}
}

func TestApplySkipIf(t *testing.T) {
	for _, c := range []struct {
		skipIf string
		src    []any
		keep   bool
	}{
		{"score > 500", row(nil), false},
		{"score > 900", row(nil), true},
		{"payload?.deleted", row(nil), true}, // nil keeps the row
		{"payload?.deleted", row(map[string]any{"payload": `{"deleted": true}`}), false},
		{"nick == nil && active", row(nil), false},
	} {
		t.Run(c.skipIf, func(t *testing.T) {
			tr := setup(t, Spec{Columns: []Mapping{{"id", "id"}, {"tier", `"x"`}}, SkipIf: c.skipIf}, Options{})
			keep, err := tr.Apply(c.src, make([]any, 2))
			if err != nil || keep != c.keep {
				t.Errorf("Apply = %v, %v; want %v", keep, err, c.keep)
			}
		})
	}
}

// TestApplyConcurrent runs one transformer from 8 goroutines, as the
// workers do; run it with -race.
func TestApplyConcurrent(t *testing.T) {
	tr := setup(t, issueSpec, Options{})
	const rows = 2000
	src := make([][]any, rows)
	want := make([][]any, rows)
	for i := range rows {
		src[i] = row(map[string]any{
			"id":         int64(i),
			"email":      fmt.Sprintf(" User%d@Example.com", i),
			"first_name": fmt.Sprint("F", i),
			"score":      int64(i % 1000),
			"payload":    fmt.Sprintf(`{"region": "r%d"}`, i%7),
		})
		tier := "basic"
		if i%1000 >= 500 {
			tier = "gold"
		}
		want[i] = []any{int64(i), fmt.Sprintf("user%d@example.com", i), fmt.Sprintf("F%d Lovelace", i), tier, fmt.Sprintf("r%d", i%7)}
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			dst := make([]any, len(tr.Columns()))
			for i := range rows {
				i := (i + w*rows/8) % rows
				if _, err := tr.Apply(src[i], dst); err != nil {
					t.Error(err)
					return
				}
				if !reflect.DeepEqual(dst, want[i]) {
					t.Errorf("row %d: dst = %v; want %v", i, dst, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestRewriteKeepsMeaning runs expressions compiled with and without this
// package's rewrite and wants the same results and the same failures.
func TestRewriteKeepsMeaning(t *testing.T) {
	c, inputs := testCompiler()
	for _, src := range []string{
		`first_name + " " + last_name`,
		`"<" + name + ">" + name + "."`,
		`first_name + (" " + last_name)`,
		`(first_name + " " + last_name) + "|" + upper(name + "-" + name)`,
		`name + (nick ?? "?") + name`,
		`nick + "x" + name`,
		`name + "x" + nick`,
		`len(first_name + last_name + "!")`,
		`first_name + " " + last_name == "Ada Lovelace"`,
		`map([1, 2], name + "-" + string(#) + "!")`,
		`let s = name + "." + name + "."; s + s + s`,
		`score > 500 ? first_name + " " + last_name : "x" + "y" + name`,
		`"a" + "b" + "c"`,
		`lower(email)`,
		`upper(trim(email))`,
		`trim(email)`,
		`trim("--x--", "-")`,
		`lower(name)`,
		`lower(nick)`,
		`upper(payload.region)`,
		`upper(payload.n)`,
		`trim(lower(email)) + "|" + trim(email) + "|"`,
	} {
		t.Run(src, func(t *testing.T) {
			ce, err := c.compile(src, false)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := expr.Compile(src, c.options...)
			if err != nil {
				t.Fatal(err)
			}
			st := newState(len(inputs))
			if err := st.load(inputs, testRow()); err != nil {
				t.Fatal(err)
			}
			got, gotErr := st.run(ce.program)
			want, wantErr := st.run(plain)
			if (gotErr != nil) != (wantErr != nil) || !reflect.DeepEqual(got, want) {
				t.Errorf("rewritten: %#v, %v\nplain:     %#v, %v", got, gotErr, want, wantErr)
			}
		})
	}
}

func TestRewriteFusesChains(t *testing.T) {
	c, _ := testCompiler()
	for _, src := range []string{
		`first_name + " " + last_name`,
		`first_name + (" " + last_name)`,
		`(first_name + " " + last_name) + "|" + upper(name + "-" + name)`,
	} {
		ce, err := c.compile(src, false)
		if err != nil {
			t.Fatal(err)
		}
		if code := ce.program.Disassemble(); strings.Contains(code, "OpAdd") {
			t.Errorf("%s: chain not rewritten:\n%s", src, code)
		}
	}
}

// TestApplyAllocations holds Apply to the allocations of the values it
// writes: a concatenation's string and its box, a lowered email's string and
// its box; copies, constants and unchanged strings allocate nothing.
func TestApplyAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	source, dest := benchTables("bigint")
	tr, err := Compile(benchSpec, source, dest, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		email string
		want  float64
	}{
		{"ada@example.com", 2},      // full_name
		{"Ada@Example.com", 4},      // full_name, email
		{" ada@example.com ", 3},    // full_name, the trimmed email's box
		{" Ada@Example.com ", 5},    // full_name, email, the trimmed email's box
		{"ada.lovelace@x.org", 2.0}, // full_name
	} {
		src := []any{int64(1000), c.email, "Ada", "Lovelace", int64(700), "DE", nil}
		dst := make([]any, len(tr.Columns()))
		got := testing.AllocsPerRun(100, func() {
			if _, err := tr.Apply(src, dst); err != nil {
				t.Fatal(err)
			}
		})
		if got != c.want {
			t.Errorf("email %q: %v allocations per row; want %v", c.email, got, c.want)
		}
	}
}
