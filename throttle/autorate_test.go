package throttle

import (
	"strings"
	"testing"
	"time"
)

func TestAutoRate(t *testing.T) {
	ms := time.Millisecond
	quiet := Observation{Latency: ms}
	type step struct {
		after time.Duration // since the previous step
		o     Observation
		want  float64
		why   string // part of the change's reason; "" for no change
		// workers is the pool's size after the step, for a controller that
		// sizes it; the observation's Workers is filled in with the size
		// before the step unless the step sets it
		workers int
	}
	cases := []struct {
		name  string
		cfg   AutoConfig
		steps []step
	}{
		{
			name: "doubles from the start on an idle server, up to MAX",
			cfg:  AutoConfig{Max: 5000, Baseline: ms, Limit: 20 * ms},
			steps: []step{
				{time.Second, quiet, 2000, "doubled", 0},
				{time.Second, quiet, 4000, "doubled", 0},
				{time.Second, quiet, 5000, "doubled", 0},
				{time.Second, quiet, 5000, "", 0},
			},
		},
		{
			name: "halves past the latency limit, holds, climbs back by halves, then adds a step at a time",
			cfg:  AutoConfig{Baseline: ms, Limit: 20 * ms, Cooldown: 3 * time.Second},
			steps: []step{
				{time.Second, quiet, 2000, "doubled", 0},
				{time.Second, quiet, 4000, "doubled", 0},
				{time.Second, quiet, 8000, "doubled", 0},
				{time.Second, Observation{Latency: 25 * ms}, 4000, "halved: probe latency 25 ms > 20 ms", 0},
				{time.Second, Observation{Latency: 25 * ms}, 4000, "", 0}, // cooling down
				{time.Second, quiet, 4000, "", 0},
				{time.Second, quiet, 6000, "raised", 0}, // 3 s after the cut; no more doubling: half the way back to 8000
				{time.Second, quiet, 7000, "raised", 0}, // half the way is 500: Step
				{time.Second, quiet, 8000, "raised", 0},
				{time.Second, quiet, 9000, "raised", 0},
			},
		},
		{
			name: "holds between near and the limit",
			cfg:  AutoConfig{Baseline: 2 * ms, Limit: 22 * ms}, // near: 12 ms
			steps: []step{
				{time.Second, Observation{Latency: 12 * ms}, 2000, "doubled", 0},
				{time.Second, Observation{Latency: 15 * ms}, 2000, "", 0},
				{time.Second, Observation{Latency: 22 * ms}, 2000, "", 0},
			},
		},
		{
			name: "a tripped signal halves it, down to the floor",
			cfg:  AutoConfig{Start: 400, Baseline: ms, Cooldown: time.Second},
			steps: []step{
				{time.Second, Observation{Throttled: true, Reason: "replica lag 12 s > 10 s on replica 1", Latency: ms}, 200, "halved: replica lag 12 s > 10 s on replica 1", 0},
				{time.Second, Observation{Throttled: true, Reason: "replica lag", Latency: ms}, 100, "halved", 0},
				{time.Second, Observation{Throttled: true, Reason: "replica lag", Latency: ms}, 50, "halved", 0},
				{time.Second, Observation{Throttled: true, Reason: "replica lag", Latency: ms}, 40, "halved", 0}, // Min: a tenth of Start
				{time.Second, Observation{Throttled: true, Reason: "replica lag", Latency: ms}, 40, "", 0},
				{time.Second, quiet, 440, "raised", 0},
			},
		},
		{
			name: "no raise while the job reaches less than half its cap",
			cfg:  AutoConfig{Baseline: ms},
			steps: []step{
				{time.Second, Observation{Latency: ms, RowsPerSecond: 400}, 1000, "", 0},
				{time.Second, Observation{Latency: ms, RowsPerSecond: 900}, 2000, "doubled", 0},
			},
		},
		{
			name: "without a limit, near is twice the baseline and a millisecond",
			cfg:  AutoConfig{Baseline: 2 * ms},
			steps: []step{
				{time.Second, Observation{Latency: 5 * ms}, 2000, "doubled", 0},
				{time.Second, Observation{Latency: 6 * ms}, 2000, "", 0},
				{time.Second, Observation{Latency: time.Second}, 2000, "", 0}, // slow, yet no limit to cut at
			},
		},
		{
			name: "the cut halves what flows, not a cap the job does not reach",
			cfg:  AutoConfig{Start: 8000, Baseline: ms, Limit: 20 * ms},
			steps: []step{
				{time.Second, Observation{Latency: 25 * ms, RowsPerSecond: 3000}, 1500, "halved", 0},
			},
		},
		{
			name: "sizing the pool: a worker when the cap does not bind, kept when it pays",
			cfg:  AutoConfig{Baseline: ms, Limit: 20 * ms, MaxWorkers: 3, Settle: 2 * time.Second},
			steps: []step{
				{time.Second, Observation{Latency: ms, RowsPerSecond: 1000}, 2000, "doubled", 1},
				{time.Second, Observation{Latency: ms, RowsPerSecond: 1900}, 4000, "doubled", 1},
				{time.Second, Observation{Latency: ms, RowsPerSecond: 1900}, 4000, "worker added: 1900 rows/s reached of 4000", 2},
				{time.Second, Observation{Latency: ms, RowsPerSecond: 3000}, 4000, "", 2}, // settling
				{time.Second, Observation{Latency: ms, RowsPerSecond: 3800}, 8000, "doubled", 2},
				{time.Second, Observation{Latency: ms, RowsPerSecond: 3900}, 8000, "worker added", 3},
				{3 * time.Second, Observation{Latency: ms, RowsPerSecond: 5000}, 16000, "doubled", 3}, // kept: 28% more, over the 25% a third worker must add
				{time.Second, Observation{Latency: ms, RowsPerSecond: 5000}, 16000, "", 3},            // MaxWorkers
				{time.Second, Observation{Latency: 25 * ms, RowsPerSecond: 5000}, 2500, "halved: probe latency", 2},
			},
		},
		{
			name: "sizing the pool: a second worker that adds less than half of what the first did is retired",
			cfg:  AutoConfig{Start: 4000, Baseline: ms, MaxWorkers: 8, Settle: 2 * time.Second},
			steps: []step{
				{time.Second, Observation{Latency: ms, RowsPerSecond: 1500}, 4000, "worker added", 2},
				{2 * time.Second, Observation{Latency: ms, RowsPerSecond: 2100}, 4000, "worker 2 retired: the rate went from 1500 to 2100 rows/s, less than 50% more", 1},
			},
		},
		{
			name: "sizing the pool: a worker that adds little is retired, and none added for a while",
			cfg:  AutoConfig{Start: 4000, Baseline: ms, MaxWorkers: 8, Settle: 2 * time.Second, Regrow: time.Minute},
			steps: []step{
				{time.Second, Observation{Latency: ms, RowsPerSecond: 1500}, 4000, "worker added", 2},
				{time.Second, Observation{Latency: 5 * ms, RowsPerSecond: 1600}, 4000, "", 2},
				{2 * time.Second, Observation{Latency: ms, RowsPerSecond: 1600}, 4000, "worker 2 retired: the rate went from 1500 to 1600 rows/s, less than 50% more", 1},
				{time.Second, Observation{Latency: ms, RowsPerSecond: 1500}, 4000, "", 1},
				{time.Minute, Observation{Latency: ms, RowsPerSecond: 1500}, 4000, "worker added", 2},
			},
		},
		{
			name: "sizing the pool: no worker while the server feels loaded",
			cfg:  AutoConfig{Start: 4000, Baseline: ms, Limit: 21 * ms, MaxWorkers: 8}, // near: 11 ms
			steps: []step{
				{time.Second, Observation{Latency: 15 * ms, RowsPerSecond: 1500}, 4000, "", 1},
			},
		},
		{
			name: "sizing the pool: an operator's size ends it",
			cfg:  AutoConfig{Start: 4000, Baseline: ms, MaxWorkers: 8},
			steps: []step{
				{time.Second, Observation{Latency: ms, RowsPerSecond: 1500, Workers: 5}, 4000, "", 0},
				{time.Second, Observation{Latency: ms, RowsPerSecond: 3000, Workers: 5}, 8000, "doubled", 0},
			},
		},
		{
			name:  "a MAX below the start starts there",
			cfg:   AutoConfig{Max: 300, Baseline: ms},
			steps: []step{{time.Second, quiet, 300, "", 0}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := NewAutoRate(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
			for i, s := range c.steps {
				now = now.Add(s.after)
				before, beforeWorkers := a.Rate(), a.Workers()
				o := s.o
				if o.Workers == 0 {
					o.Workers = beforeWorkers
				}
				change, changed := a.Step(now, o)
				if a.Rate() != s.want {
					t.Fatalf("step %d: rate %v, want %v", i, a.Rate(), s.want)
				}
				if c.cfg.MaxWorkers > 0 && a.Workers() != s.workers {
					t.Fatalf("step %d: workers %d, want %d", i, a.Workers(), s.workers)
				}
				if changed && (change.FromWorkers != beforeWorkers || change.ToWorkers != a.Workers()) {
					t.Fatalf("step %d: change %+v; want workers %d → %d", i, change, beforeWorkers, a.Workers())
				}
				switch {
				case s.why == "" && changed:
					t.Fatalf("step %d: changed %+v; want no change", i, change)
				case s.why != "" && !changed:
					t.Fatalf("step %d: no change; want one for %q", i, s.why)
				case changed && (change.From != before || change.To != s.want || !strings.Contains(change.Why, s.why)):
					t.Fatalf("step %d: change %+v; want %v → %v for %q", i, change, before, s.want, s.why)
				}
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	cases := []struct {
		in   string
		want Rate
		err  string
	}{
		{"1000", Rate{PerSecond: 1000}, ""},
		{"0", Rate{}, ""},
		{"2.5e3", Rate{PerSecond: 2500}, ""},
		{"auto", Rate{Auto: true}, ""},
		{"auto:5000", Rate{Auto: true, PerSecond: 5000}, ""},
		{" auto:5000 ", Rate{Auto: true, PerSecond: 5000}, ""},
		{"auto:0", Rate{}, "MAX must be rows per second above 0"},
		{"auto:", Rate{}, "MAX must be"},
		{"auto:fast", Rate{}, "MAX must be"},
		{"automatic", Rate{}, "want ROWS_PER_S, auto or auto:MAX"},
		{"-5", Rate{}, "want ROWS_PER_S"},
		{"NaN", Rate{}, "want ROWS_PER_S"},
		{"", Rate{}, "want ROWS_PER_S"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseRate(c.in)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("ParseRate(%q) = %+v, %v; want an error with %q", c.in, got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ParseRate(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			}
			var back Rate
			if err := back.UnmarshalText([]byte(got.String())); err != nil || back != got {
				t.Fatalf("%+v does not read back from %q: %+v, %v", got, got.String(), back, err)
			}
		})
	}
}

func TestHistoryLag(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var h history
	if lag, ok := h.lagBehind(5, t0); !ok || lag != 0 {
		t.Fatalf("empty history: %v, %v; want 0, true", lag, ok)
	}
	for i := range 5 {
		h.add(int64(10*(i+1)), t0.Add(time.Duration(i)*time.Second)) // 10 at t0, 20 at t0+1s, …
	}
	h.add(30, t0.Add(10*time.Second)) // going backwards: ignored
	now := t0.Add(10 * time.Second)
	for _, c := range []struct {
		seen int64
		want time.Duration
	}{
		{50, 0},                 // has everything
		{45, 6 * time.Second},   // lacks 50, written at t0+4s
		{20, 8 * time.Second},   // lacks 30, written at t0+2s
		{0, 10 * time.Second},   // lacks all: since the first
		{999, 0},                // ahead of the history: caught up
		{10, 9 * time.Second},   // lacks 20
		{11, 9 * time.Second},   // between marks
		{-50, 10 * time.Second}, // none yet
	} {
		if lag, ok := h.lagBehind(c.seen, now); !ok || lag != c.want {
			t.Errorf("seen %d: %v, %v; want %v", c.seen, lag, ok, c.want)
		}
	}
	h.add(60, t0.Add(historyKeep+3*time.Second)) // drops the marks before t0+3s
	if lag, ok := h.lagBehind(10, t0.Add(historyKeep+4*time.Second)); ok {
		t.Errorf("seen before a truncated history: %v, true; want false", lag)
	}
	if lag, ok := h.lagBehind(45, t0.Add(historyKeep+4*time.Second)); !ok || lag != historyKeep {
		t.Errorf("seen within a truncated history: %v, %v; want %v", lag, ok, historyKeep)
	}
}

func TestLagOf(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	cases := []struct {
		name string
		v    standbyView
		want time.Duration
	}{
		{"heartbeat seen: the standby's clock minus it", standbyView{now: now, seen: ago(3 * time.Second), lastReplay: ago(time.Hour), replayBehind: true}, 3 * time.Second},
		{"no heartbeat, replay behind: the last replayed commit's age", standbyView{now: now, lastReplay: ago(7 * time.Second), replayBehind: true}, 7 * time.Second},
		{"no heartbeat, replay caught up: an idle primary is no lag", standbyView{now: now, lastReplay: ago(time.Hour)}, 0},
		{"a clock behind the primary's is no negative lag", standbyView{now: now, seen: ago(-time.Second)}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := lagOf(c.v, nil); got != c.want {
				t.Fatalf("lag %v, want %v", got, c.want)
			}
		})
	}
}

func TestDurationTexts(t *testing.T) {
	for _, c := range []struct {
		d               time.Duration
		limit, measured string
	}{
		{10 * time.Second, "10 s", "10.0 s"},
		{12340 * time.Millisecond, "12.3 s", "12.3 s"},
		{1004 * time.Millisecond, "1 s", "1.00 s"},
		{1500 * time.Millisecond, "1.5 s", "1.50 s"},
		{201 * time.Millisecond, "201 ms", "201 ms"},
		{300 * time.Microsecond, "0.3 ms", "0.3 ms"},
		{0, "0 ms", "0.0 ms"},
	} {
		if got := limitText(c.d); got != c.limit {
			t.Errorf("limitText(%v) = %q, want %q", c.d, got, c.limit)
		}
		if got := measureText(c.d); got != c.measured {
			t.Errorf("measureText(%v) = %q, want %q", c.d, got, c.measured)
		}
	}
}
