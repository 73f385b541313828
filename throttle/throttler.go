package throttle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/backfill/backfill/retry"
)

// Defaults for a Throttler.
const (
	// DefaultInterval is how often each signal is read.
	DefaultInterval = time.Second
	// DefaultTries is how many reads in a row a signal may fail before it
	// trips: a standby restarting, a connection cut once, are not reasons
	// to wait, one that stays unreachable is.
	DefaultTries = 3
)

// startupReason is the Throttler's reason until every signal has been read
// once: a job must not run past a limit it has not looked at.
const startupReason = "reading each throttle signal for the first time"

// Config configures a Throttler. The zero value of each field but Signals
// means its default.
type Config struct {
	Signals []Signal
	// Interval between two reads of a signal; DefaultInterval.
	Interval time.Duration
	// Timeout bounds each read; DefaultTimeout.
	Timeout time.Duration
	// Tries is how many failed reads in a row trip a signal that had read
	// before; DefaultTries. One that never read trips at its first failure.
	Tries int
	// Now is the clock of ThrottledFor and Status.Since; time.Now.
	Now func() time.Time
	// OnChange hears the new Status each time the throttle starts, ends,
	// turns critical or not, or another set of signals trips: not when a
	// measure moves within the same state.
	OnChange func(Status)
	// OnNote hears once each note a signal makes (a view its role may not
	// read), by the signal's name.
	OnNote func(signal, note string)
}

// Status is the Throttler's combined state.
type Status struct {
	Throttled bool
	// Critical says a signal is past its critical limit: the job should
	// pause, not wait.
	Critical bool
	// Reason joins the tripped signals' texts with "; ".
	Reason string
	// Tripped lists the tripped signals in Config.Signals order.
	Tripped []Trip
	// Since is when the current throttled stretch began; zero when not
	// throttled.
	Since time.Time
}

// Trip is one tripped signal. Until every signal has been read once, the
// one Trip is that wait, with an empty Kind.
type Trip struct {
	Signal   string
	Kind     Kind
	Text     string
	Critical bool
}

// Result is one signal's reading, or why it could not be read.
type Result struct {
	Signal  string
	Kind    Kind
	Reading Reading
	Err     error
}

// Throttler polls its signals, each on a goroutine of its own while Run
// runs, and holds their combined state. Its methods are safe for
// concurrent use.
type Throttler struct {
	cfg   Config
	slots []*slot

	mu       sync.Mutex
	status   Status
	key      string        // what OnChange compares: state and tripped signals
	released chan struct{} // closed while not throttled
	total    time.Duration // throttled time before the current stretch
}

// slot is one signal and what the Throttler knows of it.
type slot struct {
	sig   Signal
	check sync.Mutex // one Check at a time on the signal's connection

	// under Throttler.mu
	read  bool // a Check has succeeded once
	last  Reading
	err   error // of the latest Check, nil after a success
	fails int   // failed Checks in a row
	done  bool  // a Check has ended, well or not
	note  string
}

type update struct {
	s       *slot
	reading Reading
	err     error
}

