package transform

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestFromFunc(t *testing.T) {
	columns := []string{"id", "tier", "small", "doc", "uid"}
	for _, c := range []struct {
		name    string
		fn      RowFunc
		keep    bool
		want    []any
		column  string // of the RowError, when wantErr is set
		wantErr string
		is      error
	}{
		{"copies and converts", func(r Row) (bool, error) {
			r.Set("id", r.Get("id"))
			r.Set("tier", r.Get("name").(string)+"!")
			r.Set("small", r.Get("small")) // int16 → int64
			r.Set("doc", r.Get("payload")) // JSON text, stored as is
			r.Set("uid", r.Get("uid"))
			return true, nil
		}, true, []any{int64(42), "Ada!", int64(7), `{"region":"eu","n":3,"tags":["a","b"],"nested":{"x":1}}`, testUUID}, "", "", nil},
		{"unset columns are NULL", func(r Row) (bool, error) {
			r.Set("id", int64(1))
			r.Set("tier", "x")
			return true, nil
		}, true, []any{int64(1), "x", nil, nil, nil}, "", "", nil},
		{"filters", func(r Row) (bool, error) { return false, nil }, false, nil, "", "", nil},
		{"plain error", func(r Row) (bool, error) { return true, errBoom }, false, nil, "", "boom", errBoom},
		{"RowError kept", func(r Row) (bool, error) {
			return true, &RowError{Column: "tier", Err: errBoom}
		}, false, nil, "tier", "boom", errBoom},
		{"out of range", func(r Row) (bool, error) {
			r.Set("id", 1)
			r.Set("tier", "x")
			r.Set("small", r.Get("n"))
			return true, nil
		}, false, nil, "small", "value 100000 out of range for smallint", nil},
		{"NULL for NOT NULL", func(r Row) (bool, error) {
			r.Set("id", r.Get("nick"))
			return true, nil
		}, false, nil, "id", "null value", errNull},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, err := FromFunc(testSource, testDest, columns, c.fn)
			if err != nil {
				t.Fatal(err)
			}
			dst := []any{"stale", "stale", "stale", "stale", "stale"}
			keep, err := tr.Apply(testRow(), dst)
			if c.wantErr != "" {
				var re *RowError
				if !errors.As(err, &re) || err != error(re) {
					t.Fatalf("Apply = %v, %v; want a *RowError", keep, err)
				}
				if re.Column != c.column || !strings.Contains(err.Error(), c.wantErr) {
					t.Errorf("RowError{%q, %v}; want column %q and %q", re.Column, re.Err, c.column, c.wantErr)
				}
				if c.is != nil && !errors.Is(err, c.is) {
					t.Errorf("errors.Is(%v, %v) = false", err, c.is)
				}
				return
			}
			if err != nil || keep != c.keep {
				t.Fatalf("Apply = %v, %v; want %v", keep, err, c.keep)
			}
			if keep && !reflect.DeepEqual(dst, c.want) {
				t.Errorf("dst = %#v; want %#v", dst, c.want)
			}
		})
	}
}

// TestFromFuncMisusePanics: naming a column that is not there is a bug in
// the function; it panics, for the worker to recover, log and retry.
func TestFromFuncMisusePanics(t *testing.T) {
	columns := []string{"id", "tier"}
	for name, c := range map[string]struct {
		fn   RowFunc
		want string
	}{
		"misspelt source column": {func(r Row) (bool, error) { r.Set("id", r.Get("idd")); return true, nil }, `Row.Get("idd"): no such source column`},
		"column not in the list": {func(r Row) (bool, error) { r.Set("email", "x"); return true, nil }, `Row.Set("email"): not one of the transformer's columns`},
	} {
		t.Run(name, func(t *testing.T) {
			tr, err := FromFunc(testSource, testDest, columns, c.fn)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), c.want) {
					t.Fatalf("recovered %v; want a panic mentioning %q", r, c.want)
				}
			}()
			_, _ = tr.Apply(testRow(), make([]any, len(columns)))
		})
	}
}

func TestFromFuncErrors(t *testing.T) {
	fn := func(Row) (bool, error) { return true, nil }
	for _, c := range []struct {
		name    string
		columns []string
		fn      RowFunc
		want    []string
	}{
		{"unknown and duplicate columns", []string{"id", "tier", "nope", "tier"}, fn,
			[]string{`column "nope": no such column in the destination table`, `column "tier": listed twice`}},
		{"NOT NULL column not written", []string{"id"}, fn,
			[]string{`destination column "tier" is NOT NULL and has no default`}},
		{"nothing", nil, nil, []string{"fn is nil", "no destination columns"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := FromFunc(testSource, testDest, c.columns, c.fn)
			for _, want := range c.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v does not contain %q", err, want)
				}
			}
		})
	}
}

func TestRowDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts under the race detector")
	}
	tr, err := FromFunc(testSource, testDest, []string{"id", "tier"}, func(r Row) (bool, error) {
		r.Set("id", r.Get("id"))
		r.Set("tier", r.Get("name"))
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	src, dst := testRow(), make([]any, 2)
	if n := testing.AllocsPerRun(100, func() { _, _ = tr.Apply(src, dst) }); n != 0 {
		t.Errorf("%v allocations per row; want 0", n)
	}
}
