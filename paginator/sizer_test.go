package paginator

import (
	"sync"
	"testing"
	"time"
)

// atRate is how long a chunk of rows takes at rowsPerSec.
func atRate(rows int, rowsPerSec float64) time.Duration {
	return time.Duration(float64(rows) / rowsPerSec * float64(time.Second))
}

// feed reports chunks of the sizer's own size written at rowsPerSec.
func feed(s *Sizer, rowsPerSec float64, reports int) {
	for range reports {
		n := s.Next()
		s.Observe(n, atRate(n, rowsPerSec))
	}
}

func newTestSizer(t *testing.T, cfg SizerConfig) *Sizer {
	t.Helper()
	s, err := NewSizer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSizerGrowsByAtMostTwiceToTheTarget: at a steady speed the size
// doubles per report from Min until it reaches speed × target, then stays.
func TestSizerGrowsByAtMostTwiceToTheTarget(t *testing.T) {
	cfg := SizerConfig{Target: 500 * time.Millisecond, Min: 1000, Max: 50000}
	const rowsPerSec = 37000.0
	want := int(rowsPerSec * cfg.Target.Seconds())
	s := newTestSizer(t, cfg)
	if got := s.Next(); got != cfg.Min {
		t.Fatalf("first size %d, want Min %d", got, cfg.Min)
	}
	for i := range 20 {
		prev := s.Next()
		s.Observe(prev, atRate(prev, rowsPerSec))
		got := s.Next()
		if expect := min(2*prev, want); got < expect-1 || got > expect {
			t.Fatalf("report %d: size %d after %d, want %d (double, up to %d)", i, got, prev, expect, want)
		}
	}
	if got := s.Next(); got < want-1 || got > want {
		t.Fatalf("steady size %d, want %d", got, want)
	}
}

// TestSizerShrinksByAtMostHalfAndKeepsItsBounds: a slowdown halves the size
// per report down to Min; a speed beyond Max's reach stops at Max.
func TestSizerShrinksByAtMostHalfAndKeepsItsBounds(t *testing.T) {
	cfg := SizerConfig{Target: time.Second, Min: 100, Max: 3000}
	s := newTestSizer(t, cfg)
	fast := float64(cfg.Max) * 10 / cfg.Target.Seconds()
	feed(s, fast, 20)
	if got := s.Next(); got != cfg.Max {
		t.Fatalf("size %d at a speed worth %d rows a chunk, want Max %d", got, int(fast), cfg.Max)
	}
	slow := float64(cfg.Min) / 10 / cfg.Target.Seconds()
	for i := range 40 {
		prev := s.Next()
		s.Observe(prev, atRate(prev, slow))
		if got := s.Next(); got < prev/2 || got > prev {
			t.Fatalf("report %d of a slowdown: size %d after %d, want at most halved", i, got, prev)
		}
	}
	if got := s.Next(); got != cfg.Min {
		t.Fatalf("size %d after a long slowdown, want Min %d", got, cfg.Min)
	}
}

// TestSizerIgnoresChunksThatSayNothing: an empty chunk (a filtered step
// without matching rows) or one without a time leaves the size alone.
func TestSizerIgnoresChunksThatSayNothing(t *testing.T) {
	cfg := SizerConfig{Target: time.Second, Min: 10, Max: 1000}
	s := newTestSizer(t, cfg)
	s.Observe(0, time.Second)
	s.Observe(10, 0)
	s.Observe(-1, time.Second)
	if got := s.Next(); got != cfg.Min {
		t.Fatalf("size %d after reports without rows or time, want Min %d", got, cfg.Min)
	}
}

// TestSizerWeighsChunksByTheirRows: a short last page whose time is mostly
// a round trip barely moves a size learnt from full chunks.
func TestSizerWeighsChunksByTheirRows(t *testing.T) {
	cfg := SizerConfig{Target: time.Second, Min: 10, Max: 100000}
	s := newTestSizer(t, cfg)
	const rowsPerSec = 2000.0
	feed(s, rowsPerSec, 30)
	steady := s.Next()
	s.Observe(1, 50*time.Millisecond) // 20 rows/s, one row
	if got := s.Next(); got < steady*9/10 {
		t.Fatalf("one short page moved the size from %d to %d", steady, got)
	}
}

// TestSizerLimit: a limit bounds the size the estimate asks for, never
// below Min, and lifted, the size is the estimate's again.
func TestSizerLimit(t *testing.T) {
	cfg := SizerConfig{Target: time.Second, Min: 100, Max: 10000}
	s := newTestSizer(t, cfg)
	feed(s, 5000, 10)
	grown := s.Next()
	if grown <= 1000 {
		t.Fatalf("size %d did not grow past the limit to come", grown)
	}
	s.Limit(1000)
	if got := s.Next(); got != 1000 {
		t.Fatalf("size %d under a limit of 1000", got)
	}
	s.Limit(10)
	if got := s.Next(); got != cfg.Min {
		t.Fatalf("size %d under a limit below Min, want Min %d", got, cfg.Min)
	}
	s.Limit(0)
	if got := s.Next(); got != grown {
		t.Fatalf("size %d once the limit is lifted, want the estimate's %d", got, grown)
	}
}

// TestSizerHold: while held the size is Min and reports still teach the
// speed; let go, it grows from Min again by doubling.
func TestSizerHold(t *testing.T) {
	cfg := SizerConfig{Target: time.Second, Min: 100, Max: 10000}
	s := newTestSizer(t, cfg)
	const rowsPerSec = 5000.0
	feed(s, rowsPerSec, 10)
	if s.Next() <= cfg.Min {
		t.Fatalf("size %d did not grow", s.Next())
	}
	s.Hold(true)
	for range 5 {
		if got := s.Next(); got != cfg.Min {
			t.Fatalf("held size %d, want Min %d", got, cfg.Min)
		}
		s.Observe(cfg.Min, atRate(cfg.Min, rowsPerSec))
	}
	s.Hold(false)
	if got := s.Next(); got != cfg.Min {
		t.Fatalf("size %d just after the hold, want Min %d", got, cfg.Min)
	}
	s.Observe(cfg.Min, atRate(cfg.Min, rowsPerSec))
	if got := s.Next(); got != 2*cfg.Min {
		t.Fatalf("size %d after the first report since the hold, want %d", got, 2*cfg.Min)
	}
}

// TestSizerTellsOnlyLargeChanges: OnResize hears of the size when it has
// doubled or halved since it last heard, not of every chunk's jitter.
func TestSizerTellsOnlyLargeChanges(t *testing.T) {
	type resize struct{ from, to int }
	var told []resize
	cfg := SizerConfig{Target: time.Second, Min: 100, Max: 100000,
		OnResize: func(from, to int, _ float64) { told = append(told, resize{from, to}) }}
	s := newTestSizer(t, cfg)
	const rowsPerSec = 3000.0
	feed(s, rowsPerSec, 20)
	grown := len(told)
	if grown == 0 {
		t.Fatalf("no resize told while the size grew to %d", s.Next())
	}
	changes := 0
	for i := range 40 {
		jitter := 1 + 0.15*float64(i%3-1) // ±15%
		prev := s.Next()
		s.Observe(prev, atRate(prev, rowsPerSec*jitter))
		if s.Next() != prev {
			changes++
		}
	}
	if changes == 0 {
		t.Fatal("the jitter never changed the size: the test shows nothing")
	}
	if len(told) != grown {
		t.Fatalf("jitter of ±15%% told %v", told[grown:])
	}
	for _, r := range told {
		if r.to < 2*r.from && 2*r.to > r.from {
			t.Fatalf("told of a change from %d to %d, less than a factor of two", r.from, r.to)
		}
	}
}

// TestSizerConcurrent: workers report and the paginator asks at once; the
// size stays within its bounds (run with -race).
func TestSizerConcurrent(t *testing.T) {
	cfg := SizerConfig{Target: 10 * time.Millisecond, Min: 50, Max: 5000}
	s := newTestSizer(t, cfg)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				s.Observe(50+(w*i)%5000, time.Duration(1+(w+i)%20)*time.Millisecond)
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for i := range 2000 {
				if n := s.Next(); n < cfg.Min || n > cfg.Max {
					t.Errorf("size %d outside [%d, %d]", n, cfg.Min, cfg.Max)
					return
				}
				s.Hold(i%100 == 0)
			}
		})
	}
	wg.Wait()
}

