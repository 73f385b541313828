package throttle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults for a Probe.
const (
	DefaultProbeQuery = "SELECT 1"
	// DefaultProbeWindow is how many of the latest probes the latency is
	// the median of: a few seconds' worth, so one slow probe (a
	// checkpoint, a pause of this process) does not throttle, and a
	// server that stays slow does within three.
	DefaultProbeWindow = 5
)

// ProbeConfig configures a Probe.
type ProbeConfig struct {
	// Where names the server in reasons: "source", "destination".
	Where string
	// Connect opens the probe's connection to the server.
	Connect Connect
	// Query is the probe; empty means DefaultProbeQuery. A real read of
	// the application's measures what its users feel.
	Query string
	// MaxLatency throttles while the probe's latency exceeds it; zero
	// only measures (for AutoRate).
	MaxLatency time.Duration
	// Window is how many probes the latency is the median of; zero means
	// DefaultProbeWindow.
	Window int
	// Now is this process's clock; nil means time.Now.
	Now func() time.Time
}

// Probe runs a cheap query on a connection of its own and times it, round
// trip included: the latency production's own queries see, which rises as
// the server or its disks saturate. A probe cut by its timeout counts as
// having taken that long, not as a failure.
type Probe struct {
	cfg  ProbeConfig
	sess session

	mu     sync.Mutex
	recent []time.Duration // the latest Window probes, oldest first
}

// NewProbe checks cfg and returns the probe, not yet connected.
func NewProbe(cfg ProbeConfig) (*Probe, error) {
	switch {
	case cfg.Connect == nil || cfg.Where == "":
		return nil, errors.New("throttle: a probe needs Where and Connect")
	case cfg.MaxLatency < 0 || cfg.Window < 0:
		return nil, fmt.Errorf("throttle: probe on %s: max latency %v and window %d must not be negative", cfg.Where, cfg.MaxLatency, cfg.Window)
	}
	if cfg.Query == "" {
		cfg.Query = DefaultProbeQuery
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultProbeWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Probe{cfg: cfg, sess: session{connect: cfg.Connect}}, nil
}

// Name implements Signal.
func (p *Probe) Name() string { return "probe latency on " + p.cfg.Where }

// Kind implements Signal.
func (p *Probe) Kind() Kind { return KindProbeLatency }

// Close implements Signal.
func (p *Probe) Close(ctx context.Context) error { return p.sess.close(ctx) }

// Check implements Signal: one probe, then the latency over the window.
func (p *Probe) Check(ctx context.Context) (Reading, error) {
	took, err := p.measure(ctx)
	if err != nil {
		return Reading{}, err
	}
	p.mu.Lock()
	p.recent = append(p.recent, took)
	if len(p.recent) > p.cfg.Window {
		p.recent = p.recent[len(p.recent)-p.cfg.Window:]
	}
	latency := median(p.recent)
	p.mu.Unlock()

	limit := p.cfg.MaxLatency
	switch {
	case limit > 0 && latency > limit:
		return Reading{Throttle: true, Text: fmt.Sprintf("probe latency %s > %s on %s", measureText(latency), limitText(limit), p.cfg.Where)}, nil
	case limit > 0:
		return Reading{Text: fmt.Sprintf("probe latency %s <= %s on %s", measureText(latency), limitText(limit), p.cfg.Where)}, nil
	}
	return Reading{Text: fmt.Sprintf("probe latency %s on %s", measureText(latency), p.cfg.Where)}, nil
}

// Latency is the median of the latest probes Check ran; zero before the
// first.
func (p *Probe) Latency() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return median(p.recent)
}

// Baseline runs the probe samples times in a row and returns the median:
// the latency of the server before the job loads it, which AutoRate raises
// its rate against. The samples open Check's window, so that the first
// slow probe after them is one of several, as every later one is: alone
// in the window it would be the median, and one slow probe at the start
// would cut a rate that had not yet loaded anything.
func (p *Probe) Baseline(ctx context.Context, samples int) (time.Duration, error) {
	took := make([]time.Duration, 0, max(samples, 1))
	for range cap(took) {
		d, err := p.measure(ctx)
		if err != nil {
			return 0, err
		}
		took = append(took, d)
	}
	p.mu.Lock()
	p.recent = slices.Clone(took[max(0, len(took)-p.cfg.Window):])
	p.mu.Unlock()
	return median(took), nil
}

// measure times one probe, not the connecting before it, which a
// server's users do not wait for each time.
func (p *Probe) measure(ctx context.Context) (time.Duration, error) {
	var took time.Duration
	err := p.sess.do(ctx, func(conn *pgx.Conn) error {
		began := p.cfg.Now()
		_, err := conn.Exec(ctx, p.cfg.Query)
		took = p.cfg.Now().Sub(began)
		return err
	})
	if err != nil && (took == 0 || !timedOut(err)) {
		return 0, fmt.Errorf("probe %s on %s: %w", p.cfg.Query, p.cfg.Where, err)
	}
	return took, nil
}

// timedOut says the probe ran out of time, its statement_timeout or its
// context's deadline, rather than failed.
func timedOut(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "57014" // query_canceled: statement_timeout
	}
	return errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}
