package autoscale

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

func newController(t *testing.T, min, max int) *Controller {
	t.Helper()
	c, err := New(Config{Min: min, Max: max})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDecide: one interval at a time, each rule of issue 11.
func TestDecide(t *testing.T) {
	busyAll := func(size int) float64 { return float64(size) }
	for _, c := range []struct {
		name      string
		min, max  int
		intervals []Observation // all but the last must leave the size as it is
		want      int
		reason    string
	}{
		{"full queue, every worker busy: grow", 1, 32, []Observation{{Size: 4, Fill: 0.9, Busy: busyAll(4)}}, 5, "above 80% full"},
		{"a full queue with every worker busy does not grow past the maximum", 1, 4, []Observation{{Size: 4, Fill: 1, Busy: 4}}, 4, ""},
		{"full queue but the rate cap holds the workers: no growth", 1, 32,
			[]Observation{{Size: 4, Fill: 1, Busy: 4, Waited: 2 * time.Second}}, 4, ""},
		{"full queue, the cap hardly waited on: grow", 1, 32,
			[]Observation{{Size: 4, Fill: 1, Busy: 4, Waited: 1 * time.Second}}, 5, "the workers are the bottleneck"},
		{"exactly 80% full is not above it", 1, 32, []Observation{{Size: 4, Fill: 0.8, Busy: 4}}, 4, ""},
		{"full queue yet idle workers: no growth", 1, 32, []Observation{{Size: 4, Fill: 0.9, Busy: 3}}, 4, ""},
		{"a nearly empty queue for less than a minute: nothing", 1, 32, repeat(Observation{Size: 4, Fill: 0.05, Busy: 1}, 11), 4, ""},
		{"a nearly empty queue for a minute: shrink", 1, 32, repeat(Observation{Size: 4, Fill: 0.05, Busy: 1}, 12), 3,
			"below 10% full for 1m0s, 1.0 of 4 workers busy: the reader is the bottleneck"},
		{"an interval in between starts the minute again", 1, 32,
			append(append(repeat(Observation{Size: 4, Fill: 0, Busy: 1}, 11), Observation{Size: 4, Fill: 0.5, Busy: 1}),
				repeat(Observation{Size: 4, Fill: 0, Busy: 1}, 11)...), 4, ""},
		{"never below the minimum", 2, 32, repeat(Observation{Size: 2, Fill: 0, Busy: 0}, 20), 2, ""},
		{"nearly empty but every worker busy: no shrink", 1, 32, repeat(Observation{Size: 4, Fill: 0, Busy: 3.5}, 20), 4, ""},
		{"an operator's size below the minimum is raised", 3, 32, []Observation{{Size: 1, Fill: 0.5, Busy: 1}}, 3, "below the minimum of 3"},
		{"an operator's size above the maximum is lowered", 1, 8, []Observation{{Size: 12, Fill: 0.5, Busy: 1}}, 8, "above the maximum of 8"},
		{"half full: nothing", 1, 32, repeat(Observation{Size: 4, Fill: 0.5, Busy: 4}, 20), 4, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctl := newController(t, c.min, c.max)
			var d Decision
			for i, o := range c.intervals {
				d = ctl.Decide(o)
				if i < len(c.intervals)-1 && d.Size != o.Size {
					t.Fatalf("interval %d of %d: size %d (%s), want it unchanged", i+1, len(c.intervals), d.Size, d.Reason)
				}
			}
			if d.Size != c.want || !strings.Contains(d.Reason, c.reason) || (c.reason == "") != (d.Reason == "") {
				t.Fatalf("decision %+v, want size %d saying %q", d, c.want, c.reason)
			}
		})
	}
}

func repeat(o Observation, n int) []Observation {
	out := make([]Observation, n)
	for i := range out {
		out[i] = o
	}
	return out
}

// TestShrinkOneAMinute: after retiring a worker, the next needs another
// minute of a nearly empty queue; and an operator's resize starts it over.
func TestShrinkOneAMinute(t *testing.T) {
	ctl := newController(t, 1, 32)
	size, retired := 4, []int{}
	for i := 1; i <= 36; i++ {
		if i == 30 {
			size = 6 // an operator's set --workers 6
		}
		if d := ctl.Decide(Observation{Size: size, Fill: 0, Busy: 0.2}); d.Size != size {
			retired = append(retired, i)
			size = d.Size
		}
	}
	// 12 intervals of 5 s to each shrink; the operator at 30 restarts the count
	if want := []int{12, 24}; len(retired) != len(want) || retired[0] != want[0] || retired[1] != want[1] || size != 2+4 {
		t.Fatalf("retired at intervals %v (size now %d), want %v and size 6", retired, size, want)
	}
}

func TestNewRefusesBadBounds(t *testing.T) {
	for _, b := range [][2]int{{0, 4}, {5, 4}} {
		if _, err := New(Config{Min: b[0], Max: b[1]}); err == nil {
			t.Errorf("bounds %v accepted", b)
		}
	}
}

// fakePool is a pool whose gauges a test sets.
type fakePool struct {
	mu                          sync.Mutex
	target, busy, pending, capa int
	waited                      time.Duration
}

func (f *fakePool) Target() int           { f.mu.Lock(); defer f.mu.Unlock(); return f.target }
func (f *fakePool) Busy() int             { f.mu.Lock(); defer f.mu.Unlock(); return f.busy }
func (f *fakePool) Pending() int          { f.mu.Lock(); defer f.mu.Unlock(); return f.pending }
func (f *fakePool) Capacity() int         { f.mu.Lock(); defer f.mu.Unlock(); return f.capa }
func (f *fakePool) Waited() time.Duration { f.mu.Lock(); defer f.mu.Unlock(); return f.waited }

// TestRunSamplesAndResizes: Run turns the gauges into observations, one
// per interval, and resizes through its caller.
func TestRunSamplesAndResizes(t *testing.T) {
	pool := &fakePool{target: 2, busy: 2, pending: 4, capa: 4}
	ctl, err := New(Config{Min: 1, Max: 4, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var seen []Observation
	Run(ctx, ctl, pool, func(from int, d Decision, o Observation) bool {
		seen = append(seen, o)
		pool.mu.Lock()
		pool.target, pool.busy = d.Size, d.Size
		pool.mu.Unlock()
		if d.Size == 4 {
			cancel()
		}
		return true
	})
	if len(seen) != 2 || seen[0] != (Observation{Size: 2, Fill: 1, Busy: 2}) || seen[1] != (Observation{Size: 3, Fill: 1, Busy: 3}) {
		t.Fatalf("observations %+v: want a full queue at sizes 2 and 3", seen)
	}
	if pool.target != 4 {
		t.Fatalf("pool at %d, want the maximum 4", pool.target)
	}
}
