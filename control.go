package backfill

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/checkpoint"
)

// Target names a job from outside its runner, for the operator commands
// (Status, SetRate, Pause, Verify): where the job's state is, and how to
// connect. It is the part of a Job that says so (Job.Target), and its zero
// fields take the Job's defaults.
type Target struct {
	// Job is the job's name; for Status, "" means every job.
	Job string
	// SourceURL is the job's source database, which only Verify reads.
	SourceURL string
	// DestURL is the destination database, which holds the state schema;
	// "" means SourceURL.
	DestURL     string
	StateSchema string
	// The timeouts of the command's connections.
	ConnectTimeout   time.Duration
	StatementTimeout time.Duration
	LockTimeout      time.Duration
}

// Target is where the job is for the operator commands, with the defaults
// Run gives it.
func (j Job) Target() Target {
	j = j.withDefaults()
	return Target{Job: j.Name, SourceURL: j.SourceURL, DestURL: j.DestURL, StateSchema: j.StateSchema,
		ConnectTimeout: j.ConnectTimeout, StatementTimeout: j.StatementTimeout, LockTimeout: j.LockTimeout}
}

// withDefaults gives the target's zero fields the defaults of the Job it
// is part of, as declared in Settings.
func (t Target) withDefaults() Target {
	return Job{Name: t.Job, SourceURL: t.SourceURL, DestURL: t.DestURL, StateSchema: t.StateSchema,
		ConnectTimeout: t.ConnectTimeout, StatementTimeout: t.StatementTimeout, LockTimeout: t.LockTimeout}.Target()
}

// openState connects to the target's state schema for a command that is
// not a runner; name is the connection's in application_name.
func openState(ctx context.Context, t Target, name string) (*pgx.Conn, *checkpoint.Store, error) {
	cfg, err := connConfig(t.DestURL, session{name: name, Target: t}, "destination")
	if err != nil {
		return nil, nil, err
	}
	store, err := checkpoint.New(t.StateSchema)
	if err != nil {
		return nil, nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, nil, scrub(fmt.Errorf("connect to destination database %s: %w", describeTarget(cfg), err), t.DestURL)
	}
	return conn, store, nil
}

// SetRate changes a job's rate cap in rows per second (Unlimited or 0 for
// none), which is fixed from then on: it ends a --rate auto. A running
// job applies it within a heartbeat (2 s); a stopped one keeps it for its
// next resume. It returns the job's state.
func SetRate(ctx context.Context, t Target, rowsPerSec float64) (string, error) {
	return Set(ctx, t, Tuning{Rate: &rowsPerSec})
}

// Tuning is what Set changes in a job: each field not nil.
type Tuning struct {
	// Rate is the rate cap in rows per second, Unlimited or 0 for none.
	Rate *float64
	// Workers is the pool's size, within Job.Workers' bounds (1 to
	// WorkersLimit).
	Workers *int
	// Throttle, on, holds the job's commits by hand until it is off again
	// (SetThrottle).
	Throttle *bool
}

// Set re-tunes a job without restarting it. A running job applies the
// change within a heartbeat (2 s): a new rate at once, a new worker count
// by starting workers, or retiring workers as they finish the chunk they
// hold, each closing its destination connection; a job that autoscales
// keeps the count within its bounds. A stopped job keeps the change for
// its next resume. A throttle by hand holds the commits within a second or
// two, and stays on across runs until off. A partitioned job's worker
// count is its runners', and
// is refused. Nothing is written unless every value is valid, and then
// all of it in one transaction. It returns the job's state.
func Set(ctx context.Context, t Target, c Tuning) (string, error) {
	if c.Rate == nil && c.Workers == nil && c.Throttle == nil {
		return "", fmt.Errorf("%w: nothing to set: give a rate, a worker count, a throttle by hand, or some of them", ErrInvalidJob)
	}
	if c.Rate != nil && (*c.Rate < 0 || math.IsNaN(*c.Rate)) {
		return "", fmt.Errorf("%w: rate %v: rows per second, 0 for no cap", ErrInvalidJob, *c.Rate)
	}
	if c.Workers != nil {
		if err := checkGiven("Workers", *c.Workers); err != nil {
			return "", err
		}
	}
	t = t.withDefaults()
	conn, store, err := openState(ctx, t, "set")
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	job, err := store.Job(ctx, conn, t.Job)
	if err != nil {
		return "", err
	}
	if spec, _ := storedSpec(job); c.Workers != nil && spec.Partitions > 1 {
		return "", refused(fmt.Errorf("job %q is partitioned: each of its runners keeps the Job.Workers it was started with "+
			"(and, with Job.Autoscale, sizes its own pool); restart a runner with another Job.Workers to change it", t.Job))
	}
	var state string
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		if c.Rate != nil {
			if state, err = store.SetRate(ctx, tx, t.Job, storedRate(*c.Rate)); err != nil {
				return err
			}
		}
		if c.Workers != nil {
			if state, err = store.SetWorkers(ctx, tx, t.Job, *c.Workers); err != nil {
				return err
			}
		}
		if c.Throttle != nil {
			state, err = store.SetThrottleRequest(ctx, tx, t.Job, *c.Throttle)
		}
		return err
	})
	return state, err
}

// SetThrottle switches an operator's throttle of a job on or off, from
// any terminal: while it is on, a running job commits nothing (it says it
// is throttled by hand) and goes on within a second or two of it going
// off; a stopped job keeps it for its next run. It returns the job's state.
func SetThrottle(ctx context.Context, t Target, on bool) (string, error) {
	return Set(ctx, t, Tuning{Throttle: &on})
}

// Pause asks a running job's runner, wherever it runs, to finish its
// in-flight chunks, record the job as paused and exit (Run returns
// ErrPaused); every runner of a partitioned job does. Resume continues it.
// A job that is not running is refused.
func Pause(ctx context.Context, t Target) error {
	t = t.withDefaults()
	conn, store, err := openState(ctx, t, "pause")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	j, err := store.Job(ctx, conn, t.Job)
	if err != nil {
		return err
	}
	held, err := runnerAlive(ctx, conn, store, j)
	if err != nil {
		return err
	}
	if !held || j.State != checkpoint.StateRunning {
		state := j.State
		if state == checkpoint.StateRunning {
			state = checkpoint.StateInterrupted // its runner is gone
		}
		return refused(fmt.Errorf("job %q is not running (it is %s): there is nothing to pause", t.Job, state))
	}
	ok, err := store.RequestPause(ctx, conn, t.Job)
	if err != nil {
		return err
	}
	if !ok {
		return refused(fmt.Errorf("job %q stopped before the pause could be requested", t.Job))
	}
	return nil
}

// runnerAlive reports whether a runner works on the job: one holding its
// runner lock, or for a partitioned job one holding a live lease.
func runnerAlive(ctx context.Context, conn *pgx.Conn, store *checkpoint.Store, j *checkpoint.Job) (bool, error) {
	if spec, err := storedSpec(j); err == nil && spec.Partitions > 1 {
		parts, err := store.Partitions(ctx, conn, j.Name)
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(parts, func(p checkpoint.Partition) bool { return p.LeaseLive }), nil
	}
	return store.Locked(ctx, conn, j.Name)
}
