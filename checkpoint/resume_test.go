package checkpoint_test

import (
	"context"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/chunk"
	"github.com/backfill/backfill/paginator"
)

func intKey(i int) []string { return []string{strconv.Itoa(i)} }

// recordRanges records each range as a chunk row of job j, as record-chunk
// does; after 0 stands for the start of the table.
func recordRanges(t *testing.T, q checkpoint.Querier, store *checkpoint.Store, gen int64, ranges []paginator.Range) {
	t.Helper()
	for _, r := range ranges {
		rec := checkpoint.ChunkRecord{Seq: r.Seq, After: r.After, First: r.Last, Last: r.Last, Generation: gen, SplitLast: r.SplitLast}
		if _, err := q.Exec(t.Context(), store.RecordChunkSQL(), checkpoint.RecordChunkArgs("j", rec, 0, 0)...); err != nil {
			t.Fatalf("record %+v: %v", r, err)
		}
	}
}

// chunksRead runs a paginator over s (ids 1…n) and returns the chunks it
// sends, as ranges with their seqs, and the keys it reads.
func chunksRead(t *testing.T, q paginator.Querier, cfg paginator.Config) ([]paginator.Range, []string) {
	t.Helper()
	p, err := paginator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *chunk.Chunk, 10_000)
	if err := p.Run(t.Context(), q, out); err != nil {
		t.Fatal(err)
	}
	close(out)
	var chunks []paginator.Range
	var keys []string
	for c := range out {
		chunks = append(chunks, paginator.Range{After: c.After, Last: c.Last, Seq: c.Seq})
		for _, k := range c.Keys {
			keys = append(keys, k[0])
		}
	}
	return chunks, keys
}

func sameChunks(a, b []paginator.Range) bool {
	return slices.EqualFunc(a, b, func(x, y paginator.Range) bool {
		return x.Seq == y.Seq && paginator.KeyString(x.After) == paginator.KeyString(y.After) && paginator.KeyString(x.Last) == paginator.KeyString(y.Last)
	})
}

