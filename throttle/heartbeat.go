package throttle

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	bfsql "github.com/backfill/backfill/sql"
)

// DefaultHeartbeatInterval is how often the heartbeat is written: the
// resolution of replica lag read without this process's history.
const DefaultHeartbeatInterval = time.Second

// HeartbeatConfig configures a Heartbeat.
type HeartbeatConfig struct {
	// Connect opens the heartbeat's own connection to the destination; it
	// must be allowed to write (Dialer with ReadWrite).
	Connect Connect
	// Schema is the state schema, unquoted; its migrations must have run
	// and Job's row must exist.
	Schema string
	Job    string
	// Interval between beats in Run; zero means DefaultHeartbeatInterval.
	Interval time.Duration
	// OnError hears every beat that failed in Run, which keeps beating;
	// nil ignores them.
	OnError func(error)
	// Now is this process's clock; nil means time.Now.
	Now func() time.Time
}

// Heartbeat writes the job's heartbeat on the destination, for ReplicaLag
// to read back on each standby, and remembers when (on this process's
// clock) it wrote each one: a standby's lag is then the time since the
// first beat it has not replayed, exact to a statement's round trip and
// free of any skew between the servers' clocks.
type Heartbeat struct {
	cfg  HeartbeatConfig
	stmt string

	beat sync.Mutex // one beat at a time on the session
	sess session

	mu   sync.Mutex
	hist history
}

// NewHeartbeat checks cfg and returns a Heartbeat that has not beaten yet.
func NewHeartbeat(cfg HeartbeatConfig) (*Heartbeat, error) {
	if cfg.Connect == nil || cfg.Schema == "" || cfg.Job == "" {
		return nil, errors.New("throttle: a heartbeat needs Connect, Schema and Job")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultHeartbeatInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	stmts, err := bfsql.For(pgx.Identifier{cfg.Schema}.Sanitize())
	if err != nil {
		return nil, err
	}
	return &Heartbeat{cfg: cfg, stmt: stmts.Get(bfsql.HeartbeatBeat), sess: session{connect: cfg.Connect}}, nil
}

// Beat writes one heartbeat.
func (h *Heartbeat) Beat(ctx context.Context) error {
	h.beat.Lock()
	defer h.beat.Unlock()
	// Taken before the write: should the beat take long to commit, lag
	// reads longer, not shorter.
	sent := h.cfg.Now()
	var at time.Time
	err := h.sess.do(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, h.stmt, h.cfg.Job).Scan(&at)
	})
	if err != nil {
		return fmt.Errorf("write the heartbeat of job %s: %w", h.cfg.Job, err)
	}
	h.mu.Lock()
	h.hist.add(at.UnixMicro(), sent)
	h.mu.Unlock()
	return nil
}

// Run beats at once and then every Interval until ctx ends, when it closes
// its connection and returns nil. A failed beat goes to OnError; the next
// one is tried all the same.
func (h *Heartbeat) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	defer h.Close(ctx)
	for {
		if err := h.Beat(ctx); err != nil && ctx.Err() == nil && h.cfg.OnError != nil {
			h.cfg.OnError(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Close ends the heartbeat's connection.
func (h *Heartbeat) Close(ctx context.Context) error {
	h.beat.Lock()
	defer h.beat.Unlock()
	return h.sess.close(ctx)
}

// lagBehind says how long a standby that has replayed the beat written at
// seen (nil: none) has lacked a newer one; ok is false when this heartbeat
// cannot say.
func (h *Heartbeat) lagBehind(seen *time.Time) (lag time.Duration, ok bool) {
	mark := int64(math.MinInt64)
	if seen != nil {
		mark = seen.UnixMicro()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hist.lagBehind(mark, h.cfg.Now())
}