func TestNewSizerRefusesBadBounds(t *testing.T) {
	for _, cfg := range []SizerConfig{
		{Target: 0, Min: 1, Max: 2},
		{Target: time.Second, Min: 0, Max: 2},
		{Target: time.Second, Min: 3, Max: 2},
	} {
		if _, err := NewSizer(cfg); err == nil {
			t.Errorf("NewSizer(%+v) accepted", cfg)
		}
	}
}

// TestSizerKeepsAChunkWithinItsBytes: however fast the writes, a chunk
// holds no more rows than MaxBytes over the bytes its rows take, and Min
// when a row alone is larger.
func TestSizerKeepsAChunkWithinItsBytes(t *testing.T) {
	cfg := SizerConfig{Target: 500 * time.Millisecond, Min: 1000, Max: 50000, MaxBytes: 2 << 20}
	s := newTestSizer(t, cfg)
	feed(s, 1e6, 20) // fast enough for Max
	if got := s.Next(); got != cfg.Max {
		t.Fatalf("size %d before any page's bytes, want Max %d", got, cfg.Max)
	}
	s.observePage(1000, 200_000) // 200 bytes a row
	feed(s, 1e6, 20)
	if got, want := s.Next(), int(cfg.MaxBytes/200); got != want {
		t.Fatalf("size %d with 200-byte rows, want %d", got, want)
	}
	for range 20 {
		s.observePage(1000, 1000*(cfg.MaxBytes/500)) // rows of 4 KiB
	}
	feed(s, 1e6, 5)
	if got := s.Next(); got != cfg.Min {
		t.Fatalf("size %d with rows of a 500th of MaxBytes, want Min %d", got, cfg.Min)
	}
}

// TestSizerFollowsAChangedMemoryShare: when the pool grows, each chunk's
// share of the job's memory shrinks, and the size with it at once; when it
// shrinks again, the size may grow back.
func TestSizerFollowsAChangedMemoryShare(t *testing.T) {
	cfg := SizerConfig{Target: 500 * time.Millisecond, Min: 1000, Max: 50000, MaxBytes: 4 << 20}
	s := newTestSizer(t, cfg)
	s.observePage(1000, 200_000) // 200 bytes a row
	feed(s, 1e6, 20)
	if got, want := s.Next(), int(cfg.MaxBytes/200); got != want {
		t.Fatalf("size %d, want %d", got, want)
	}
	s.SetMaxBytes(cfg.MaxBytes / 4)
	if got, want := s.Next(), int(cfg.MaxBytes/4/200); got != want {
		t.Fatalf("size %d after a quarter of the share, want %d at once", got, want)
	}
	s.SetMaxBytes(cfg.MaxBytes)
	feed(s, 1e6, 20)
	if got, want := s.Next(), int(cfg.MaxBytes/200); got != want {
		t.Fatalf("size %d with the share back, want %d", got, want)
	}
}
