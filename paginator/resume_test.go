package paginator

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backfill/backfill/chunk"
	"github.com/backfill/backfill/internal/pgtest"
	"github.com/backfill/backfill/retry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testPool(t *testing.T, setup ...string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for _, q := range setup {
		if _, err := pool.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return pool
}

// readAll runs p to the end and returns the keys of every row it read, and
// the chunks.
func readAll(t *testing.T, p *Paginator, q Querier) ([]string, []*chunk.Chunk) {
	t.Helper()
	out := make(chan *chunk.Chunk, 1000)
	if err := p.Run(context.Background(), q, out); err != nil {
		t.Fatal(err)
	}
	close(out)
	var keys []string
	var chunks []*chunk.Chunk
	for c := range out {
		chunks = append(chunks, c)
		for _, k := range c.Keys {
			keys = append(keys, k[0])
		}
	}
	return keys, chunks
}

func ints(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

func key(s string) []string { return []string{s} }

// TestResumeReadsGapsBoundedByTheNextCommittedRun: an interrupted run left
// gaps between committed chunks, and the rows at the edges of committed
// chunks were deleted before the resume. Each gap must be read up to where
// the next committed run starts, whether or not a row is there: reading on
// would take committed keys for gap keys, and a chunk ending at a committed
// chunk's last key would be taken for that chunk and its gap rows lost.
func TestResumeReadsGapsBoundedByTheNextCommittedRun(t *testing.T) {
	pool := testPool(t,
		"CREATE TABLE s (id int PRIMARY KEY)",
		"INSERT INTO s SELECT generate_series(1, 1000)",
		// the rows from the gap's middle to the end of the next committed
		// chunk but ten go: the gap's 19 rows and those ten fit in a chunk
		"DELETE FROM s WHERE id BETWEEN 120 AND 290",
		// the first row of the table's first committed run after a gap
		"DELETE FROM s WHERE id = 701",
	)
	committed := []Range{
		{After: nil, Last: key("100")},
		// gap (100, 200]
		{After: key("200"), Last: key("300")}, {After: key("300"), Last: key("400")},
		// gap (400, 500]
		{After: key("500"), Last: key("600")},
		// gap (600, 700]
		{After: key("700"), Last: key("800")}, {After: key("800"), Last: key("900")},
		// the tail (900, 1000] is a gap too
	}
	p, err := New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}},
		ChunkSize: 100, Upper: key("1000"), Committed: committed, NextSeq: 11})
	if err != nil {
		t.Fatal(err)
	}
	got, chunks := readAll(t, p, pool)
	want := slices.Concat(ints(101, 119), ints(401, 500), ints(601, 700), ints(901, 1000))
	if !slices.Equal(got, want) {
		t.Fatalf("read keys %v;\nwant the gaps' keys %v", got, want)
	}
	for _, c := range chunks {
		for _, r := range committed {
			if slices.Equal(c.Last, r.Last) {
				t.Errorf("chunk (%v, %v] ends where committed chunk (%v, %v] does", c.After, c.Last, r.After, r.Last)
			}
		}
	}
	if chunks[0].Seq != 11 || !slices.Equal(chunks[0].After, key("100")) {
		t.Errorf("first chunk: seq %d after %v; want seq 11 after [100]", chunks[0].Seq, chunks[0].After)
	}
}

// TestResumeOrdersRunsAsTheSourceCompares: run start keys are sorted by
// the source with the key column's collation. Under the ICU root collation
// "a" < "B" < "c"; byte order (C) says "B" < "a" < "c", and a gap bounded
// by the wrong run would read committed keys.
func TestResumeOrdersRunsAsTheSourceCompares(t *testing.T) {
	pool := testPool(t)
	var icu bool
	if err := pool.QueryRow(t.Context(), "SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')").Scan(&icu); err != nil {
		t.Fatal(err)
	}
	collation := `"C"`
	if icu {
		collation = `"und-x-icu"`
	} else {
		t.Log("this server has no ICU collations: checking the byte-order collation only")
	}
	for _, q := range []string{
		"CREATE TABLE s (k text COLLATE " + collation + " PRIMARY KEY)",
		"INSERT INTO s VALUES ('a'), ('a1'), ('B'), ('B1'), ('c'), ('c1'), ('D'), ('D1')",
	} {
		if _, err := pool.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	rows, err := pool.Query(t.Context(), "SELECT k FROM s ORDER BY k")
	if err != nil {
		t.Fatal(err)
	}
	order, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	// Commit each "x1" row as its own one-row chunk, after "x": every other
	// row is a gap.
	var committed []Range
	var gaps []string
	for i := 0; i < len(order); i += 2 {
		committed = append(committed, Range{After: key(order[i]), Last: key(order[i+1])})
		gaps = append(gaps, order[i])
	}
	slices.Reverse(committed) // the checkpoint returns them in no order
	p, err := New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"k", "text"}},
		ChunkSize: 10, Upper: key(order[len(order)-1]), Committed: committed})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := readAll(t, p, pool)
	if !slices.Equal(got, gaps) {
		t.Fatalf("read %v; want the gap rows %v (table order %v)", got, gaps, order)
	}
}