// New returns a Throttler over cfg.Signals. Until Run has read each signal
// once, it is throttled; with no signals it never is.
func New(cfg Config) (*Throttler, error) {
	if cfg.Interval < 0 || cfg.Timeout < 0 || cfg.Tries < 0 {
		return nil, fmt.Errorf("throttle: interval %v, timeout %v and tries %d must not be negative", cfg.Interval, cfg.Timeout, cfg.Tries)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Tries == 0 {
		cfg.Tries = DefaultTries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Throttler{cfg: cfg, released: make(chan struct{})}
	close(t.released)
	for _, sig := range cfg.Signals {
		if sig == nil {
			return nil, errors.New("throttle: a nil signal")
		}
		t.slots = append(t.slots, &slot{sig: sig})
	}
	t.mu.Lock()
	t.settle(t.cfg.Now())
	t.mu.Unlock()
	return t, nil
}

// Run reads every signal each Interval until ctx ends, then closes the
// signals' connections and returns nil. Run once at a time.
func (t *Throttler) Run(ctx context.Context) error {
	updates := make(chan update)
	var wg sync.WaitGroup
	for _, s := range t.slots {
		wg.Go(func() { t.poll(ctx, s, updates) })
	}
	defer func() {
		wg.Wait()
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.cfg.Timeout)
		defer cancel()
		for _, s := range t.slots {
			_ = s.sig.Close(closeCtx)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u := <-updates:
			t.apply(u)
		}
	}
}

func (t *Throttler) poll(ctx context.Context, s *slot, updates chan<- update) {
	tick := time.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	for {
		r := t.read(ctx, s)
		if ctx.Err() != nil {
			return
		}
		select {
		case updates <- update{s: s, reading: r.Reading, err: r.Err}:
		case <-ctx.Done():
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

func (t *Throttler) read(ctx context.Context, s *slot) Result {
	s.check.Lock()
	defer s.check.Unlock()
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	r, err := s.sig.Check(ctx)
	return Result{Signal: s.sig.Name(), Kind: s.sig.Kind(), Reading: r, Err: err}
}

// CheckAll reads every signal once, all at a time, and returns what each
// found, in Config.Signals order, without changing the Throttler's state:
// what dry-run reports.
func (t *Throttler) CheckAll(ctx context.Context) []Result {
	out := make([]Result, len(t.slots))
	var wg sync.WaitGroup
	for i, s := range t.slots {
		wg.Go(func() { out[i] = t.read(ctx, s) })
	}
	wg.Wait()
	return out
}

// apply records one read and tells OnChange and OnNote what changed. Only
// Run's goroutine calls it, so the callbacks hear changes in order.
func (t *Throttler) apply(u update) {
	t.mu.Lock()
	s := u.s
	s.done = true
	if u.err != nil {
		s.err = u.err
		s.fails++
	} else {
		s.read, s.last, s.err, s.fails = true, u.reading, nil, 0
	}
	var note string
	if u.err == nil && u.reading.Note != s.note {
		s.note = u.reading.Note
		note = s.note
	}
	changed := t.settle(t.cfg.Now())
	status := t.status
	t.mu.Unlock()

	if note != "" && t.cfg.OnNote != nil {
		t.cfg.OnNote(s.sig.Name(), note)
	}
	if changed && t.cfg.OnChange != nil {
		t.cfg.OnChange(status)
	}
}

// settle recomputes the status under t.mu and reports whether it changed
// in what OnChange hears of.
func (t *Throttler) settle(now time.Time) (changed bool) {
	var trips []Trip
	for _, s := range t.slots {
		if !s.done {
			trips = []Trip{{Signal: "throttle", Text: startupReason}}
			break
		}
		switch {
		case s.err != nil && (!s.read || s.fails >= t.cfg.Tries):
			trips = append(trips, Trip{Signal: s.sig.Name(), Kind: s.sig.Kind(), Text: t.failure(s)})
		case s.last.Throttle:
			trips = append(trips, Trip{Signal: s.sig.Name(), Kind: s.sig.Kind(), Text: s.last.Text, Critical: s.last.Critical})
		}
	}
	next := Status{Throttled: len(trips) > 0, Tripped: trips, Since: t.status.Since}
	var texts, names []string
	for _, tr := range trips {
		texts = append(texts, tr.Text)
		names = append(names, tr.Signal)
		next.Critical = next.Critical || tr.Critical
	}
	next.Reason = strings.Join(texts, "; ")

	switch {
	case next.Throttled && !t.status.Throttled:
		next.Since = now
		t.released = make(chan struct{})
	case !next.Throttled && t.status.Throttled:
		t.total += now.Sub(t.status.Since)
		next.Since = time.Time{}
		close(t.released)
	}
	key := fmt.Sprint(next.Throttled, next.Critical, names)
	changed = key != t.key
	t.status, t.key = next, key
	return changed
}

// failure says why a signal is not read: unreachable, or failing.
func (t *Throttler) failure(s *slot) string {
	what := "failing"
	if k := retry.Classify(s.err); k == retry.Transient || timedOut(s.err) {
		what = "unreachable"
	}
	tries := "tries"
	if s.fails == 1 {
		tries = "try"
	}
	return fmt.Sprintf("%s %s (%d %s in a row): %v", s.sig.Name(), what, s.fails, tries, s.err)
}

// Wait returns at once when not throttled, else once the throttle ends or
// ctx does (with ctx's error).
func (t *Throttler) Wait(ctx context.Context) error {
	for {
		t.mu.Lock()
		throttled, released := t.status.Throttled, t.released
		t.mu.Unlock()
		if !throttled {
			return nil
		}
		select {
		case <-released:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// State says whether to wait, why, and whether the job should pause.
func (t *Throttler) State() (throttled bool, reason string, critical bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status.Throttled, t.status.Reason, t.status.Critical
}

// Status returns the combined state in full.
func (t *Throttler) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.status
	s.Tripped = slices.Clone(s.Tripped)
	return s
}

// ThrottledFor is the time spent throttled so far, the current stretch
// included: backfill_throttled_seconds_total.
func (t *Throttler) ThrottledFor() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status.Throttled {
		return t.total + t.cfg.Now().Sub(t.status.Since)
	}
	return t.total
}
