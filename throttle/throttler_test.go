package throttle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// fakeSignal reads whatever the test last set.
type fakeSignal struct {
	name string
	mu   sync.Mutex
	r    Reading
	err  error
}

func (f *fakeSignal) Name() string                { return f.name }
func (f *fakeSignal) Kind() Kind                  { return KindLoad }
func (f *fakeSignal) Close(context.Context) error { return nil }
func (f *fakeSignal) Check(context.Context) (Reading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.r, f.err
}
func (f *fakeSignal) set(r Reading, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.r, f.err = r, err
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type bundle struct {
	t       *Throttler
	sigs    []*fakeSignal
	clock   *fakeClock
	changes []Status
	notes   []string
}

// setup returns a Throttler over n fake signals, read by hand through
// read(i) rather than by Run, with every OnChange and OnNote recorded.
func setup(t *testing.T, n int) *bundle {
	t.Helper()
	b := &bundle{clock: &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}}
	var sigs []Signal
	for i := range n {
		s := &fakeSignal{name: fmt.Sprintf("signal %d", i+1), r: Reading{Text: "fine"}}
		b.sigs = append(b.sigs, s)
		sigs = append(sigs, s)
	}
	th, err := New(Config{
		Signals:  sigs,
		Now:      b.clock.Now,
		OnChange: func(s Status) { b.changes = append(b.changes, s) },
		OnNote:   func(sig, note string) { b.notes = append(b.notes, sig+": "+note) },
	})
	if err != nil {
		t.Fatal(err)
	}
	b.t = th
	return b
}

// read has the throttler read signal i once, as Run's poller would.
func (b *bundle) read(i int) {
	s := b.t.slots[i]
	r := b.t.read(context.Background(), s)
	b.t.apply(update{s: s, reading: r.Reading, err: r.Err})
}

func (b *bundle) readAll() {
	for i := range b.sigs {
		b.read(i)
	}
}

