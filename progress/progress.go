package progress

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Window is how far back the rows-per-second figure of the ETA looks.
const Window = time.Minute

// RecentWindow is how far back the rows-per-second figure of the live line
// looks: short enough that a rate change shows within seconds.
const RecentWindow = 10 * time.Second

// sampleEvery is the finest step of the samples the rates are measured
// over, whoever asks and however many chunks end each second.
const sampleEvery = time.Second

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
	finished  bool // every row is done: 100%, whatever the estimate said
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
	t.sample(t.now())
	t.mu.Unlock()
}

// Finish records that the job has read and written its last row: from now
// on the figures say 100% and an ETA of 0.
func (t *Tracker) Finish() {
	t.mu.Lock()
	t.finished = true
	t.mu.Unlock()
}

// sample remembers the rows done at now, at most once a second, and
// forgets what is older than the window needs: one sample at or before
// its start. Taken as chunks end as well as when the figures are asked
// for, so the recent rate is measured over RecentWindow however rarely
// someone asks.
func (t *Tracker) sample(now time.Time) {
	if now.Sub(t.samples[len(t.samples)-1].at) >= sampleEvery {
		t.samples = append(t.samples, sample{at: now, rows: t.done})
	}
	for len(t.samples) > 2 && now.Sub(t.samples[1].at) >= Window {
		t.samples = t.samples[1:]
	}
}

// rateOver is the rows per second since the newest sample at least window
// old (the oldest when none is yet); 0 before any time has passed.
func (t *Tracker) rateOver(now time.Time, window time.Duration) float64 {
	from := t.samples[0]
	for _, s := range t.samples[1:] {
		if now.Sub(s.at) < window {
			break
		}
		from = s
	}
	elapsed := now.Sub(from.at).Seconds()
	if elapsed <= 0 {
		return 0
	}
	return float64(t.done-from.rows) / elapsed
}

// Snapshot is the progress at one instant.
type Snapshot struct {
	Done       int64
	Estimated  int64
	Percent    float64 // of the estimate; -1 when there is no estimate
	RowsPerSec float64 // over the window; 0 before there is one
	// RecentRowsPerSec is over RecentWindow (or since start, when the run
	// is younger): what the live line shows, while the ETA keeps the
	// steadier minute.
	RecentRowsPerSec float64
	ETA              time.Duration // -1 when unknown
}

// Snapshot samples the counters and returns the current figures.
func (t *Tracker) Snapshot() Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.sample(now)
	s := Snapshot{Done: t.done, Estimated: t.estimated, Percent: -1, ETA: -1,
		RowsPerSec: t.rateOver(now, Window), RecentRowsPerSec: t.rateOver(now, RecentWindow)}
	if t.estimated > 0 {
		// the planner underestimated when the job has read more than it
		// said: show that the end is near but not when, rather than 100%
		// and an ETA of 0 s for the rest of the run
		s.Percent = min(99.9, 100*float64(t.done)/float64(t.estimated))
	}
	if s.RowsPerSec > 0 && t.estimated > t.done {
		s.ETA = time.Duration(float64(t.estimated-t.done) / s.RowsPerSec * float64(time.Second)).Round(time.Second)
	}
	if t.finished {
		s.Percent, s.ETA = 100, 0
	}
	return s
}

// every calls fn each interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			fn()
		}
	}
}

// fields adds the figures to a log event, with the recent rate, as the
// live line shows them.
func (s Snapshot) fields(ev *zerolog.Event) *zerolog.Event {
	ev = ev.Int64("rows_done", s.Done).Int64("rows_estimated", s.Estimated).Float64("rows_per_sec", float64(int64(s.RecentRowsPerSec)))
	if s.Percent >= 0 {
		ev = ev.Float64("percent", float64(int64(s.Percent*10))/10)
	}
	if s.ETA >= 0 {
		ev = ev.Str("eta", s.ETA.String())
	}
	return ev
}
