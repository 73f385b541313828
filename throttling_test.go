package backfill

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/metrics"
	"github.com/backfill/backfill/throttle"
)

// TestThrottleTellsTheMetrics: once the run's metrics use the throttle,
// backfill_throttled{reason} says which kind of signal holds the job,
// backfill_throttled_seconds_total counts the workers' waits, and
// waitingFor gives the progress line the reason.
func TestThrottleTellsTheMetrics(t *testing.T) {
	m, err := metrics.New("j", "")
	if err != nil {
		t.Fatal(err)
	}
	byHand := &throttle.Manual{}
	th := &throttling{job: Job{Name: "j"}, log: zerolog.Nop(), critical: make(chan string, 1)}
	if th.throttler, err = throttle.New(throttle.Config{Signals: []throttle.Signal{byHand}, Interval: 10 * time.Millisecond, OnChange: th.changed}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- th.throttler.Run(ctx) }()
	defer func() { cancel(); <-done }()
	th.useMetrics(m)

	gauge := func(name, reason string) float64 {
		t.Helper()
		families, err := m.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
			for _, s := range f.GetMetric() {
				for _, l := range s.GetLabel() {
					if reason == "" || l.GetName() == "reason" && l.GetValue() == reason {
						if s.Gauge != nil {
							return s.Gauge.GetValue()
						}
						return s.Counter.GetValue()
					}
				}
			}
		}
		t.Fatalf("no %s{reason=%q}", name, reason)
		return 0
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("not %s within 5 s", what)
			}
		}
	}
	eventually("read once", func() bool { throttled, _, _ := th.throttler.State(); return !throttled })
	if th.waitingFor() != "" || gauge("backfill_throttled", "manual") != 0 {
		t.Fatalf("not throttled: reason %q", th.waitingFor())
	}

	byHand.Set(true)
	eventually("throttled by hand", func() bool { return th.waitingFor() == "throttled by hand (backfill set --throttle on)" })
	if gauge("backfill_throttled", "manual") != 1 || gauge("backfill_throttled", "replica_lag") != 0 {
		t.Errorf("backfill_throttled: manual %v, replica_lag %v", gauge("backfill_throttled", "manual"), gauge("backfill_throttled", "replica_lag"))
	}
	waited := make(chan error, 1)
	go func() { waited <- th.wait(ctx) }()
	time.Sleep(100 * time.Millisecond)
	byHand.Set(false)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	eventually("released", func() bool { return th.waitingFor() == "" })
	if v := gauge("backfill_throttled", "manual"); v != 0 {
		t.Errorf("backfill_throttled{reason=manual} = %v after the release", v)
	}
	if v := gauge("backfill_throttled_seconds_total", ""); v < 0.1 {
		t.Errorf("backfill_throttled_seconds_total = %v after a worker waited 0.1 s", v)
	}
}

// TestAutoLimitBurstHoldsAChunk: a rate --rate auto sets lets a chunk's
// tokens (autoChunkTime of the rate) build up while a worker writes, so a
// chunk of a job sized by time does not wait for its tokens on top of its
// write; a rate an operator sets brings back the fixed chunk's burst.
func TestAutoLimitBurstHoldsAChunk(t *testing.T) {
	j := Job{Name: "orders", TargetChunkTime: DefaultTargetChunkTime}
	obs, err := newObserver(context.Background(), j, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{job: j, obs: obs, throttle: &throttling{}}
	if r.sizer, err = r.newSizer(); err != nil {
		t.Fatal(err)
	}
	limiter := rate.NewLimiter(1000, j.fixedChunkSize())
	r.setAutoLimit(limiter, 1_000_000)
	if got, want := limiter.Burst(), int(1_000_000*autoChunkTime.Seconds()); got != want {
		t.Fatalf("burst at 1,000,000 rows/s under --rate auto: %d, want %d", got, want)
	}
	r.setAutoLimit(limiter, 2000) // a cut: a chunk is never less than the fixed size
	if got := limiter.Burst(); got != DefaultChunkSize {
		t.Fatalf("burst at 2,000 rows/s under --rate auto: %d, want %d", got, DefaultChunkSize)
	}
	r.setAutoLimit(limiter, 1_000_000)
	r.setLimit(limiter, 50_000)
	if got := limiter.Burst(); got != DefaultChunkSize {
		t.Fatalf("burst after set --rate 50000: %d, want the fixed chunk size %d", got, DefaultChunkSize)
	}
}
