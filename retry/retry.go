package retry

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults for Policy.
const (
	DefaultMaxRetries = 10
	DefaultBase       = 100 * time.Millisecond
	DefaultCap        = 30 * time.Second
)

// Kind is what an error means for the next attempt.
type Kind int

const (
	// Permanent errors fail the same way every time.
	Permanent Kind = iota
	// Transient errors may succeed on another try, on another connection.
	Transient
	// Timeout is a transient statement timeout: repeated, the work is too
	// big for the timeout and should be split.
	Timeout
	// Data errors are caused by the rows themselves (a constraint, a bad
	// value): the rows must be isolated, not retried.
	Data
)

func (k Kind) String() string {
	switch k {
	case Transient:
		return "transient"
	case Timeout:
		return "timeout"
	case Data:
		return "data"
	default:
		return "permanent"
	}
}

// Classify sorts err by SQLSTATE and connection state.
func Classify(err error) Kind {
	if err == nil {
		return Permanent
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return classifyCode(pgErr.Code)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return Permanent // our own context ended: stopping, not failing
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE),
		pgconn.SafeToRetry(err), pgconn.Timeout(err):
		return Transient
	}
	// pgx reports a connection that died under it as "conn closed" or
	// "unexpected EOF" wrapped in its own types; treat a closed connection
	// as transient: the pool replaces it.
	if msg := err.Error(); containsAny(msg, "conn closed", "conn busy", "connection reset", "broken pipe", "unexpected EOF", "failed to connect", "connection refused") {
		return Transient
	}
	return Permanent
}

func classifyCode(code string) Kind {
	switch code {
	case "57014": // query_canceled: statement_timeout
		return Timeout
	case "57P01", "57P02", "57P03", // admin/crash shutdown, cannot connect now
		"53300",          // too_many_connections
		"53400",          // configuration_limit_exceeded
		"40001", "40P01", // serialization_failure, deadlock_detected
		"55P03", // lock_not_available: lock_timeout
		"55006": // object_in_use
		return Transient
	}
	if len(code) != 5 {
		return Permanent
	}
	switch code[:2] {
	case "08": // connection exception
		return Transient
	case "22": // data exception
		return Data
	case "23": // integrity constraint violation: CHECK, NOT NULL, FK, exclusion
		return Data
	}
	return Permanent
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// Policy is how often and how patiently to retry.
type Policy struct {
	MaxRetries int
	Base       time.Duration
	Cap        time.Duration
	// Rand returns a number in [0, 1); nil uses math/rand/v2.
	Rand func() float64
}

// Backoff returns the wait before retry number attempt (1-based): a random
// duration in [0, min(Cap, Base·2^(attempt-1))), "full jitter", so runners
// that failed together do not retry together.
func (p Policy) Backoff(attempt int) time.Duration {
	base, capped := p.Base, p.Cap
	if base <= 0 {
		base = DefaultBase
	}
	if capped <= 0 {
		capped = DefaultCap
	}
	d := capped
	if attempt < 32 {
		if exp := base << (attempt - 1); exp > 0 && exp < capped {
			d = exp
		}
	}
	r := p.Rand
	if r == nil {
		r = rand.Float64
	}
	return time.Duration(r() * float64(d))
}

// Wait sleeps for Backoff(attempt) or until ctx ends.
func (p Policy) Wait(ctx context.Context, attempt int) error {
	t := time.NewTimer(p.Backoff(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