func TestThrottledUntilEverySignalIsRead(t *testing.T) {
	b := setup(t, 2)
	if throttled, reason, _ := b.t.State(); !throttled || reason != startupReason {
		t.Fatalf("new throttler: throttled %v, %q; want throttled for %q", throttled, reason, startupReason)
	}
	b.read(0)
	if throttled, _, _ := b.t.State(); !throttled {
		t.Fatal("released with one of two signals unread")
	}
	b.read(1)
	if throttled, reason, _ := b.t.State(); throttled {
		t.Fatalf("still throttled once both signals read fine: %q", reason)
	}
	if len(b.changes) != 1 || b.changes[0].Throttled {
		t.Fatalf("changes %+v; want one, to not throttled", b.changes)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if b.t.Wait(ctx) != nil {
		t.Error("Wait blocked while not throttled")
	}

	none, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if throttled, _, _ := none.State(); throttled {
		t.Error("a throttler without signals is throttled")
	}
}

func TestChangesOnlyWhenTheTrippedSetChanges(t *testing.T) {
	b := setup(t, 2)
	b.readAll()
	b.changes = nil

	b.sigs[0].set(Reading{Throttle: true, Text: "lag 2 s > 1 s"}, nil)
	b.read(0)
	b.sigs[0].set(Reading{Throttle: true, Text: "lag 3 s > 1 s"}, nil)
	b.read(0) // the measure moved; the state did not
	b.sigs[1].set(Reading{Throttle: true, Critical: true, Text: "critical load"}, nil)
	b.read(1)
	b.sigs[1].set(Reading{Text: "fine"}, nil)
	b.read(1)
	b.sigs[0].set(Reading{Text: "fine"}, nil)
	b.read(0)

	var got []string
	for _, c := range b.changes {
		got = append(got, fmt.Sprintf("%v/%v/%s", c.Throttled, c.Critical, c.Reason))
	}
	want := []string{
		"true/false/lag 2 s > 1 s",
		"true/true/lag 3 s > 1 s; critical load",
		"true/false/lag 3 s > 1 s",
		"false/false/",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if s := b.t.Status(); s.Throttled || !s.Since.IsZero() || len(s.Tripped) != 0 {
		t.Errorf("status after release: %+v", s)
	}
}

func TestAFailingSignalTripsAfterItsTries(t *testing.T) {
	b := setup(t, 1)
	b.readAll()
	refused := &pgconn.ConnectError{}
	b.sigs[0].set(Reading{}, fmt.Errorf("read the heartbeat: %w", refused))
	for try := 1; try < DefaultTries; try++ {
		b.read(0)
		if throttled, reason, _ := b.t.State(); throttled {
			t.Fatalf("throttled after %d failed reads: %q; want %d", try, reason, DefaultTries)
		}
	}
	b.read(0)
	_, reason, _ := b.t.State()
	if want := "signal 1 unreachable (3 tries in a row): read the heartbeat"; !strings.HasPrefix(reason, want) {
		t.Fatalf("reason %q; want it to start %q", reason, want)
	}
	b.sigs[0].set(Reading{Text: "fine"}, nil)
	b.read(0)
	if throttled, reason, _ := b.t.State(); throttled {
		t.Fatalf("still throttled after a good read: %q", reason)
	}

	// A signal that never read fails closed at once, and a permanent error
	// says failing, not unreachable.
	b = setup(t, 1)
	b.sigs[0].set(Reading{}, errors.New("syntax error"))
	b.read(0)
	if _, reason, _ := b.t.State(); reason != "signal 1 failing (1 try in a row): syntax error" {
		t.Fatalf("reason %q", reason)
	}
}

func TestThrottledForCountsEveryStretch(t *testing.T) {
	b := setup(t, 1)
	b.clock.advance(time.Second) // the wait for the first read counts
	b.read(0)
	for _, stretch := range []time.Duration{3 * time.Second, 5 * time.Second} {
		b.sigs[0].set(Reading{Throttle: true, Text: "busy"}, nil)
		b.read(0)
		b.clock.advance(stretch)
		b.sigs[0].set(Reading{Text: "fine"}, nil)
		b.read(0)
		b.clock.advance(time.Minute) // not throttled: does not count
	}
	b.sigs[0].set(Reading{Throttle: true, Text: "busy"}, nil)
	b.read(0)
	b.clock.advance(2 * time.Second) // the current stretch counts too
	if got, want := b.t.ThrottledFor(), 11*time.Second; got != want {
		t.Fatalf("ThrottledFor = %v, want %v", got, want)
	}
}

func TestNotesAreSaidOnce(t *testing.T) {
	b := setup(t, 1)
	b.sigs[0].set(Reading{Text: "fine", Note: "cannot see"}, nil)
	b.read(0)
	b.read(0)
	b.sigs[0].set(Reading{Text: "fine"}, nil)
	b.read(0)
	if len(b.notes) != 1 || b.notes[0] != "signal 1: cannot see" {
		t.Fatalf("notes %q; want one", b.notes)
	}
}

func TestWaitBlocksWhileRunSeesATrip(t *testing.T) {
	sig := &fakeSignal{name: "by test", r: Reading{Text: "fine"}}
	th, err := New(Config{Signals: []Signal{sig}, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, th.Run)
	ctx := t.Context()
	if err := th.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	sig.set(Reading{Throttle: true, Text: "hold"}, nil)
	waitFor(t, func() bool { throttled, _, _ := th.State(); return throttled })

	released := make(chan error, 1)
	go func() { released <- th.Wait(ctx) }()
	select {
	case err := <-released:
		t.Fatalf("Wait returned while throttled: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	sig.set(Reading{Text: "fine"}, nil)
	select {
	case err := <-released:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait still blocked after the signal cleared")
	}

	sig.set(Reading{Throttle: true, Text: "hold"}, nil)
	waitFor(t, func() bool { throttled, _, _ := th.State(); return throttled })
	short, stop := context.WithTimeout(ctx, 20*time.Millisecond)
	defer stop()
	if err := th.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with an ended context = %v; want its error", err)
	}
}

func TestCheckAllLeavesTheStateAlone(t *testing.T) {
	b := setup(t, 2)
	b.sigs[1].set(Reading{Throttle: true, Text: "busy"}, nil)
	results := b.t.CheckAll(t.Context())
	if len(results) != 2 || results[0].Signal != "signal 1" || !results[1].Reading.Throttle {
		t.Fatalf("results %+v", results)
	}
	if _, reason, _ := b.t.State(); reason != startupReason {
		t.Fatalf("CheckAll changed the state: %q", reason)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestManualThrottle(t *testing.T) {
	m := &Manual{}
	th, err := New(Config{Signals: []Signal{m}, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, th.Run)
	waitFor(t, func() bool { throttled, _, _ := th.State(); return !throttled })
	m.Set(true)
	waitFor(t, func() bool { throttled, _, _ := th.State(); return throttled })
	if s := th.Status(); s.Reason != "throttled by hand (backfill set --throttle on)" || s.Tripped[0].Kind != KindManual {
		t.Fatalf("status %+v", s)
	}
	m.Set(false)
	waitFor(t, func() bool { throttled, _, _ := th.State(); return !throttled })
}
