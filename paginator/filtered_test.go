package paginator

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// insertingBetween is a source where the application inserts rows at the
// worst moment for a filtered job: after each step query found where its
// chunk ends and before the page query reads the chunk's rows. It inserts,
// through a session of its own, n new keys just after the step's cursor.
type insertingBetween struct {
	t        *testing.T
	pool     *pgxpool.Pool
	n        int
	afterStp bool
	inserted int
}

func (q *insertingBetween) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	isStep := strings.Contains(sql, "OFFSET")
	if q.afterStp && !isStep {
		params := args
		if _, ok := params[0].(pgx.QueryResultFormats); ok {
			params = params[1:]
		}
		cursor := 0
		if len(params) > 1 && strings.Contains(sql, ") > (") {
			c, err := strconv.Atoi(params[1].(string))
			if err != nil {
				q.t.Fatalf("cursor %v: %v", params[1], err)
			}
			cursor = c
		}
		tag, err := q.pool.Exec(ctx, "INSERT INTO s SELECT g FROM generate_series($1::int, $1::int + 2 * ($2::int - 1), 2) g ON CONFLICT DO NOTHING", cursor+1, q.n)
		if err != nil {
			q.t.Fatalf("insert after the step: %v", err)
		}
		q.inserted += int(tag.RowsAffected())
	}
	q.afterStp = isStep
	return q.pool.Query(ctx, sql, args...)
}

// TestFilteredChunkClaimsOnlyTheKeysItRead: rows inserted inside a step
// between its step query and its page query push the step's last matching
// rows past the page's LIMIT. A chunk that still claimed the whole step
// would cover keys it never read, and those rows would never be copied.
func TestFilteredChunkClaimsOnlyTheKeysItRead(t *testing.T) {
	pool := testPool(t,
		"CREATE TABLE s (id int PRIMARY KEY)",
		"INSERT INTO s SELECT generate_series(2, 4000, 2)", // 2000 rows, even keys
	)
	src := &insertingBetween{t: t, pool: pool, n: 5}
	p, err := New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}}, Columns: []ReadColumn{{Name: "id"}},
		ChunkSize: 100, Upper: key("4000"), Where: "id > 0"})
	if err != nil {
		t.Fatal(err)
	}
	_, chunks := readAll(t, p, src)
	if src.inserted == 0 {
		t.Fatal("no row was inserted between a step and its page: the test did not test anything")
	}

	read := map[int]int{}
	var after []string
	for _, c := range chunks {
		if !slices.Equal(c.After, after) {
			t.Fatalf("chunk (%v, %v] does not begin where the previous ended, %v", c.After, c.Last, after)
		}
		for _, k := range c.Keys {
			id, _ := strconv.Atoi(k[0])
			if (c.After != nil && id <= atoi(t, c.After[0])) || id > atoi(t, c.Last[0]) {
				t.Errorf("chunk (%v, %v] holds key %d outside its range", c.After, c.Last, id)
			}
			read[id]++
		}
		after = c.Last
	}
	var lost []int
	for id := 2; id <= 4000; id += 2 {
		if read[id] != 1 {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d pre-existing rows were read %s times other than once (%d rows inserted meanwhile): %v",
			len(lost), "zero or several", src.inserted, lost[:min(len(lost), 20)])
	}
	t.Logf("%d chunks; %d rows inserted between steps and pages", len(chunks), src.inserted)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(fmt.Errorf("key %q: %w", s, err))
	}
	return n
}
