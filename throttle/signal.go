package throttle

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Signal is one reason to wait. Check reads it once; it is never called
// concurrently with itself, and Close ends whatever connection it holds.
type Signal interface {
	// Name says which signal this is and where it reads, as reasons and
	// logs print it: "replica lag on replica 1", "load on source".
	Name() string
	// Kind is the signal's family, the reason label of the metrics.
	Kind() Kind
	Check(ctx context.Context) (Reading, error)
	Close(ctx context.Context) error
}

// Kind names a family of signals, few enough for a metric label.
type Kind string

// The kinds of signals this package has.
const (
	KindReplicaLag    Kind = "replica_lag"
	KindLoad          Kind = "load"
	KindProbeLatency  Kind = "probe_latency"
	KindThrottleQuery Kind = "throttle_query"
	KindManual        Kind = "manual"
)

// Reading is what one Check found.
type Reading struct {
	// Throttle says the signal is past its limit: wait.
	Throttle bool
	// Critical says the signal is past its critical limit: the job should
	// pause rather than wait. It implies Throttle.
	Critical bool
	// Text is what was measured, against what limit, where: the reason
	// when Throttle ("replica lag 12.3 s > 10 s on replica 1"), and what
	// dry-run prints otherwise.
	Text string
	// Note is something the signal cannot see, worth saying once, such as
	// a role that may not read another role's sessions. Empty when none.
	Note string
}

// Connect opens a connection for one signal, which keeps it to itself.
type Connect func(ctx context.Context) (*pgx.Conn, error)

// Access is what a Dialer's connections may do.
type Access int

const (
	// ReadOnly connections default to read-only transactions: every
	// signal's.
	ReadOnly Access = iota
	// ReadWrite connections may write: the heartbeat's.
	ReadWrite
)

// DefaultTimeout bounds connecting and each statement of a signal.
const DefaultTimeout = 5 * time.Second

// Dialer returns a Connect that opens connections from a copy of cfg (its
// application_name and session settings as the caller set them) with
// statement_timeout and lock_timeout set to timeout, connect_timeout to
// timeout unless cfg has one, and read-only unless access is ReadWrite.
// A zero timeout means DefaultTimeout.
func Dialer(cfg *pgx.ConnConfig, timeout time.Duration, access Access) Connect {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	cfg = cfg.Copy()
	ms := strconv.FormatInt(timeout.Milliseconds(), 10)
	cfg.RuntimeParams["statement_timeout"] = ms
	cfg.RuntimeParams["lock_timeout"] = ms
	if access == ReadOnly {
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = timeout
	}
	return func(ctx context.Context) (*pgx.Conn, error) {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("connect to %s:%d: %w", cfg.Host, cfg.Port, err)
		}
		return conn, nil
	}
}

// session is a signal's connection, opened when first needed and opened
// again after an error that may have broken it.
type session struct {
	connect Connect
	conn    *pgx.Conn
}

func (s *session) do(ctx context.Context, fn func(*pgx.Conn) error) error {
	if s.conn == nil || s.conn.IsClosed() {
		conn, err := s.connect(ctx)
		if err != nil {
			return err
		}
		s.conn = conn
	}
	err := fn(s.conn)
	var pgErr *pgconn.PgError
	// The server reporting an error leaves the session usable; anything
	// else (a cut connection, a cancelled context) may not.
	if err != nil && !errors.As(err, &pgErr) {
		_ = s.close(ctx)
	}
	return err
}

func (s *session) close(ctx context.Context) error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close(context.WithoutCancel(ctx))
	s.conn = nil
	return err
}

// limitText prints a limit the way reasons do: "10 s", "1.5 s", "100 ms".
func limitText(d time.Duration) string {
	text, unit := durationText(d)
	if strings.Contains(text, ".") {
		text = strings.TrimRight(strings.TrimRight(text, "0"), ".")
	}
	return text + unit
}

// measureText prints a measure the way reasons do: "12.3 s", "1.00 s",
// "201 ms", "0.3 ms", its digits kept so that a lag just past a limit of
// 1 s does not print as "1 s > 1 s".
func measureText(d time.Duration) string {
	text, unit := durationText(d)
	return text + unit
}

func durationText(d time.Duration) (text, unit string) {
	abs := max(d, -d)
	switch {
	case abs >= 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64), " s"
	case abs >= time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64), " s"
	case abs >= 10*time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 0, 64), " ms"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64), " ms"
}