// TestResumeOrdersRunsByTheKeyType: runs are sorted as their key type
// sorts, not as text: "12" sorts before "8" as text, and a gap bounded by
// the wrong run would read committed key 9.
func TestResumeOrdersRunsByTheKeyType(t *testing.T) {
	pool := testPool(t,
		"CREATE TABLE s (id int PRIMARY KEY)",
		"INSERT INTO s SELECT generate_series(1, 30)",
		"DELETE FROM s WHERE id = 8", // where the run (8, 9] begins
	)
	p, err := New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}}, ChunkSize: 3, Upper: key("30"),
		Committed: []Range{{After: key("12"), Last: key("20")}, {After: nil, Last: key("3")}, {After: key("8"), Last: key("9")}}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := readAll(t, p, pool)
	if want := slices.Concat(ints(4, 7), ints(10, 12), ints(21, 30)); !slices.Equal(got, want) {
		t.Fatalf("read %v; want the gaps %v", got, want)
	}
}

// costlyPredicatePool is a database with s (ids 1…10000) and costly(id),
// which burns about 0.13 ms of CPU per call and returns matches.
func costlyPredicatePool(t *testing.T, matches string) *pgxpool.Pool {
	t.Helper()
	return testPool(t,
		"CREATE TABLE s (id int PRIMARY KEY)",
		"INSERT INTO s SELECT generate_series(1, 10000)",
		`CREATE FUNCTION costly(id int) RETURNS boolean LANGUAGE plpgsql AS $$
		 DECLARE s text;
		 BEGIN FOR i IN 1..200 LOOP s := md5(i::text); END LOOP; RETURN `+matches+`; END $$`,
	)
}

// TestRarePredicateIsReadInBoundedSteps: a where predicate that matches one
// row in 2500, each row costing about 0.13 ms of CPU to test, under a
// 150 ms statement_timeout. A page query that looked for a chunk's worth of
// matching rows would scan 2500 rows (about 340 ms here) and time out on
// every retry; a step of 100 rows takes about 14 ms.
func TestRarePredicateIsReadInBoundedSteps(t *testing.T) {
	pool := costlyPredicatePool(t, "id % 2500 = 0")
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(t.Context(), "SET statement_timeout = '150ms'"); err != nil {
		t.Fatal(err)
	}
	// A busy machine may push one 14 ms step past the timeout; retries
	// absorb that, while a scan for a chunk's worth of matches would time
	// out on every one of them.
	p, err := New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}}, Columns: []ReadColumn{{Name: "id"}},
		ChunkSize: 100, Upper: key("10000"), Where: "costly(id)",
		Retry: retry.Policy{MaxRetries: 5, Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := p.First(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Keys) != 1 || first.Keys[0][0] != "2500" {
		t.Fatalf("First read keys %v; want the first matching row, 2500", first.Keys)
	}

	got, chunks := readAll(t, p, conn)
	if want := []string{"2500", "5000", "7500", "10000"}; !slices.Equal(got, want) {
		t.Fatalf("read %v; want %v", got, want)
	}
	// each chunk covers its whole step, so it ends where the step ends
	for _, c := range chunks {
		if len(c.Rows) == 0 {
			continue // a step without a matching row (TestEmptyStepsAreSentAsChunks)
		}
		if len(c.Rows) != 1 || !slices.Equal(c.Last, c.First) {
			t.Errorf("chunk (%v, %v] holds keys %v; want one, ending its step", c.After, c.Last, c.Keys)
		}
	}
}

