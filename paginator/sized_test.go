package paginator

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// swingingSource stands in for the workers of a job sized by time: before
// each page query it reports the previous page to the sizer as fast or
// slow in turns of a few pages, so the size swings between its bounds. It
// records the size each page and step query asked for.
type swingingSource struct {
	q      Querier
	sizer  *Sizer
	pages  []int // the LIMIT of each page query
	steps  []int // the row count of each step query
	target time.Duration
}

func (s *swingingSource) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if _, page := args[0].(pgx.QueryResultFormats); page {
		n := args[1].(int)
		if len(s.pages) > 0 {
			prev := s.pages[len(s.pages)-1]
			// fast: worth ten times Max in a target's time; slow: a tenth of Min
			perSec := float64(10*s.sizer.cfg.Max) / s.target.Seconds()
			if len(s.pages)/6%2 == 1 {
				perSec = float64(s.sizer.cfg.Min) / 10 / s.target.Seconds()
			}
			s.sizer.Observe(prev, atRate(prev, perSec))
		}
		s.pages = append(s.pages, n)
	} else if strings.Contains(sql, "OFFSET") {
		s.steps = append(s.steps, args[0].(int))
	}
	return s.q.Query(ctx, sql, args...)
}

// TestVaryingSizeReadsEveryRowOnce: with the page size changing from page
// to page, every row is read exactly once, in key order, each page is as
// full as it asked for but the last, and a filtered job's step and page
// agree on the size of each read.
func TestVaryingSizeReadsEveryRowOnce(t *testing.T) {
	const n = 20011 // no page size divides it: the last page is short
	pool := testPool(t,
		"CREATE TABLE s (id int PRIMARY KEY, v text)",
		"INSERT INTO s SELECT g, 'v' || g FROM generate_series(1, 20011) g",
	)
	for _, where := range []string{"", "id % 3 <> 0"} {
		t.Run("where="+where, func(t *testing.T) {
			cfg := SizerConfig{Target: time.Second, Min: 25, Max: 400} // at most 801 chunks: readAll buffers 1000
			sizer := newTestSizer(t, cfg)
			p, err := New(Config{Table: pgx.Identifier{"s"}, Key: []KeyColumn{{"id", "integer"}}, Columns: []ReadColumn{{Name: "v"}},
				ChunkSize: cfg.Min, Sizer: sizer, Upper: []string{"20011"}, Where: where})
			if err != nil {
				t.Fatal(err)
			}
			src := &swingingSource{q: pool, sizer: sizer, target: cfg.Target}
			keys, chunks := readAll(t, p, src)

			var want []string
			for _, k := range ints(1, n) {
				if where == "" || atoi(t, k)%3 != 0 {
					want = append(want, k)
				}
			}
			if !slices.Equal(keys, want) {
				t.Fatalf("read %d keys, want %d: every row once, in order", len(keys), len(want))
			}
			sizes := map[int]bool{}
			for _, size := range src.pages {
				if size < cfg.Min || size > cfg.Max {
					t.Fatalf("a page asked for %d rows, outside [%d, %d]", size, cfg.Min, cfg.Max)
				}
				sizes[size] = true
			}
			if len(sizes) < 3 {
				t.Fatalf("page sizes %v: the size did not vary, the test shows nothing", src.pages)
			}
			if len(chunks) > len(src.pages) {
				t.Fatalf("%d chunks from %d page queries", len(chunks), len(src.pages))
			}
			if where == "" {
				// one page query per chunk, in order, all full but the last,
				// which is known for the last by being short: no query after it
				if len(chunks) != len(src.pages) {
					t.Fatalf("%d chunks from %d page queries", len(chunks), len(src.pages))
				}
				for i, c := range chunks {
					if full := len(c.Rows) == src.pages[i]; !full && i != len(chunks)-1 {
						t.Fatalf("chunk %d of %d has %d rows, its page asked for %d", i+1, len(chunks), len(c.Rows), src.pages[i])
					}
				}
				if last := chunks[len(chunks)-1]; len(last.Rows) >= src.pages[len(chunks)-1] {
					t.Fatalf("the last chunk is full (%d rows): the short last page was not met", len(last.Rows))
				}
				return
			}
			// a filtered read asks one size of its step and of its page
			if len(src.steps) < len(src.pages) || !slices.Equal(src.steps[:len(src.pages)], src.pages) {
				t.Fatalf("steps asked for %v, their pages for %v", src.steps, src.pages)
			}
			for i, c := range chunks {
				if len(c.Rows) > src.pages[i] {
					t.Fatalf("chunk %d has %d rows, more than its page's %d", i+1, len(c.Rows), src.pages[i])
				}
			}
		})
	}
}
