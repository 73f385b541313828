package throttle

import (
	"context"
	"sync/atomic"
)

// Manual is the throttle an operator sets by hand (backfill set --throttle
// on|off); the runner reads it from the job row and calls Set.
type Manual struct {
	on atomic.Bool
}

// Set switches the throttle on or off; the Throttler sees it at its next
// poll.
func (m *Manual) Set(on bool) { m.on.Store(on) }

// Name implements Signal.
func (m *Manual) Name() string { return "throttle by hand" }

// Kind implements Signal.
func (m *Manual) Kind() Kind { return KindManual }

// Close implements Signal.
func (m *Manual) Close(context.Context) error { return nil }

// Check implements Signal.
func (m *Manual) Check(context.Context) (Reading, error) {
	if m.on.Load() {
		return Reading{Throttle: true, Text: "throttled by hand (backfill set --throttle on)"}, nil
	}
	return Reading{Text: "not throttled by hand"}, nil
}
