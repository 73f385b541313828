package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestClassify(t *testing.T) {
	pg := func(code string) error { return fmt.Errorf("write chunk 7: %w", &pgconn.PgError{Code: code}) }
	cases := []struct {
		name string
		err  error
		want Kind
	}{
		{"admin shutdown", pg("57P01"), Transient},
		{"crash shutdown", pg("57P02"), Transient},
		{"cannot connect now", pg("57P03"), Transient},
		{"connection failure", pg("08006"), Transient},
		{"too many connections", pg("53300"), Transient},
		{"serialization", pg("40001"), Transient},
		{"deadlock", pg("40P01"), Transient},
		{"lock timeout", pg("55P03"), Transient},
		{"statement timeout", pg("57014"), Timeout},
		{"check violation", pg("23514"), Data},
		{"not null violation", pg("23502"), Data},
		{"foreign key violation", pg("23503"), Data},
		{"numeric out of range", pg("22003"), Data},
		{"invalid text representation", pg("22P02"), Data},
		{"syntax error", pg("42601"), Permanent},
		{"permission denied", pg("42501"), Permanent},
		{"undefined table", pg("42P01"), Permanent},
		{"unexpected EOF", fmt.Errorf("read page: %w", io.ErrUnexpectedEOF), Transient},
		{"connect error", &pgconn.ConnectError{}, Transient},
		{"context cancelled", fmt.Errorf("write: %w", context.Canceled), Permanent},
		{"plain error", errors.New("boom"), Permanent},
		{"nil", nil, Permanent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(c.err); got != c.want {
				t.Fatalf("Classify(%v) = %v, want %v", c.err, got, c.want)
			}
		})
	}
}

func TestBackoffIsFullJitterUnderTheCap(t *testing.T) {
	max := func() float64 { return 0.999999 }
	p := Policy{Base: 100 * time.Millisecond, Cap: 30 * time.Second, Rand: max}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000}
	for i, w := range want {
		got := p.Backoff(i + 1)
		if got > w*time.Millisecond || got < w*time.Millisecond*99/100 {
			t.Errorf("attempt %d: backoff %v, want just under %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := p.Backoff(200); got > 30*time.Second {
		t.Errorf("attempt 200: %v exceeds the cap", got)
	}
	zero := Policy{Rand: func() float64 { return 0 }}
	if got := zero.Backoff(5); got != 0 {
		t.Errorf("full jitter can wait 0, got %v", got)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := Policy{Base: time.Hour, Cap: time.Hour, Rand: func() float64 { return 0.5 }}
	if err := p.Wait(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context: %v", err)
	}
}
