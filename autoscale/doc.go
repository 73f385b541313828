// Package autoscale sizes the worker pool of a running job by where its
// bottleneck is: a worker is added while the paginator's channel stays
// nearly full (the workers cannot keep up with the reader) and the rate cap
// is not what holds the job back; one is retired once the channel has
// stayed nearly empty for a while (the reader cannot keep the workers busy).
//
// A Controller is the decision alone, a pure function of what the pool did
// over one interval (Observation), so that every rule is tested without a
// clock or a database. Run samples a pool's gauges, asks the Controller at
// each interval and hands each change to its caller, which resizes the pool,
// logs the reason and stores the size. The package never resizes a pool
// itself, never reads a database, and waits only on timers in a select
// with its context.
package autoscale
