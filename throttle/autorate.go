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
	// DefaultAutoSettle is how long a worker the controller added runs
	// before it judges what the worker gained: a second to connect and
	// take chunks, and a full second of the achieved rate after that.
	DefaultAutoSettle = 2 * time.Second
	// DefaultAutoRegrow is how long the controller adds no worker after
	// one that did not pay: the server's spare capacity changes with its
	// load, so the question is asked again, but not every few seconds.
	DefaultAutoRegrow = time.Minute
	// minWorkerShare is what an added worker must add to the achieved
	// rate to stay, as a share of what each worker before it achieved: at
	// least half a worker's worth (50% more for a second worker, 25% for a
	// third). A worker that adds less is mostly waiting for what the others
	// hold, the server's cores or disks, and so are the application's
	// sessions.
	minWorkerShare = 0.5
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
	// MaxWorkers, when positive, has the controller size the job's worker
	// pool too, from one worker up to MaxWorkers: it adds a worker only
	// when the rate it allows is not reached and the server feels
	// unloaded, keeps it only if it added half a worker's share (minWorkerShare), and
	// retires one at each cut. Every session the job adds is one the
	// application's compete with; on a server without spare cores more
	// workers add contention, not rows.
	MaxWorkers int
	// Settle is how long an added worker runs before the controller
	// judges it; DefaultAutoSettle.
	Settle time.Duration
	// Regrow is how long no worker is added after one that did not pay;
	// DefaultAutoRegrow.
	Regrow time.Duration
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
	// Workers is the pool's size now, for a controller that sizes it
	// (AutoConfig.MaxWorkers); zero when not known. A size other than the
	// one the controller set (or a negative one, when the caller knows the
	// pool is no longer the controller's) means an operator set it: the
	// controller then leaves the pool alone.
	Workers int
}

// RateChange is one change of the rate or, for a controller that sizes
// the pool, of the number of workers, and why. FromWorkers and ToWorkers
// are zero when it does not size the pool, and equal when the change is
// the rate's alone.
type RateChange struct {
	From, To               float64
	FromWorkers, ToWorkers int
	Why                    string
}

// AutoRate is an additive-increase, multiplicative-decrease controller of
// the job's rate, as TCP's congestion window: it starts low, doubles each
// interval while the server feels unloaded (slow start) until the first
// cut, then climbs back half the way to the rate of the last cut each
// interval, and adds Step each interval beyond it; it halves the rate when a signal
// trips or the probe's latency passes Limit, and then holds it for
// Cooldown. It holds, too, while the latency is between Near and Limit.
// Step is pure: the clock is the caller's.
//
// A controller that sizes the pool starts with one worker, and spends a
// step that would raise a rate the job does not reach on a worker instead
// (see AutoConfig.MaxWorkers).
type AutoRate struct {
	cfg       AutoConfig
	rate      float64
	slowStart bool
	holdUntil time.Time
	// cutFrom is the rate that flowed when the last cut came: raises
	// climb back towards it by halves before they add Step at a time
	cutFrom float64

	workers int // the pool's size it set; 0 once it does not size it
	// the worker it added last, while it has not judged it yet: when, and
	// the rate achieved before it
	added       time.Time
	addedFrom   float64
	noGrowUntil time.Time
}