// TestLastKeyOfAFilteredJob: the job's end is the last matching key when
// the source finds it quickly, as for a predicate that bounds the key; when
// the search outlasts its bound, the table's last key bounds the same rows.
func TestLastKeyOfAFilteredJob(t *testing.T) {
	pool := costlyPredicatePool(t, "id = 1")
	keyCols := []KeyColumn{{"id", "integer"}}
	last, err := LastKey(t.Context(), pool, pgx.Identifier{"s"}, keyCols, "id <= 600")
	if err != nil || !slices.Equal(last, key("600")) {
		t.Fatalf("last key where id <= 600: %v, %v; want [600]", last, err)
	}
	last, err = LastKey(t.Context(), pool, pgx.Identifier{"s"}, keyCols, "id > 10000")
	if err != nil || last == nil || len(last) != 0 {
		t.Fatalf("last key where nothing matches: %v, %v; want an empty key", last, err)
	}
	// only id 1 matches, and finding it scans 10000 rows backwards (about
	// 1.3 s here): a 100 ms search gives up and takes the table's end
	last, err = lastKeyWithin(t.Context(), pool, pgx.Identifier{"s"}, keyCols, "costly(id)", 100*time.Millisecond)
	if err != nil || !slices.Equal(last, key("10000")) {
		t.Fatalf("last key of a rare predicate after a short search: %v, %v; want the table's, [10000]", last, err)
	}
}

// countingQuerier counts the step queries run through it.
type countingQuerier struct {
	Querier
	steps int
}

func (c *countingQuerier) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if strings.Contains(sql, " OFFSET ") {
		c.steps++
	}
	return c.Querier.Query(ctx, sql, args...)
}

// TestEmptyStepsAreSentAsChunks: a predicate that matches 2 rows of 10000
// (ids 150 and 9950). Every step is sent as a chunk, those without a
// matching row with no rows, and together they tile the table; a resume
// from what a run had committed when it was stopped walks only the steps
// it had not, not every step since the last matching row.
func TestEmptyStepsAreSentAsChunks(t *testing.T) {
	pool := testPool(t,
		"CREATE TABLE s (id int PRIMARY KEY)",
		"INSERT INTO s SELECT generate_series(1, 10000)",
	)
	cfg := Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}}, Columns: []ReadColumn{{Name: "id"}},
		ChunkSize: 100, Upper: key("10000"), Where: "id IN (150, 9950)", NextSeq: 1}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	q := &countingQuerier{Querier: pool}
	got, chunks := readAll(t, p, q)
	if want := []string{"150", "9950"}; !slices.Equal(got, want) {
		t.Fatalf("read %v; want %v", got, want)
	}
	var after []string
	for i, c := range chunks {
		if !slices.Equal(c.After, after) || c.Seq != int64(i+1) {
			t.Fatalf("chunk %d is seq %d (%v, %v]; want seq %d after %v: the chunks must tile the table", i, c.Seq, c.After, c.Last, i+1, after)
		}
		after = c.Last
	}
	if len(chunks) != 100 || !slices.Equal(after, key("10000")) {
		t.Fatalf("%d chunks ending at %v; want the table's 100 steps, to 10000", len(chunks), after)
	}
	walked := q.steps

	// Stopped after 60 steps: 59 of them empty since the match at 150.
	var committed []Range
	for _, c := range chunks[:60] {
		committed = append(committed, Range{After: c.After, Last: c.Last, Seq: c.Seq})
	}
	cfg.Committed, cfg.NextSeq = committed, 61
	p, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	q.steps = 0
	got, chunks = readAll(t, p, q)
	if want := []string{"9950"}; !slices.Equal(got, want) {
		t.Fatalf("the resume read %v; want %v", got, want)
	}
	if len(chunks) != 40 || !slices.Equal(chunks[0].After, key("6000")) || chunks[0].Seq != 61 {
		t.Fatalf("the resume sent %d chunks, the first (%v, %v] seq %d; want 40 from 6000, from seq 61", len(chunks), chunks[0].After, chunks[0].Last, chunks[0].Seq)
	}
	if walked != 100 || q.steps != walked-60 {
		t.Fatalf("the resume ran %d step queries; the whole run took %d and 60 steps were committed", q.steps, walked)
	}
}

