package throttle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults for an AutoRate.
const (
	// DefaultAutoStart is the first rate, in rows per second: low enough
	// that no server notices, the default fixed --rate.
	DefaultAutoStart = 1000
	// DefaultAutoCooldown is how long a cut rate holds before the next
	// change: a cut shows in the probe within a second or two, and in the
	// median of its window within three.
	DefaultAutoCooldown = 3 * time.Second
)

// AutoConfig configures an AutoRate. Rates are rows per second.
type AutoConfig struct {
	// Start is the first rate; DefaultAutoStart (or Max, when lower).
	Start float64
	// Max is the ceiling; zero means none.
	Max float64
	// Min is the floor cuts stop at; zero means a tenth of Start.
	Min float64
	// Step is what one raise adds once a cut has ended the doubling of
	// the start; zero means Start.
	Step float64
	// Baseline is the probe's latency before the job loaded the server
	// (Probe.Baseline).
	Baseline time.Duration
	// Limit is the probe latency past which the rate is cut
	// (--max-probe-latency); zero means only tripped signals cut it.
	Limit time.Duration
	// Near is the probe latency at or under which the rate may rise: the
	// server still feels unloaded. Zero means halfway from Baseline to
	// Limit, or twice Baseline and a millisecond without a Limit.
	Near time.Duration
	// Cooldown is how long a cut holds; DefaultAutoCooldown.
	Cooldown time.Duration
}

// Observation is what AutoRate decides on, read each interval.
type Observation struct {
	// Throttled says a signal tripped, for Reason.
	Throttled bool
	Reason    string
	// Latency is the probe's latency now (Probe.Latency).
	Latency time.Duration
	// RowsPerSecond is the rate the job achieved lately; zero when not
	// known. A job that reaches less than half its cap (too few workers, a
	// slow destination) gets no raise: it would only grow a cap that does
	// not bind, and that a cut would then take long to bring down to
	// where it matters.
	RowsPerSecond float64
}

// RateChange is one change of the rate, and why.
type RateChange struct {
	From, To float64
	Why      string
}

// AutoRate is an additive-increase, multiplicative-decrease controller of
// the job's rate, as TCP's congestion window: it starts low, doubles each
// interval while the server feels unloaded (slow start) until the first
// cut, then adds Step each interval; it halves the rate when a signal
// trips or the probe's latency passes Limit, and then holds it for
// Cooldown. It holds, too, while the latency is between Near and Limit.
// Step is pure: the clock is the caller's.
type AutoRate struct {
	cfg       AutoConfig
	rate      float64
	slowStart bool
	holdUntil time.Time
}

// NewAutoRate checks cfg and returns the controller at its start rate.
func NewAutoRate(cfg AutoConfig) (*AutoRate, error) {
	if cfg.Start < 0 || cfg.Max < 0 || cfg.Min < 0 || cfg.Step < 0 || cfg.Baseline < 0 || cfg.Limit < 0 || cfg.Near < 0 || cfg.Cooldown < 0 {
		return nil, errors.New("throttle: auto rate settings must not be negative")
	}
	if cfg.Start == 0 {
		cfg.Start = DefaultAutoStart
	}
	if cfg.Max > 0 {
		cfg.Start = min(cfg.Start, cfg.Max)
	}
	if cfg.Min == 0 {
		cfg.Min = cfg.Start / 10
	}
	if cfg.Step == 0 {
		cfg.Step = cfg.Start
	}
	if cfg.Near == 0 {
		if cfg.Limit > cfg.Baseline {
			cfg.Near = cfg.Baseline + (cfg.Limit-cfg.Baseline)/2
		} else {
			cfg.Near = 2*cfg.Baseline + time.Millisecond
		}
	}
	if cfg.Cooldown == 0 {
		cfg.Cooldown = DefaultAutoCooldown
	}
	return &AutoRate{cfg: cfg, rate: cfg.Start, slowStart: true}, nil
}

// Rate is the current rate.
func (a *AutoRate) Rate() float64 { return a.rate }

// Step decides the rate at now from o, and returns the change if there is
// one.
func (a *AutoRate) Step(now time.Time, o Observation) (RateChange, bool) {
	if now.Before(a.holdUntil) {
		return RateChange{}, false
	}
	over := a.cfg.Limit > 0 && o.Latency > a.cfg.Limit
	if o.Throttled || over {
		why := o.Reason
		if over {
			why = fmt.Sprintf("probe latency %s > %s", measureText(o.Latency), limitText(a.cfg.Limit))
		}
		a.slowStart = false
		a.holdUntil = now.Add(a.cfg.Cooldown)
		return a.set(max(a.cfg.Min, a.rate/2), "halved: "+why)
	}
	if o.Latency > a.cfg.Near || o.RowsPerSecond > 0 && o.RowsPerSecond < a.rate/2 {
		return RateChange{}, false
	}
	to, how := a.rate+a.cfg.Step, "raised"
	if a.slowStart {
		to, how = a.rate*2, "doubled"
	}
	if a.cfg.Max > 0 {
		to = min(to, a.cfg.Max)
	}
	return a.set(to, fmt.Sprintf("%s: probe latency %s near its baseline %s", how, measureText(o.Latency), measureText(a.cfg.Baseline)))
}

func (a *AutoRate) set(to float64, why string) (RateChange, bool) {
	if to == a.rate {
		return RateChange{}, false
	}
	c := RateChange{From: a.rate, To: to, Why: why}
	a.rate = to
	return c, true
}

// Run hands the start rate to apply, then each interval observes, steps
// and hands every change to apply, until ctx ends; it returns nil then.
func (a *AutoRate) Run(ctx context.Context, interval time.Duration, observe func() Observation, apply func(RateChange)) error {
	if interval <= 0 {
		interval = DefaultInterval
	}
	apply(RateChange{To: a.rate, Why: "start of --rate auto"})
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			if c, ok := a.Step(now, observe()); ok {
				apply(c)
			}
		}
	}
}

// Observer reads t and p for AutoRate.Run: whether a signal tripped (the
// Throttler's wait for its first readings is no reason to cut), the
// probe's latency, and the achieved rate from rowsPerSecond (nil: not
// known).
func Observer(t *Throttler, p *Probe, rowsPerSecond func() float64) func() Observation {
	return func() Observation {
		var o Observation
		var reasons []string
		for _, tr := range t.Status().Tripped {
			if tr.Kind != "" {
				o.Throttled = true
				reasons = append(reasons, tr.Text)
			}
		}
		o.Reason = strings.Join(reasons, "; ")
		o.Latency = p.Latency()
		if rowsPerSecond != nil {
			o.RowsPerSecond = rowsPerSecond()
		}
		return o
	}
}
