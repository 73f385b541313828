package autoscale

import (
	"context"
	"fmt"
	"time"
)

// The controller's rules, as issue 11 states them.
const (
	// DefaultInterval is how often the controller decides.
	DefaultInterval = 5 * time.Second
	// DefaultShrinkAfter is how long the channel must stay below
	// ShrinkBelow before a worker is retired.
	DefaultShrinkAfter = 60 * time.Second
	// GrowAbove is the share of the channel's capacity that, held on
	// average over an interval, says the workers are the bottleneck.
	GrowAbove = 0.8
	// ShrinkBelow is the share under which the channel is nearly empty:
	// the reader is the bottleneck.
	ShrinkBelow = 0.1
	// HeldShare is the share of the workers' time spent waiting for the
	// rate limiter's tokens (or a throttle) above which the cap is what
	// holds the job back: another worker would only wait too.
	HeldShare = 0.1
	// samplesPerInterval is how many times an interval reads the gauges.
	samplesPerInterval = 20
)

// Config bounds the pool and times the controller.
type Config struct {
	// Min and Max bound the pool's size (1 <= Min <= Max).
	Min, Max int
	// Interval is how often it decides; 0 means DefaultInterval.
	Interval time.Duration
	// ShrinkAfter is how long the channel must stay nearly empty before a
	// worker is retired; 0 means DefaultShrinkAfter.
	ShrinkAfter time.Duration
}

// Observation is what the pool did over one interval.
type Observation struct {
	// Size is the pool's size (the workers it keeps) at the interval's end.
	Size int
	// Fill is the mean share of the channel's capacity that held chunks.
	Fill float64
	// Busy is the mean number of workers inside a chunk.
	Busy float64
	// Waited is the time the workers spent waiting for the rate limiter
	// or a throttle during the interval, added up over the workers.
	Waited time.Duration
}

// Decision is the pool's size from now on, and why it changed.
type Decision struct {
	Size int
	// Reason says why Size differs from the observation's; "" when it
	// does not.
	Reason string
}

// Controller decides the pool's size interval by interval. It is not safe
// for concurrent use: one Run asks it.
type Controller struct {
	cfg Config
	// low is how long the channel has stayed nearly empty at the size
	// the controller last saw.
	low  time.Duration
	last int
}

// New checks cfg and returns a Controller.
func New(cfg Config) (*Controller, error) {
	if cfg.Min < 1 || cfg.Max < cfg.Min {
		return nil, fmt.Errorf("autoscale bounds must be 1 <= min <= max, got %d and %d", cfg.Min, cfg.Max)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ShrinkAfter <= 0 {
		cfg.ShrinkAfter = DefaultShrinkAfter
	}
	return &Controller{cfg: cfg}, nil
}

// Config is the controller's configuration, defaults filled in.
func (c *Controller) Config() Config { return c.cfg }

// Decide takes one interval's observation and returns the size the pool
// should have: one more worker, one fewer, or as it is. A size changed by
// someone else since the last decision (an operator) starts the count of
// nearly empty time again.
func (c *Controller) Decide(o Observation) Decision {
	if o.Size != c.last {
		c.low, c.last = 0, o.Size
	}
	d := Decision{Size: o.Size}
	switch {
	case o.Size < c.cfg.Min:
		d = Decision{Size: c.cfg.Min, Reason: fmt.Sprintf("below the minimum of %d workers", c.cfg.Min)}
	case o.Size > c.cfg.Max:
		d = Decision{Size: c.cfg.Max, Reason: fmt.Sprintf("above the maximum of %d workers", c.cfg.Max)}
	case o.Fill > GrowAbove:
		c.low = 0
		allBusy := o.Busy >= float64(o.Size)-0.5
		if o.Size < c.cfg.Max && allBusy && !c.held(o) {
			d = Decision{Size: o.Size + 1, Reason: fmt.Sprintf(
				"the input queue stayed above %.0f%% full (%.0f%%) with every worker busy: the workers are the bottleneck", 100*GrowAbove, 100*o.Fill)}
		}
	case o.Fill < ShrinkBelow:
		c.low += c.cfg.Interval
		someIdle := o.Busy <= float64(o.Size)-1
		if c.low >= c.cfg.ShrinkAfter && o.Size > c.cfg.Min && someIdle {
			d = Decision{Size: o.Size - 1, Reason: fmt.Sprintf(
				"the input queue stayed below %.0f%% full for %s, %.1f of %d workers busy: the reader is the bottleneck",
				100*ShrinkBelow, c.low, o.Busy, o.Size)}
		}
	default:
		c.low = 0
	}
	if d.Size != o.Size {
		c.low, c.last = 0, d.Size
	}
	return d
}

// held says whether the rate cap or a throttle kept the workers waiting
// for a good part of the interval.
func (c *Controller) held(o Observation) bool {
	return o.Waited.Seconds() >= HeldShare*float64(o.Size)*c.cfg.Interval.Seconds()
}

// Gauges are what Run reads of a worker pool.
type Gauges interface {
	// Target is the size the pool keeps, which Run changes through its
	// caller.
	Target() int
	Busy() int
	// Pending and Capacity are the chunks in the pool's input channel and
	// its size.
	Pending() int
	Capacity() int
	// Waited is the time workers have waited for the rate limiter or a
	// throttle, added up, since the pool began.
	Waited() time.Duration
}

// Run samples g samplesPerInterval times an interval and asks c at the
// end of each; resize is called with each change and reports whether it
// was made (false when the pool's size moved meanwhile, by an operator).
// It returns when ctx ends.
func Run(ctx context.Context, c *Controller, g Gauges, resize func(from int, d Decision, o Observation) bool) {
	tick := time.NewTicker(c.cfg.Interval / samplesPerInterval)
	defer tick.Stop()
	var fill, busy float64
	samples := 0
	waited := g.Waited()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if capacity := g.Capacity(); capacity > 0 {
			fill += float64(g.Pending()) / float64(capacity)
		}
		busy += float64(g.Busy())
		if samples++; samples < samplesPerInterval {
			continue
		}
		now := g.Waited()
		o := Observation{Size: g.Target(), Fill: fill / float64(samples), Busy: busy / float64(samples), Waited: now - waited}
		fill, busy, samples, waited = 0, 0, 0, now
		if d := c.Decide(o); d.Size != o.Size && !resize(o.Size, d, o) {
			c.last = -1 // not made: the next observation starts afresh
		}
	}
}
