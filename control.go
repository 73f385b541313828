package backfill

import (
	"context"
	"fmt"
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
// none). A running job applies it within a heartbeat (2 s); a stopped one
// keeps it for its next resume. It returns the job's state.
func SetRate(ctx context.Context, t Target, rowsPerSec float64) (string, error) {
	if rowsPerSec < 0 {
		return "", fmt.Errorf("%w: rate %v: rows per second, 0 for no cap", ErrInvalidJob, rowsPerSec)
	}
	t = t.withDefaults()
	conn, store, err := openState(ctx, t, "set")
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := store.Job(ctx, conn, t.Job); err != nil {
		return "", err
	}
	return store.SetRate(ctx, conn, t.Job, storedRate(rowsPerSec))
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
