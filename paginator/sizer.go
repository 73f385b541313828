package paginator

import (
	"fmt"
	"sync"
	"time"
)

// SizerConfig says how a Sizer sizes pages.
type SizerConfig struct {
	// Target is how long the write of one chunk should take.
	Target time.Duration
	// Min and Max bound the size, in rows. Min is also the size while
	// held (Hold), and the first size.
	Min, Max int
	// MaxBytes, if positive, bounds the memory one chunk holds: the size
	// is at most MaxBytes over the bytes a row has taken in the pages read
	// so far (observePage), so that the chunks the pipeline holds at once
	// fit the job's memory however wide its rows.
	MaxBytes int64
	// OnResize, if set, hears of the size each time it has moved by a
	// factor of two or more from the last size it heard of (the first
	// time, from Min), with the estimate that moved it. It is called
	// without the Sizer's lock held.
	OnResize func(from, to int, rowsPerSec float64)
}

// Sizer sizes pages by time: the workers report each committed chunk's
// rows and write time (Observe), and the paginator asks it for the size of
// each page (Next). The size follows a smoothed rows-per-second estimate
// times the target, moving by at most a factor of two per report, so that
// one slow or fast chunk does not swing it, and stays within [Min, Max].
// It is safe for concurrent use.
type Sizer struct {
	cfg SizerConfig

	mu   sync.Mutex
	size int
	held bool
	// ceiling, when positive, bounds the size (Limit)
	ceiling int
	// rows and secs are exponentially weighted averages of the reported
	// chunks' rows and write seconds; their ratio weighs each chunk by its
	// size, so a short last page or an empty filtered step, whose time is
	// mostly a round trip, hardly moves the estimate.
	rows, secs float64
	seen       bool
	told       int // the size OnResize last heard of
	// rowBytes is an exponentially weighted average of the memory a row
	// has taken, from observePage; 0 before the first page.
	rowBytes float64
}

// smoothing is the weight of each new report in the averages: a size
// follows a change of the table's speed within a few chunks per worker.
const smoothing = 0.25

// NewSizer checks cfg and returns a Sizer at size cfg.Min.
func NewSizer(cfg SizerConfig) (*Sizer, error) {
	if cfg.Target <= 0 {
		return nil, fmt.Errorf("chunk time target must be positive, got %v", cfg.Target)
	}
	if cfg.Min <= 0 || cfg.Max < cfg.Min {
		return nil, fmt.Errorf("chunk size bounds must be 0 < min <= max, got %d and %d", cfg.Min, cfg.Max)
	}
	return &Sizer{cfg: cfg, size: cfg.Min, told: cfg.Min}, nil
}

// Next returns the number of rows to ask for in the next page.
func (s *Sizer) Next() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held {
		return s.cfg.Min
	}
	if s.ceiling > 0 {
		return max(s.cfg.Min, min(s.size, s.ceiling))
	}
	return s.size
}

// Limit bounds the size at rows (never under Min) while rows is positive,
// and lifts the bound at zero: a rate the job sets itself (--rate auto)
// keeps chunks sized by time, but no larger than a short spell of that
// rate, so that a chunk does not wait long for its tokens nor make the
// achieved rate lumpy. The estimate goes on beneath it.
func (s *Sizer) Limit(rows int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ceiling = max(rows, 0)
}

// Hold fixes the size at Min while held is true (a rate cap is on: the
// size is then the fixed one the cap was set with); false lets it follow
// the estimate again, growing from Min. Reports made while held still
// feed the estimate.
func (s *Sizer) Hold(held bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if held && !s.held {
		s.size = s.cfg.Min
	}
	s.held = held
}

// SetMaxBytes changes SizerConfig.MaxBytes: the pipeline holds chunks for
// more or fewer workers, whose share of the job's memory is another. A
// size above the new bound falls to it at once.
func (s *Sizer) SetMaxBytes(maxBytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.MaxBytes = maxBytes
	s.size = min(s.size, s.maxRows())
}

// observePage reports a page read: its rows and the memory they take.
func (s *Sizer) observePage(rows int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rows <= 0 || s.cfg.MaxBytes <= 0 {
		return
	}
	per := float64(bytes) / float64(rows)
	if s.rowBytes == 0 {
		s.rowBytes = per
	} else {
		s.rowBytes += smoothing * (per - s.rowBytes)
	}
	s.size = min(s.size, s.maxRows())
}

// maxRows is the most rows a chunk may have: Max, and what MaxBytes holds.
func (s *Sizer) maxRows() int {
	if s.cfg.MaxBytes <= 0 || s.rowBytes == 0 {
		return s.cfg.Max
	}
	return max(s.cfg.Min, min(s.cfg.Max, int(float64(s.cfg.MaxBytes)/s.rowBytes)))
}

// Observe reports a committed chunk: its rows and how long its write took.
// A chunk without rows, or without a measured time, says nothing of the
// speed and is ignored.
func (s *Sizer) Observe(rows int, elapsed time.Duration) {
	if rows <= 0 || elapsed <= 0 {
		return
	}
	s.mu.Lock()
	if !s.seen {
		s.rows, s.secs, s.seen = float64(rows), elapsed.Seconds(), true
	} else {
		s.rows += smoothing * (float64(rows) - s.rows)
		s.secs += smoothing * (elapsed.Seconds() - s.secs)
	}
	perSec := s.rows / s.secs
	if s.held {
		s.mu.Unlock()
		return
	}
	want := perSec * s.cfg.Target.Seconds()
	next := float64(s.size)
	switch {
	case want > 2*next:
		next *= 2
	case want < next/2:
		next /= 2
	default:
		next = want
	}
	s.size = int(min(max(next, float64(s.cfg.Min)), float64(s.maxRows())))
	from, to := s.told, s.size
	tell := s.cfg.OnResize != nil && (to >= 2*from || 2*to <= from)
	if tell {
		s.told = to
	}
	s.mu.Unlock()
	if tell {
		s.cfg.OnResize(from, to, perSec)
	}
}
