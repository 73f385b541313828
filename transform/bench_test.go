package transform

import (
	"fmt"
	"testing"

	"github.com/backfill/backfill/internal/benchdata"
)

// benchSpec is a five-column mapping with a bare copy, string functions, a
// concatenation, a ternary and a default: the issue's mapping, with region
// read from a text column.
var benchSpec = Spec{
	Columns: []Mapping{
		{"id", "id"},
		{"email", "lower(trim(email))"},
		{"full_name", `first_name + " " + last_name`},
		{"tier", `score >= 500 ? "gold" : "basic"`},
		{"region", `country ?? "unknown"`},
	},
	SkipIf: "email == nil",
}

func benchTables(scoreType string) (source, dest []Column) {
	source = []Column{
		{Name: "id", Type: "bigint", NotNull: true},
		{Name: "email", Type: "text"},
		{Name: "first_name", Type: "text"},
		{Name: "last_name", Type: "text"},
		{Name: "score", Type: scoreType},
		{Name: "country", Type: "character varying(2)"},
		{Name: "payload", Type: "jsonb"},
	}
	dest = []Column{
		{Name: "id", Type: "bigint", NotNull: true},
		{Name: "email", Type: "text"},
		{Name: "full_name", Type: "text"},
		{Name: "tier", Type: "text", NotNull: true},
		{Name: "region", Type: "text"},
		{Name: "created_at", Type: "timestamp with time zone", NotNull: true, HasDefault: true},
	}
	return source, dest
}

// benchRows are varied rows: a third of the emails are clean, a third need
// lowering, a third trimming; scores straddle the threshold; a quarter of
// the countries are NULL.
func benchRows(n int, score func(int) any) [][]any {
	rows := make([][]any, n)
	for i := range rows {
		email := fmt.Sprintf("user%d@example.com", i)
		switch i % 3 {
		case 1:
			email = fmt.Sprintf("User%d@Example.COM", i)
		case 2:
			email = fmt.Sprintf(" user%d@example.com ", i)
		}
		var country any = "DE"
		if i%4 == 0 {
			country = nil
		}
		rows[i] = []any{int64(1000000 + i), email, fmt.Sprintf("First%d", i), fmt.Sprintf("Last%d", i), score(i), country,
			fmt.Sprintf(`{"region": "r%d", "plan": {"name": "pro", "seats": %d}}`, i%5, i%50)}
	}
	return rows
}

// BenchmarkApply measures one row per op (see benchApply).
func BenchmarkApply(b *testing.B) {
	issueMapping := Spec{Columns: append(benchSpec.Columns[:4:4], Mapping{"region", `payload?.region ?? "unknown"`}), SkipIf: benchSpec.SkipIf}
	for _, c := range []struct {
		name      string
		spec      Spec
		scoreType string
		score     func(int) any
	}{
		{"five_columns/score_bigint", benchSpec, "bigint", func(i int) any { return int64(300 + i%400) }},
		{"five_columns/score_integer", benchSpec, "integer", func(i int) any { return int32(300 + i%400) }},
		{"issue_mapping_jsonb", issueMapping, "bigint", func(i int) any { return int64(300 + i%400) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			source, dest := benchTables(c.scoreType)
			tr, err := Compile(c.spec, source, dest, Options{})
			if err != nil {
				b.Fatal(err)
			}
			benchApply(b, tr, benchRows(benchRowCount, c.score))
		})
	}
}

// BenchmarkIdentity is the straight copy's transform, one row of the
// benchmark table (internal/benchdata) per op: what every row of a
// `--rate 0` copy without a mapping goes through.
func BenchmarkIdentity(b *testing.B) {
	var cols []Column
	for _, c := range benchdata.Columns {
		cols = append(cols, Column{Name: c.Name, Type: c.Type, OID: c.OID})
	}
	tr, err := Identity(cols, cols)
	if err != nil {
		b.Fatal(err)
	}
	rows := make([][]any, benchRowCount)
	for i := range rows {
		rows[i] = benchdata.Row(int64(i + 1))
	}
	benchApply(b, tr, rows)
}

// benchRowCount rows are cycled through by a mask: a power of two.
const benchRowCount = 1024

// benchApply applies tr to one of rows per op. rows/s is per core: it
// divides rows by the process's CPU time where the platform reports it
// (GC included), so other load on the machine does not count against it.
func benchApply(b *testing.B, tr Transformer, rows [][]any) {
	if len(rows) != benchRowCount {
		b.Fatalf("%d rows, want %d", len(rows), benchRowCount)
	}
	dst := make([]any, len(tr.Columns()))
	b.ReportAllocs()
	cpu := cpuTime()
	i := 0
	for b.Loop() {
		if _, err := tr.Apply(rows[i&(benchRowCount-1)], dst); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if used := cpuTime() - cpu; used > 0 {
		b.ReportMetric(float64(b.N)/used.Seconds(), "rows/s")
	}
}
