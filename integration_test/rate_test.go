package integration_test

import (
	"testing"
)

// TestRateCap: 25,000 rows at --rate 5000 with a burst of one 1000-row chunk
// cannot take less than 24 chunks / 5 chunks per second = 4.8 s after the job
// starts. The lower bound is the correctness property (the cap is never
// exceeded); the upper bound only catches a limiter that throttles far too
// hard, and is loose so a busy machine cannot make it flake. The measured
// figure is logged.
func TestRateCap(t *testing.T) {
	db := itemsDatabase(t, 25_000)
	mustSucceed(t, "start", "--source", db, "--job", "capped", "--from", "src", "--to", "dst", "--rate", "5000")
	s := status(t, db, "capped")
	if s.FinishedAt == nil {
		t.Fatalf("job not finished: %+v", s)
	}
	took := s.FinishedAt.Sub(s.StartedAt)
	t.Logf("25,000 rows at --rate 5000 took %v after start-up (%.0f rows/s)", took, 25000/took.Seconds())
	if took.Seconds() < 4.8*0.97 {
		t.Fatalf("took %v: the 5000 rows/s cap was exceeded", took)
	}
	if took.Seconds() > 4.8*2 {
		t.Fatalf("took %v: more than twice the time the cap allows", took)
	}
	assertSameRows(t, db, "src", db, "dst")
}
