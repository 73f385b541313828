package paginator

import (
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestSplitPointsCutEqualPartitions: the split points of a single and a
// composite key cut the matching rows into partitions of about equal
// counts, exactly for a small table and within a few percent from a
// sample, honouring the predicate and the upper bound.
func TestSplitPointsCutEqualPartitions(t *testing.T) {
	pool := testPool(t,
		"CREATE TABLE single (id bigint PRIMARY KEY, v int)",
		"INSERT INTO single SELECT g, g % 7 FROM generate_series(1, 300000) g",
		"CREATE TABLE composite (tenant text, n int, PRIMARY KEY (tenant, n))",
		"INSERT INTO composite SELECT 't' || (g % 13), g FROM generate_series(1, 300000) g",
		"ANALYZE single", "ANALYZE composite",
	)
	single := []KeyColumn{{"id", "bigint"}}
	composite := []KeyColumn{{"tenant", "text"}, {"n", "integer"}}
	cases := []struct {
		name      string
		table     string
		key       []KeyColumn
		where     string
		after     []string
		upper     []string
		n         int
		exactUpTo int64
		tolerance float64 // of a partition's share of the rows
		count     string  // the rows to be split, as SQL
	}{
		{"exact", "single", single, "", nil, nil, 6, splitExactUpTo * 10, 0.001, "SELECT count(*) FROM single"},
		{"exact, where, after and upper", "single", single, "v <> 3", []string{"1000"}, []string{"200000"}, 4, splitExactUpTo * 10, 0.001,
			"SELECT count(*) FROM single WHERE v <> 3 AND id > 1000 AND id <= 200000"},
		{"sampled", "single", single, "", nil, nil, 6, 0, 0.05, "SELECT count(*) FROM single"},
		{"composite, exact", "composite", composite, "", nil, nil, 5, splitExactUpTo * 10, 0.001, "SELECT count(*) FROM composite"},
		{"composite, sampled, upper", "composite", composite, "", nil, []string{"t5", "0"}, 3, 0, 0.05,
			"SELECT count(*) FROM composite WHERE (tenant, n) <= ('t5', 0)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			points, err := splitPoints(ctx, pool, pgx.Identifier{c.table}, c.key, c.where, c.after, c.upper, c.n, 300000, c.exactUpTo)
			if err != nil {
				t.Fatal(err)
			}
			if len(points) != c.n-1 {
				t.Fatalf("%d split points, want %d: %v", len(points), c.n-1, points)
			}
			var total int64
			if err := pool.QueryRow(ctx, c.count).Scan(&total); err != nil {
				t.Fatal(err)
			}
			bounds := append(append([][]string{c.after}, points...), c.upper)
			var sum int64
			for i := 1; i < len(bounds); i++ {
				got := countBetween(t, pool, c.table, c.key, c.where, bounds[i-1], bounds[i])
				sum += got
				share := float64(got) / float64(total)
				if want := 1 / float64(c.n); share < want-c.tolerance || share > want+c.tolerance {
					t.Errorf("partition %d (%v, %v] holds %d of %d rows (%.3f), want %.3f ± %.3f", i, bounds[i-1], bounds[i], got, total, share, want, c.tolerance)
				}
			}
			if sum != total {
				t.Fatalf("the partitions hold %d rows, the range %d", sum, total)
			}
		})
	}
	t.Run("fewer points than partitions", func(t *testing.T) {
		points, err := SplitPoints(t.Context(), pool, pgx.Identifier{"single"}, single, "id <= 3", nil, nil, 10, 300000)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(points, [][]string{{"1"}, {"2"}}, slices.Equal[[]string]) {
			t.Fatalf("3 matching rows in 10 partitions: points %v, want [1] [2]", points)
		}
		if points, err := SplitPoints(t.Context(), pool, pgx.Identifier{"single"}, single, "false", nil, nil, 4, 300000); err != nil || len(points) != 0 {
			t.Fatalf("no matching row: %v, %v", points, err)
		}
	})
}

// countBetween counts the rows matching where with keys in (after, last].
func countBetween(t *testing.T, q Querier, table string, key []KeyColumn, where string, after, last []string) int64 {
	t.Helper()
	p, err := New(Config{Table: pgx.Identifier{table}, Key: key, ChunkSize: 1, Where: where})
	if err != nil {
		t.Fatal(err)
	}
	w := p.keysetWhere(after != nil, last != nil, where)
	var args []any
	for _, k := range append(slices.Clone(after), last...) {
		args = append(args, k)
	}
	// keysetWhere numbers its parameters from $2, after the page's limit
	query := fmt.Sprintf("SELECT count(*) + 0 * $1::int FROM %s AS %s%s", pgx.Identifier{table}.Sanitize(), tableAlias, w)
	rows, err := q.Query(t.Context(), query, append([]any{0}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	counts, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return counts[0]
}
