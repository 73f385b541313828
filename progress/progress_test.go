package progress

import (
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestSnapshot(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	tr := New(10_000, 1_000, clock.now) // resumed: 1000 rows done before
	s := tr.Snapshot()
	if s.Done != 1000 || s.Percent != 10 || s.RowsPerSec != 0 || s.ETA != -1 {
		t.Fatalf("at start: %+v", s)
	}
	clock.t = clock.t.Add(10 * time.Second)
	tr.Add(500)
	tr.Add(500)
	s = tr.Snapshot()
	if s.Done != 2000 || s.Percent != 20 || s.RowsPerSec != 100 || s.ETA != 80*time.Second {
		t.Fatalf("after 1000 rows in 10 s: %+v", s)
	}
	// the window forgets the old pace: 2 minutes later at 1000 rows/s
	for range 12 {
		clock.t = clock.t.Add(10 * time.Second)
		tr.Add(10_000)
		tr.Snapshot()
	}
	s = tr.Snapshot()
	// 122,000 rows read of an estimated 10,000: the estimate was wrong, so
	// neither 100% nor an ETA of 0 s
	if s.RowsPerSec < 990 || s.RowsPerSec > 1010 || s.Percent != 99.9 || s.ETA != -1 {
		t.Fatalf("windowed rate, past the estimate: %+v", s)
	}
}

func TestSnapshotWithoutEstimate(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	tr := New(0, 0, clock.now)
	clock.t = clock.t.Add(time.Second)
	tr.Add(10)
	s := tr.Snapshot()
	if s.Percent != -1 || s.ETA != -1 || s.RowsPerSec != 10 {
		t.Fatalf("no estimate: %+v", s)
	}
}

// The recent rate follows a change within its 10 s while the minute's rate
// lags, measured from the samples taken as chunks end, with no one asking
// in between.
func TestRecentRate(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	tr := New(1_000_000, 0, clock.now)
	for second := 1; second <= 60; second++ {
		clock.t = clock.t.Add(time.Second)
		if second <= 50 {
			tr.Add(100)
		} else {
			tr.Add(1000)
		}
	}
	s := tr.Snapshot()
	if s.Done != 15_000 || s.RowsPerSec != 250 || s.RecentRowsPerSec != 1000 {
		t.Fatalf("after 50 s at 100 rows/s and 10 s at 1000: %+v", s)
	}
	// a younger run: since start
	clock = &fakeClock{t: time.Unix(0, 0)}
	tr = New(1_000_000, 0, clock.now)
	clock.t = clock.t.Add(4 * time.Second)
	tr.Add(400)
	if s := tr.Snapshot(); s.RecentRowsPerSec != 100 {
		t.Fatalf("4 s into the run: %+v", s)
	}
}

// Once the job has its last row, the figures say so, whatever the
// planner's estimate: 100% and no time left.
func TestFinish(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	tr := New(10_000, 0, clock.now)
	clock.t = clock.t.Add(time.Second)
	tr.Add(5000) // the estimate was twice the rows
	if s := tr.Snapshot(); s.Percent != 50 || s.ETA != time.Second {
		t.Fatalf("half way by the estimate: %+v", s)
	}
	tr.Finish()
	if s := tr.Snapshot(); s.Percent != 100 || s.ETA != 0 || s.Done != 5000 {
		t.Fatalf("finished: %+v", s)
	}
}
