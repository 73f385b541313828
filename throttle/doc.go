// Package throttle decides when a backfill must wait for production, and
// says why: replica lag, load, a probe's latency, the user's own query, an
// operator's hand; and, for --rate auto, how fast it may go.
//
// Each signal is a small type whose Check reads one thing from one server
// and compares it with its limit. A Throttler polls its signals each
// second, each on a goroutine of its own, and combines their readings into
// one state: workers and the rate limiter block in Wait while any signal
// trips; State and Status give the reasons (“replica lag 12.3 s > 10 s on
// replica 1”), OnChange is called only when the set of tripped signals
// changes, and ThrottledFor sums the time spent waiting. A signal that
// cannot read its server trips too after a few tries in a row (fail
// closed): a standby nobody can reach may be as far behind as it likes.
// Heartbeat writes the job's heartbeat on the destination for ReplicaLag
// to read back on each standby. AutoRate is an additive-increase,
// multiplicative-decrease controller of the rows-per-second cap.
//
// Signals run on connections of their own, opened by the caller's Connect
// (Dialer makes them read-only, with short timeouts and the caller's
// application_name): never a worker's connection, whose transactions a
// probe must neither join nor delay. Nothing here writes anything but the
// heartbeat row, holds global state, or sleeps outside a select on its
// context. The package does not know the runner: the runner builds the
// signals from the job's settings and reads the Throttler's state.
package throttle
