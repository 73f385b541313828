package benchdata_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/internal/benchdata"
	"github.com/backfill/backfill/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestRowMatchesFill: the Go rows the micro-benchmarks use are the rows
// Fill writes, read back as the paginator reads them (jsonb as text), over
// enough keys to meet every NULL and every city.
func TestRowMatchesFill(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	table := pgx.Identifier{"public", "s"}
	const first, last = 1, 400
	if err := benchdata.Create(ctx, conn, table); err != nil {
		t.Fatal(err)
	}
	if err := benchdata.Fill(ctx, conn, table, first, last); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "SELECT id, name, email, city, qty, created_at, attrs::text FROM public.s ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != last-first+1 {
		t.Fatalf("Fill wrote %d rows for keys %d…%d", len(got), first, last)
	}
	for i, row := range got {
		want := benchdata.Row(int64(first + i))
		if len(row) != len(want) || len(row) != len(benchdata.Columns) {
			t.Fatalf("row %d has %d values, Row %d, Columns %d", first+i, len(row), len(want), len(benchdata.Columns))
		}
		for j := range row {
			g, w := row[j], want[j]
			if gt, ok := g.(time.Time); ok {
				if wt, ok := w.(time.Time); !ok || !gt.Equal(wt) {
					t.Fatalf("key %d, %s: Fill wrote %v, Row says %v", first+i, benchdata.Columns[j].Name, g, w)
				}
				continue
			}
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("key %d, %s: Fill wrote %#v, Row says %#v", first+i, benchdata.Columns[j].Name, g, w)
			}
		}
	}
}
