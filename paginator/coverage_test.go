package paginator

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backfill/backfill/retry"
)

// icuCollation is the ICU root collation when the server has ICU, under
// which "a" < "B" < "c" where byte order says "B" < "a" < "c"; else "C".
func icuCollation(t *testing.T, q Querier) string {
	t.Helper()
	rows, err := q.Query(t.Context(), "SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')")
	if err != nil {
		t.Fatal(err)
	}
	icu, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[bool])
	if err != nil {
		t.Fatal(err)
	}
	if !icu {
		t.Log("this server has no ICU collations: checking the byte-order collation only")
		return `"C"`
	}
	return `"und-x-icu"`
}

// TestSpansInTheSourcesKeyOrder: committed ranges given in no order are
// tiled with the gaps between them in the order the source sorts its key,
// for a collated text key and for a composite (numeric, collated text) key
// (numeric 10 sorts after 9, as text before it), and Count finds each
// gap's rows. The expected spans are built from the source's own ORDER BY.
func TestSpansInTheSourcesKeyOrder(t *testing.T) {
	pool := testPool(t)
	coll := icuCollation(t, pool)
	cases := []struct {
		name, ddl, rows string
		key             []KeyColumn
	}{
		{"collated text", "k text COLLATE " + coll + " PRIMARY KEY",
			"('a'), ('a1'), ('B'), ('B1'), ('c'), ('c1'), ('D'), ('D1')",
			[]KeyColumn{{"k", "text"}}},
		{"numeric and collated text", "n numeric, k text COLLATE " + coll + ", PRIMARY KEY (n, k)",
			"(9, 'a'), (9, 'B'), (10, 'a'), (10, 'B'), (10, 'c'), (100, 'B'), (100, 'c'), (100, 'D')",
			[]KeyColumn{{"n", "numeric"}, {"k", "text"}}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			table := fmt.Sprintf("s%d", i)
			names := make([]string, len(c.key))
			for j, k := range c.key {
				names[j] = k.Name + "::text"
			}
			for _, q := range []string{
				fmt.Sprintf("CREATE TABLE %s (%s)", table, c.ddl),
				fmt.Sprintf("INSERT INTO %s VALUES %s", table, c.rows),
			} {
				if _, err := pool.Exec(t.Context(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			rows, err := pool.Query(t.Context(), fmt.Sprintf("SELECT ARRAY[%s] FROM %s ORDER BY %s",
				strings.Join(names, ", "), table, keyOrder(c.key)))
			if err != nil {
				t.Fatal(err)
			}
			order, err := pgx.CollectRows(rows, pgx.RowTo[[]string])
			if err != nil {
				t.Fatal(err)
			}
			// committed: (start, o1], (o3, o4], (o5, o6]; gaps (o1, o3],
			// (o4, o5], (o6, o7]
			committed := []Range{{After: order[5], Last: order[6]}, {After: order[3], Last: order[4]}, {After: nil, Last: order[1]}}
			want := []Span{
				{After: nil, Last: order[1], Committed: true},
				{After: order[1], Last: order[3]},
				{After: order[3], Last: order[4], Committed: true},
				{After: order[4], Last: order[5]},
				{After: order[5], Last: order[6], Committed: true},
				{After: order[6], Last: order[7]},
			}
			wantRows := []int64{2, 2, 1, 1, 1, 1}
			p, err := New(Config{Table: pgx.Identifier{table}, Key: c.key, ChunkSize: 1, Upper: order[7], Committed: committed})
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Spans(t.Context(), pool)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, want, sameSpan) {
				t.Fatalf("spans %v;\nwant %v (the source's order %v)", got, want, order)
			}
			for j, s := range got {
				n, err := p.Count(t.Context(), pool, s.After, s.Last, 1)
				if err != nil {
					t.Fatal(err)
				}
				if n != wantRows[j] {
					t.Errorf("span (%v, %v]: %d rows, want %d", s.After, s.Last, n, wantRows[j])
				}
			}
		})
	}
}

func keyOrder(key []KeyColumn) string {
	names := make([]string, len(key))
	for i, k := range key {
		names[i] = k.Name
	}
	return strings.Join(names, ", ")
}

func sameSpan(a, b Span) bool {
	return a.Committed == b.Committed && KeyString(a.After) == KeyString(b.After) && KeyString(a.Last) == KeyString(b.Last)
}

// TestSpansOfAJobWithoutCommittedChunks: a job that committed nothing is
// one gap from the start to its end; a job whose source was empty at its
// start has no gap.
func TestSpansOfAJobWithoutCommittedChunks(t *testing.T) {
	pool := testPool(t, "CREATE TABLE s (id int PRIMARY KEY)")
	p, err := New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}}, ChunkSize: 1, Upper: key("500")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Spans(t.Context(), pool)
	if want := []Span{{After: nil, Last: key("500")}}; err != nil || !slices.EqualFunc(got, want, sameSpan) {
		t.Fatalf("spans %v, %v; want %v", got, err, want)
	}
	p, err = New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}}, ChunkSize: 1, Upper: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Spans(t.Context(), pool); err != nil || len(got) != 0 {
		t.Fatalf("spans of a job over an empty table: %v, %v; want none", got, err)
	}
}

