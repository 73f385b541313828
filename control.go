package backfill

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/checkpoint"
)

// ControlRequest names a job to act on from outside its runner.
type ControlRequest struct {
	DestURL     string
	StateSchema string // default "backfill"
	Job         string
}

// openState connects to a destination's state schema for a command that
// is not a runner (status, set, pause). purpose names the connection in
// application_name.
func openState(ctx context.Context, destURL, schema, purpose string) (*pgx.Conn, *checkpoint.Store, error) {
	cfg, err := connConfig(destURL, Job{Name: purpose}.withDefaults(), "destination")
	if err != nil {
		return nil, nil, err
	}
	store, err := checkpoint.New(schema)
	if err != nil {
		return nil, nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, nil, scrub(fmt.Errorf("connect to destination database %s: %w", describeTarget(cfg), err), destURL)
	}
	return conn, store, nil
}

// SetRate changes a job's rate cap in rows per second (Unlimited or 0 for
// none). A running job applies it within a heartbeat (2 s); a stopped one
// keeps it for its next resume. It returns the job's state.
func SetRate(ctx context.Context, req ControlRequest, rowsPerSec float64) (string, error) {
	if rowsPerSec < 0 {
		return "", fmt.Errorf("%w: rate %v: rows per second, 0 for no cap", ErrInvalidJob, rowsPerSec)
	}
	conn, store, err := openState(ctx, req.DestURL, req.StateSchema, "set")
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := store.Job(ctx, conn, req.Job); err != nil {
		return "", err
	}
	return store.SetRate(ctx, conn, req.Job, storedRate(rowsPerSec))
}

// Pause asks a running job's runner, wherever it runs, to finish its
// in-flight chunks, record the job as paused and exit (Run returns
// ErrPaused). Resume continues it. A job that is not running is refused.
func Pause(ctx context.Context, req ControlRequest) error {
	conn, store, err := openState(ctx, req.DestURL, req.StateSchema, "pause")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	j, err := store.Job(ctx, conn, req.Job)
	if err != nil {
		return err
	}
	held, err := store.Locked(ctx, conn, req.Job)
	if err != nil {
		return err
	}
	if !held || j.State != checkpoint.StateRunning {
		state := j.State
		if state == checkpoint.StateRunning {
			state = checkpoint.StateInterrupted // its runner is gone
		}
		return refused(fmt.Errorf("job %q is not running (it is %s): there is nothing to pause", req.Job, state))
	}
	ok, err := store.RequestPause(ctx, conn, req.Job)
	if err != nil {
		return err
	}
	if !ok {
		return refused(fmt.Errorf("job %q stopped before the pause could be requested", req.Job))
	}
	return nil
}
