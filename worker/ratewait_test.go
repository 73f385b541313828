package worker

import (
	"context"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestWaitRowsFollowsARaisedLimit: a chunk that waits for its tokens at a
// low limit goes on at the new limit once it is raised (--rate auto's
// doubling, set --rate), instead of sleeping out a reservation made at the
// old one: 50,000 rows at 1,000 rows/s would wait 50 s.
func TestWaitRowsFollowsARaisedLimit(t *testing.T) {
	lim := rate.NewLimiter(1000, 50_000)
	lim.AllowN(time.Now(), 50_000) // the bucket's first fill is spent
	go func() {
		time.Sleep(300 * time.Millisecond)
		lim.SetLimit(rate.Inf)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	began := time.Now()
	if err := waitRows(ctx, lim, 50_000); err != nil {
		t.Fatalf("waiting for 50,000 rows' tokens after the limit was lifted: %v (after %s)", err, time.Since(began))
	}
	// at 1,000 rows/s the wait is 50 s; a part waits rateWaitPart at most
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("the wait took %s after the limit was lifted at 300 ms", took)
	}
}

// TestWaitRowsKeepsTheRate: split into parts, the wait still lets no more
// rows through than the limit allows.
func TestWaitRowsKeepsTheRate(t *testing.T) {
	lim := rate.NewLimiter(20_000, 1000)
	lim.AllowN(time.Now(), 1000)
	began := time.Now()
	if err := waitRows(context.Background(), lim, 10_000); err != nil {
		t.Fatal(err)
	}
	// 10,000 rows at 20,000 rows/s take half a second at least
	if took := time.Since(began); took < 450*time.Millisecond {
		t.Fatalf("10,000 rows at 20,000 rows/s got their tokens in %s", took)
	}
}