// TestCountInBoundedSteps: Count counts the rows that match Where, in
// steps of table rows, under a statement_timeout that a count of the whole
// range in one statement would outlast: 10,000 rows of a predicate costing
// about 0.13 ms each take about 1.3 s, a step of 100 rows about 14 ms.
func TestCountInBoundedSteps(t *testing.T) {
	pool, conn := costlyPredicateConn(t, "id % 7 = 0", "150ms")
	keyCols := []KeyColumn{{"id", "integer"}}
	// retries absorb a step that a busy machine pushes past the timeout
	filtered, err := New(Config{Table: pgx.Identifier{"s"}, Key: keyCols, ChunkSize: 1, Where: "costly(id)",
		Retry: retry.Policy{MaxRetries: 5, Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	all, err := New(Config{Table: pgx.Identifier{"s"}, Key: keyCols, ChunkSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name        string
		p           *Paginator
		after, last []string
		want        string // the same count in plain SQL
	}{
		{"filtered, whole table", filtered, nil, key("10000"), "SELECT count(*) FROM s WHERE id % 7 = 0"},
		{"filtered, from a key to the end", filtered, key("4321"), nil, "SELECT count(*) FROM s WHERE id > 4321 AND id % 7 = 0"},
		{"filtered, a step's multiple", filtered, key("100"), key("300"), "SELECT count(*) FROM s WHERE id > 100 AND id <= 300 AND id % 7 = 0"},
		{"all rows", all, key("17"), key("9000"), "SELECT count(*) FROM s WHERE id > 17 AND id <= 9000"},
		{"an empty range", all, key("9000"), key("17"), "SELECT 0::bigint"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var want int64
			if err := pool.QueryRow(t.Context(), c.want).Scan(&want); err != nil {
				t.Fatal(err)
			}
			got, err := c.p.Count(t.Context(), conn, c.after, c.last, 100)
			if err != nil || got != want {
				t.Fatalf("count (%v, %v]: %d, %v; want %d", c.after, c.last, got, err, want)
			}
		})
	}
}

// costlyPredicateConn is costlyPredicatePool and a connection of it whose
// statements time out after timeout.
func costlyPredicateConn(t *testing.T, matches, timeout string) (*pgxpool.Pool, *pgxpool.Conn) {
	t.Helper()
	pool := costlyPredicatePool(t, matches)
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	if _, err := conn.Exec(t.Context(), "SET statement_timeout = '"+timeout+"'"); err != nil {
		t.Fatal(err)
	}
	return pool, conn
}

// TestCheckKeyCast: a char(8) key cast to character (char(1)) reads back
// cut, and is refused; cast to bpchar it reads back whole.
func TestCheckKeyCast(t *testing.T) {
	pool := testPool(t, "CREATE TABLE s (k char(8), n numeric, PRIMARY KEY (k, n))")
	for _, c := range []struct {
		typ string
		ok  bool
	}{{"character", false}, {"bpchar", true}, {"character(8)", true}} {
		p, err := New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"k", c.typ}, {"n", "numeric"}}, ChunkSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		err = p.CheckKeyCast(t.Context(), pool, []string{"00002500", "1.50"})
		if (err == nil) != c.ok {
			t.Errorf("key (00002500, 1.50) cast to (%s, numeric): %v; want ok %v", c.typ, err, c.ok)
		}
	}
}