// TestResumeStateResumesAsEveryRange: the bounds and split pieces that
// ResumeState finds in SQL resume a job exactly as every committed range
// in memory does, the ranges the paginator's resume tests chain: runs with
// gaps, overlapping ranges and two beginning at one key, split chunks
// whose rests are read as the same seq, and random sets of those.
func TestResumeStateResumesAsEveryRange(t *testing.T) {
	const n = 600
	cases := []struct {
		name   string
		ranges []paginator.Range
	}{
		{"overlapping", []paginator.Range{
			{After: nil, Last: intKey(100), Seq: 1},
			{After: intKey(100), Last: intKey(300), Seq: 2},
			{After: intKey(150), Last: intKey(200), Seq: 3},
			{After: intKey(300), Last: intKey(400), Seq: 4},
			{After: intKey(300), Last: intKey(350), Seq: 5},
			{After: intKey(500), Last: intKey(600), Seq: 6},
		}},
		{"split, the next chunk committed", []paginator.Range{
			{After: nil, Last: intKey(100), Seq: 1},
			{After: intKey(100), Last: intKey(150), Seq: 2, SplitLast: intKey(200)},
			{After: intKey(200), Last: intKey(300), Seq: 3},
			{After: intKey(300), Last: intKey(400), Seq: 4},
		}},
		{"split, the next chunk not committed", []paginator.Range{
			{After: nil, Last: intKey(100), Seq: 1},
			{After: intKey(100), Last: intKey(125), Seq: 2, SplitLast: intKey(200)},
			{After: intKey(125), Last: intKey(150), Seq: 2, SplitLast: intKey(200)},
			{After: intKey(300), Last: intKey(400), Seq: 4},
		}},
		{"split, the rest read by an earlier resume", []paginator.Range{
			{After: nil, Last: intKey(100), Seq: 1},
			{After: intKey(100), Last: intKey(150), Seq: 2, SplitLast: intKey(200)},
			{After: intKey(150), Last: intKey(200), Seq: 2},
			{After: intKey(300), Last: intKey(400), Seq: 3},
		}},
		{"one run from the start", []paginator.Range{
			{After: nil, Last: intKey(100), Seq: 1}, {After: intKey(100), Last: intKey(200), Seq: 2},
		}},
		{"one run inside", []paginator.Range{
			{After: intKey(300), Last: intKey(400), Seq: 1}, {After: intKey(200), Last: intKey(300), Seq: 2},
		}},
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for c := range 5 {
		// chunks of 1 to 20 keys, about one in four left out, and some
		// overlapping ranges over them; last keys unique, as the primary
		// key holds them
		var ranges []paginator.Range
		lasts := map[int]bool{}
		var seq int64
		for after := 0; after < n; {
			last := min(after+1+rng.IntN(20), n)
			seq++
			if rng.IntN(4) > 0 {
				r := paginator.Range{Last: intKey(last), Seq: seq}
				if after > 0 {
					r.After = intKey(after)
				}
				ranges = append(ranges, r)
				lasts[last] = true
			}
			after = last
		}
		for range 10 {
			after, last := rng.IntN(n-30), 0
			for last = after + 1 + rng.IntN(30); lasts[last]; last++ {
			}
			if last > n {
				continue
			}
			seq++
			ranges = append(ranges, paginator.Range{After: intKey(after), Last: intKey(last), Seq: seq})
			lasts[last] = true
		}
		rng.Shuffle(len(ranges), func(i, j int) { ranges[i], ranges[j] = ranges[j], ranges[i] })
		cases = append(cases, struct {
			name   string
			ranges []paginator.Range
		}{"random " + strconv.Itoa(c), ranges})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pool, store := newStore(t, "")
			gen := createJob(t, pool, store, "j")
			if _, err := pool.Exec(t.Context(), "CREATE TABLE s (id int PRIMARY KEY); INSERT INTO s SELECT generate_series(1, 600)"); err != nil {
				t.Fatal(err)
			}
			recordRanges(t, pool, store, gen, c.ranges)
			res, err := store.ResumeState(t.Context(), pool, "j")
			if err != nil {
				t.Fatal(err)
			}
			var maxSeq int64
			for _, r := range c.ranges {
				maxSeq = max(maxSeq, r.Seq)
			}
			if res.MaxSeq != maxSeq {
				t.Errorf("max seq %d; want %d", res.MaxSeq, maxSeq)
			}
			for _, r := range res.Split {
				if !slices.ContainsFunc(c.ranges, func(s paginator.Range) bool { return s.Seq == r.Seq && s.SplitLast != nil }) {
					t.Errorf("split piece %+v is no piece of a split chunk", r)
				}
			}
			bounds := make([]paginator.Bound, len(res.Bounds))
			for i, b := range res.Bounds {
				bounds[i] = paginator.Bound{Key: b.Key, Delta: b.Delta}
			}
			split := make([]paginator.Range, len(res.Split))
			for i, r := range res.Split {
				split[i] = paginator.Range{After: r.After, Last: r.Last, Seq: r.Seq, SplitLast: r.SplitLast}
			}
			cfg := paginator.Config{Table: pgx.Identifier{"s"}, Key: []paginator.KeyColumn{{Name: "id", Type: "integer"}},
				Columns: []paginator.ReadColumn{{Name: "id"}}, ChunkSize: 7, Upper: intKey(n), NextSeq: maxSeq + 1}
			byRanges := cfg
			byRanges.Committed = c.ranges
			cfg.Bounds, cfg.Split = bounds, split
			got, gotKeys := chunksRead(t, pool, cfg)
			want, wantKeys := chunksRead(t, pool, byRanges)
			if !sameChunks(got, want) {
				t.Fatalf("resumed from ResumeState, read chunks %v;\nfrom every range, %v", got, want)
			}
			// and those are the keys no range covers
			covered := map[string]bool{}
			for _, r := range c.ranges {
				after := 0
				if r.After != nil {
					after, _ = strconv.Atoi(r.After[0])
				}
				last, _ := strconv.Atoi(r.Last[0])
				for k := after + 1; k <= last; k++ {
					covered[strconv.Itoa(k)] = true
				}
			}
			var gaps []string
			for k := 1; k <= n; k++ {
				if !covered[strconv.Itoa(k)] {
					gaps = append(gaps, strconv.Itoa(k))
				}
			}
			if !slices.Equal(gotKeys, gaps) || !slices.Equal(wantKeys, gaps) {
				t.Fatalf("read keys %v from ResumeState, %v from every range; want the keys no range covers, %v", gotKeys, wantKeys, gaps)
			}
		})
	}
}

// TestResumeStateHoldsTheBoundsOfRunsOnly: a job of 20,000 chained chunks
// with two gaps has six bounds however many chunks chain between them.
func TestResumeStateHoldsTheBoundsOfRunsOnly(t *testing.T) {
	ctx := context.Background()
	pool, store := newStore(t, "")
	gen := createJob(t, pool, store, "j")
	// chunks (i-1, i] for i in 1…20000, without those ending in 5001…5010
	// and 12001: gaps (5000, 5010] and (12000, 12001]
	if _, err := pool.Exec(ctx, `INSERT INTO backfill.chunks (job, seq, after_key, first_key, last_key, rows_read, rows_filtered,
			rows_failed, rows_inserted, rows_skipped, generation)
		SELECT 'j', i, CASE WHEN i > 1 THEN ARRAY[(i - 1)::text] END, ARRAY[i::text], ARRAY[i::text], 1, 0, 0, 1, 0, $1
		FROM generate_series(1, 20000) i WHERE i NOT BETWEEN 5001 AND 5010 AND i <> 12001`, gen); err != nil {
		t.Fatal(err)
	}
	res, err := store.ResumeState(ctx, pool, "j")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, b := range res.Bounds {
		got[paginator.KeyString(b.Key)] = b.Delta
	}
	want := map[string]int64{
		paginator.KeyString(nil): 1, paginator.KeyString(intKey(5000)): -1,
		paginator.KeyString(intKey(5010)): 1, paginator.KeyString(intKey(12000)): -1,
		paginator.KeyString(intKey(12001)): 1, paginator.KeyString(intKey(20000)): -1,
	}
	if len(res.Bounds) != len(want) || !maps.Equal(got, want) || res.Split != nil || res.MaxSeq != 20000 {
		t.Fatalf("resume state: bounds %v, split %v, max seq %d; want bounds %v, no split piece, max seq 20000", res.Bounds, res.Split, res.MaxSeq, want)
	}
}
