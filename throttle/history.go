package throttle

import (
	"sort"
	"time"
)

// historyKeep is how far back a history reaches: further than any lag worth
// measuring exactly. Lag beyond it is measured from the other end.
const historyKeep = time.Hour

// history records when (on this process's clock) the primary reached each
// of a rising series of marks: the heartbeats it committed, or its WAL
// positions. Given the last mark a standby has replayed, the first later
// one tells since when the standby has been missing something; lag is the
// time since then. Not safe for concurrent use.
type history struct {
	entries []mark
	// truncated says entries older than the first were dropped, so a
	// standby's mark before the first may be anywhere in the past.
	truncated bool
}

type mark struct {
	value int64
	at    time.Time
}

// add records that the primary reached value at at. Values must not go
// backwards; one that does is ignored.
func (h *history) add(value int64, at time.Time) {
	if n := len(h.entries); n > 0 && value <= h.entries[n-1].value {
		return
	}
	h.entries = append(h.entries, mark{value: value, at: at})
	cut := sort.Search(len(h.entries), func(i int) bool { return at.Sub(h.entries[i].at) <= historyKeep })
	if cut > 0 {
		h.entries = append(h.entries[:0], h.entries[cut:]...)
		h.truncated = true
	}
}

// lagBehind is how long a standby whose last mark is seen has lacked what
// the primary had, at now: the time since the primary first reached a
// later mark, 0 when the standby has them all. ok is false when seen
// predates a truncated history, which cannot say.
func (h *history) lagBehind(seen int64, now time.Time) (lag time.Duration, ok bool) {
	i := sort.Search(len(h.entries), func(i int) bool { return h.entries[i].value > seen })
	switch {
	case i == len(h.entries):
		return 0, true
	case i == 0 && h.truncated:
		return 0, false
	}
	return max(now.Sub(h.entries[i].at), 0), true
}
