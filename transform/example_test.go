package transform_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/backfill/backfill/transform"
)

var (
	users = []transform.Column{
		{Name: "id", Type: "bigint", NotNull: true},
		{Name: "email", Type: "text"},
		{Name: "first_name", Type: "text"},
		{Name: "last_name", Type: "text"},
		{Name: "score", Type: "integer"},
		{Name: "payload", Type: "jsonb"},
	}
	customers = []transform.Column{
		{Name: "id", Type: "bigint", NotNull: true},
		{Name: "email", Type: "text"},
		{Name: "full_name", Type: "text"},
		{Name: "tier", Type: "text"},
		{Name: "region", Type: "text"},
		{Name: "created_at", Type: "timestamp with time zone", NotNull: true, HasDefault: true},
	}
)

func ExampleCompile() {
	spec := transform.Spec{
		Columns: []transform.Mapping{
			{Column: "id", Expr: "id"},
			{Column: "email", Expr: "lower(trim(email))"},
			{Column: "full_name", Expr: `first_name + " " + last_name`},
			{Column: "tier", Expr: `score >= 500 ? "gold" : "basic"`},
			{Column: "region", Expr: `payload?.region ?? "unknown"`},
		},
		SkipIf: "email == nil",
	}
	t, err := transform.Compile(spec, users, customers, transform.Options{Now: time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(t.Columns())

	dst := make([]any, len(t.Columns()))
	for _, src := range [][]any{
		{int64(1), " Ada@Example.com", "Ada", "Lovelace", int32(815), `{"region": "eu"}`},
		{int64(2), nil, "Charles", "Babbage", int32(100), nil},
		{int64(3), "alan@example.com", "Alan", "Turing", int32(300), nil},
		{int64(4), "grace@example.com", "Grace", nil, int32(900), nil},
	} {
		switch keep, err := t.Apply(src, dst); {
		case err != nil:
			fmt.Println("failed:", err)
		case !keep:
			fmt.Println("filtered")
		default:
			fmt.Println(dst)
		}
	}

	_, err = transform.Compile(transform.Spec{Columns: []transform.Mapping{
		{Column: "id", Expr: "id"},
		{Column: "tier", Expr: "score * 2"},
		{Column: "region", Expr: "upper(regoin)"},
	}}, users, customers, transform.Options{})
	fmt.Println(err)
	// Output:
	// [id email full_name tier region]
	// [1 ada@example.com Ada Lovelace gold eu]
	// filtered
	// [3 alan@example.com Alan Turing basic unknown]
	// failed: transform column "full_name": expression "first_name + \" \" + last_name": invalid operation: cannot concatenate <nil> (a NULL? use ?? or coalesce) (at character 20)
	// column "tier" (text): expression "score * 2" has type int, which cannot be written to text; convert with string(...)
	// column "region" (text): expression "upper(regoin)": unknown name regoin (at character 7)
}

// A program embedding backfill can transform rows in Go.
func ExampleFromFunc() {
	t, err := transform.FromFunc(users, customers, []string{"id", "full_name", "tier"},
		func(r transform.Row) (bool, error) {
			first, _ := r.Get("first_name").(string)
			last, _ := r.Get("last_name").(string)
			if first == "" && last == "" {
				return false, nil // filtered
			}
			r.Set("id", r.Get("id"))
			r.Set("full_name", strings.TrimSpace(first+" "+last))
			if score, _ := r.Get("score").(int32); score >= 500 {
				r.Set("tier", "gold")
			}
			return true, nil
		})
	if err != nil {
		fmt.Println(err)
		return
	}
	dst := make([]any, len(t.Columns()))
	for _, src := range [][]any{
		{int64(1), "ada@example.com", "Ada", "Lovelace", int32(815), nil},
		{int64(2), "x@example.com", nil, nil, int32(0), nil},
		{int64(3), "alan@example.com", "Alan", nil, int32(300), nil},
	} {
		switch keep, err := t.Apply(src, dst); {
		case err != nil:
			fmt.Println("failed:", err)
		case !keep:
			fmt.Println("filtered")
		default:
			fmt.Println(dst)
		}
	}
	// Output:
	// [1 Ada Lovelace gold]
	// filtered
	// [3 Alan <nil>]
}

// Go functions can also be called from expressions, beside the helpers.
func ExampleFunc() {
	initials := transform.Func{
		Fn: func(args ...any) (any, error) {
			var b strings.Builder
			for _, a := range args {
				if s, ok := a.(string); ok && s != "" {
					b.WriteString(s[:1])
				}
			}
			return b.String(), nil
		},
		Types: []any{new(func(first, last string) string)},
	}
	t, err := transform.Compile(transform.Spec{Columns: []transform.Mapping{
		{Column: "id", Expr: "id"},
		{Column: "full_name", Expr: `initials(first_name, last_name) + " " + sha256(email)[:8]`},
	}}, users, customers, transform.Options{Funcs: map[string]transform.Func{"initials": initials}})
	if err != nil {
		fmt.Println(err)
		return
	}
	dst := make([]any, 2)
	_, err = t.Apply([]any{int64(1), "ada@example.com", "Ada", "Lovelace", int32(815), nil}, dst)
	fmt.Println(dst, err)
	// Output:
	// [1 AL b5fc85e5] <nil>
}