// NewAutoRate checks cfg and returns the controller at its start rate.
func NewAutoRate(cfg AutoConfig) (*AutoRate, error) {
	if cfg.Start < 0 || cfg.Max < 0 || cfg.Min < 0 || cfg.Step < 0 || cfg.Baseline < 0 || cfg.Limit < 0 || cfg.Near < 0 || cfg.Cooldown < 0 ||
		cfg.MaxWorkers < 0 || cfg.Settle < 0 || cfg.Regrow < 0 {
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
	if cfg.Settle == 0 {
		cfg.Settle = DefaultAutoSettle
	}
	if cfg.Regrow == 0 {
		cfg.Regrow = DefaultAutoRegrow
	}
	a := &AutoRate{cfg: cfg, rate: cfg.Start, slowStart: true}
	if cfg.MaxWorkers > 0 {
		a.workers = 1
	}
	return a, nil
}

// Rate is the current rate.
func (a *AutoRate) Rate() float64 { return a.rate }

// Workers is the pool's size the controller set, or zero when it does not
// size the pool (AutoConfig.MaxWorkers, or an operator took it over).
func (a *AutoRate) Workers() int { return a.workers }

// Step decides the rate at now from o, and returns the change if there is
// one.
func (a *AutoRate) Step(now time.Time, o Observation) (RateChange, bool) {
	if a.workers > 0 && o.Workers != 0 && o.Workers != a.workers {
		a.workers = 0 // an operator set the pool's size: theirs from now on
	}
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
		a.added = time.Time{}
		// half of what flows: halving a cap the job does not reach would
		// change nothing the server feels
		flowing := a.rate
		if o.RowsPerSecond > 0 {
			flowing = min(flowing, o.RowsPerSecond)
		}
		a.cutFrom = flowing
		return a.set(max(a.cfg.Min, flowing/2), max(1, a.workers-1), "halved: "+why)
	}
	if o.Latency > a.cfg.Near {
		return RateChange{}, false
	}
	if !a.added.IsZero() {
		// the worker added last runs for Settle at the same cap, so that
		// what it gained is its own
		if now.Sub(a.added) < a.cfg.Settle || o.RowsPerSecond == 0 {
			return RateChange{}, false
		}
		a.added = time.Time{}
		gain := minWorkerShare / float64(max(a.workers-1, 1))
		if o.RowsPerSecond < a.addedFrom*(1+gain) {
			a.noGrowUntil = now.Add(a.cfg.Regrow)
			return a.set(a.rate, a.workers-1, fmt.Sprintf("worker %d retired: the rate went from %.0f to %.0f rows/s, less than %.0f%% more",
				a.workers, a.addedFrom, o.RowsPerSecond, gain*100))
		}
	}
	if o.RowsPerSecond > 0 && o.RowsPerSecond < a.rate/2 {
		// the cap does not bind: a worker more may reach it, a higher cap
		// would not
		if a.workers == 0 || a.workers >= a.cfg.MaxWorkers || now.Before(a.noGrowUntil) {
			return RateChange{}, false
		}
		a.added, a.addedFrom = now, o.RowsPerSecond
		return a.set(a.rate, a.workers+1, fmt.Sprintf("worker added: %.0f rows/s reached of %.0f allowed, probe latency %s near its baseline %s",
			o.RowsPerSecond, a.rate, measureText(o.Latency), measureText(a.cfg.Baseline)))
	}
	// below the rate a cut came at, half the way back each step (as
	// BIC-TCP's binary search): one cut costs seconds, not the minutes
	// that Step at a time would take from half of a high rate; from there
	// on, Step at a time
	to, how := a.rate+max(a.cfg.Step, (a.cutFrom-a.rate)/2), "raised"
	if a.slowStart {
		to, how = a.rate*2, "doubled"
	}
	if a.cfg.Max > 0 {
		to = min(to, a.cfg.Max)
	}
	return a.set(to, a.workers, fmt.Sprintf("%s: probe latency %s near its baseline %s", how, measureText(o.Latency), measureText(a.cfg.Baseline)))
}

// set changes the rate and, while the controller sizes the pool, the
// number of workers, reporting the change if there is one.
func (a *AutoRate) set(to float64, workers int, why string) (RateChange, bool) {
	if a.workers == 0 {
		workers = 0
	}
	if to == a.rate && workers == a.workers {
		return RateChange{}, false
	}
	c := RateChange{From: a.rate, To: to, FromWorkers: a.workers, ToWorkers: workers, Why: why}
	a.rate, a.workers = to, workers
	return c, true
}

// Run hands the start rate (and, sizing the pool, its one worker) to
// apply, then each interval observes, steps and hands every change to
// apply, until ctx ends; it returns nil then.
func (a *AutoRate) Run(ctx context.Context, interval time.Duration, observe func() Observation, apply func(RateChange)) error {
	if interval <= 0 {
		interval = DefaultInterval
	}
	apply(RateChange{To: a.rate, ToWorkers: a.workers, Why: "start of --rate auto"})
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