// TestResumeReadsTheRestOfASplitChunkAsThatChunk: chunk 2, (100, 200], was
// split after timeouts and only its first piece, (100, 150], committed
// before the runner died; chunks 3 and 4 committed. The resume reads the
// rest, (150, 200], as chunk 2 again, ending where chunk 2 ended, so the
// job still counts one chunk for it. Where the chunk after a split chunk is
// not committed either, the rest still ends at the split chunk's end.
func TestResumeReadsTheRestOfASplitChunkAsThatChunk(t *testing.T) {
	pool := testPool(t,
		"CREATE TABLE s (id int PRIMARY KEY)",
		"INSERT INTO s SELECT generate_series(1, 500)",
	)
	for _, c := range []struct {
		name      string
		committed []Range
		want      []Range // the chunks read: ranges, seqs
	}{
		{"the next chunk committed", []Range{
			{After: nil, Last: key("100"), Seq: 1},
			{After: key("100"), Last: key("150"), Seq: 2, SplitLast: key("200")},
			{After: key("200"), Last: key("300"), Seq: 3},
			{After: key("300"), Last: key("400"), Seq: 4},
		}, []Range{{After: key("150"), Last: key("200"), Seq: 2}, {After: key("400"), Last: key("500"), Seq: 5}}},
		{"the next chunk not committed", []Range{
			{After: nil, Last: key("100"), Seq: 1},
			{After: key("100"), Last: key("125"), Seq: 2, SplitLast: key("200")},
			{After: key("125"), Last: key("150"), Seq: 2, SplitLast: key("200")},
			{After: key("300"), Last: key("400"), Seq: 4},
		}, []Range{{After: key("150"), Last: key("200"), Seq: 2}, {After: key("200"), Last: key("300"), Seq: 5}, {After: key("400"), Last: key("500"), Seq: 6}}},
		{"the last chunk", []Range{
			{After: nil, Last: key("400"), Seq: 1},
			{After: key("400"), Last: key("450"), Seq: 2, SplitLast: key("500")},
		}, []Range{{After: key("450"), Last: key("500"), Seq: 2}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}}, Columns: []ReadColumn{{Name: "id"}},
				ChunkSize: 100, Upper: key("500"), Committed: c.committed, NextSeq: 5})
			if err != nil {
				t.Fatal(err)
			}
			_, chunks := readAll(t, p, pool)
			var got []Range
			for _, ch := range chunks {
				got = append(got, Range{After: ch.After, Last: ch.Last, Seq: ch.Seq})
			}
			if !slices.EqualFunc(got, c.want, func(a, b Range) bool {
				return slices.Equal(a.After, b.After) && slices.Equal(a.Last, b.Last) && a.Seq == b.Seq
			}) {
				t.Fatalf("read chunks %v; want %v", got, c.want)
			}
		})
	}
}

// TestOverlappingCommittedRangesAreMerged: older versions could commit
// chunks that overlap (two runners at once): here (150, 200] inside
// (100, 300], and two chunks that begin at the same key, (300, 350] and
// (300, 400]. The resume reads only what no range covers, as runs covering
// their union, instead of a chunk that ends where a committed one does.
func TestOverlappingCommittedRangesAreMerged(t *testing.T) {
	pool := testPool(t,
		"CREATE TABLE s (id int PRIMARY KEY)",
		"INSERT INTO s SELECT generate_series(1, 600)",
	)
	committed := []Range{
		{After: nil, Last: key("100"), Seq: 1},
		{After: key("100"), Last: key("300"), Seq: 2},
		{After: key("150"), Last: key("200"), Seq: 3},
		{After: key("300"), Last: key("400"), Seq: 4},
		{After: key("300"), Last: key("350"), Seq: 5},
		{After: key("500"), Last: key("600"), Seq: 6},
	}
	for _, order := range [][]int{{0, 1, 2, 3, 4, 5}, {5, 4, 3, 2, 1, 0}, {2, 4, 0, 5, 3, 1}} {
		var shuffled []Range
		for _, i := range order {
			shuffled = append(shuffled, committed[i])
		}
		p, err := New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}}, Columns: []ReadColumn{{Name: "id"}},
			ChunkSize: 100, Upper: key("600"), Committed: shuffled, NextSeq: 7})
		if err != nil {
			t.Fatal(err)
		}
		got, chunks := readAll(t, p, pool)
		if want := ints(401, 500); !slices.Equal(got, want) {
			t.Fatalf("ranges in order %v: read %v; want only the keys no range covers, %v", order, got, want)
		}
		if len(chunks) != 1 || !slices.Equal(chunks[0].After, key("400")) {
			t.Fatalf("ranges in order %v: read %d chunks; want one after 400", order, len(chunks))
		}
	}
}
