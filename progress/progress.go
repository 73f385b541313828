package progress

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Window is how far back the rows-per-second figure looks.
const Window = time.Minute

type sample struct {
	at   time.Time
	rows int64
}

// Tracker counts rows done. Add is safe for concurrent use.
type Tracker struct {
	mu        sync.Mutex
	estimated int64
	done      int64 // rows read, including those of earlier runs
	samples   []sample
	now       func() time.Time
}

// New returns a tracker that starts from alreadyDone rows (earlier runs of
// the job) towards estimated rows. now is the clock (time.Now in production).
func New(estimated, alreadyDone int64, now func() time.Time) *Tracker {
	if now == nil {
		now = time.Now
	}
	t := &Tracker{estimated: estimated, done: alreadyDone, now: now}
	t.samples = []sample{{at: now(), rows: alreadyDone}}
	return t
}

// Add records rows read by one chunk.
func (t *Tracker) Add(rows int) {
	t.mu.Lock()
	t.done += int64(rows)
	t.mu.Unlock()
}

// Snapshot is the progress at one instant.
type Snapshot struct {
	Done       int64
	Estimated  int64
	Percent    float64       // of the estimate; -1 when there is no estimate
	RowsPerSec float64       // over the window; 0 before there is one
	ETA        time.Duration // -1 when unknown
}

// Snapshot samples the counters and returns the current figures.
func (t *Tracker) Snapshot() Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.samples = append(t.samples, sample{at: now, rows: t.done})
	// keep one sample at or before the window's start
	for len(t.samples) > 2 && now.Sub(t.samples[1].at) >= Window {
		t.samples = t.samples[1:]
	}
	s := Snapshot{Done: t.done, Estimated: t.estimated, Percent: -1, ETA: -1}
	if t.estimated > 0 {
		// the planner underestimated when the job has read more than it
		// said: show that the end is near but not when, rather than 100%
		// and an ETA of 0 s for the rest of the run
		s.Percent = min(99.9, 100*float64(t.done)/float64(t.estimated))
	}
	first := t.samples[0]
	if elapsed := now.Sub(first.at).Seconds(); elapsed > 0 {
		s.RowsPerSec = float64(t.done-first.rows) / elapsed
	}
	if s.RowsPerSec > 0 && t.estimated > t.done {
		s.ETA = time.Duration(float64(t.estimated-t.done) / s.RowsPerSec * float64(time.Second)).Round(time.Second)
	}
	return s
}

// String is the progress line.
func (s Snapshot) String() string {
	pct := "?"
	if s.Percent >= 0 {
		pct = fmt.Sprintf("%.1f%%", s.Percent)
	}
	eta := "unknown"
	if s.ETA >= 0 {
		eta = s.ETA.String()
	}
	return fmt.Sprintf("%d rows (%s of ~%d), %.0f rows/s, ETA %s", s.Done, pct, s.Estimated, s.RowsPerSec, eta)
}

// Log writes a progress line every interval until ctx ends.
func (t *Tracker) Log(ctx context.Context, log zerolog.Logger, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			s := t.Snapshot()
			ev := log.Info().Int64("rows_done", s.Done).Int64("rows_estimated", s.Estimated).
				Float64("rows_per_sec", float64(int64(s.RowsPerSec)))
			if s.Percent >= 0 {
				ev = ev.Float64("percent", float64(int64(s.Percent*10))/10)
			}
			if s.ETA >= 0 {
				ev = ev.Str("eta", s.ETA.String())
			}
			ev.Msg("progress: " + s.String())
		}
	}
}
