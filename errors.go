package backfill

import (
	"errors"
	"fmt"

	"github.com/backfill/backfill/checkpoint"
)

// The errors a caller tells apart with errors.Is. Messages name a Job's
// settings as Job fields ("Job.MaxRetries") or in plain words; the backfill
// command words each field as the flag that sets it.
var (
	// ErrInvalidJob wraps every error about the Job's own fields (a usage
	// error, as opposed to a refusal after looking at the databases).
	ErrInvalidJob = errors.New("invalid job")
	// ErrRefused wraps every reason a job is refused after looking at the
	// databases: a missing table or column, an unsafe key, a changed spec.
	ErrRefused = errors.New("refused")
	// ErrJobExists is a refused start of a job that already exists and is
	// not done: continue it with ModeResume, or give a new name.
	ErrJobExists = errors.New("job already exists")
	// ErrJobNotFound is a job that has no row in the state schema: a
	// resume of a job never started (start it with ModeStart), or an
	// operator command naming a job that is not there.
	ErrJobNotFound = checkpoint.ErrJobNotFound
	// ErrInterrupted is returned when the run was stopped (its context
	// cancelled, for example by SIGINT); the job is resumable.
	ErrInterrupted = errors.New("interrupted")
	// ErrJobBusy is returned when another runner holds the job.
	ErrJobBusy = errors.New("job is being run by another runner")
	// ErrJobFailed wraps the error that stopped a job; the job is resumable.
	ErrJobFailed = errors.New("job failed")
	// ErrPaused is returned when an operator paused the job (Pause); the
	// job is resumable.
	ErrPaused = errors.New("paused")
	// ErrLeaseLost is returned when a runner of a partitioned job lost
	// its lease on a partition (it was stopped, or cut off from the
	// destination, past Job.LeaseTimeout): none of its writes after that
	// counted, and another runner continues the partition.
	ErrLeaseLost = checkpoint.ErrLeaseLost

	// errControlLost stops the pipeline when the control session, and with
	// it the runner lock, is gone: the runner takes the job again, or stops.
	errControlLost = errors.New("control connection lost")
)

func refused(errs ...error) error {
	return fmt.Errorf("%w: %w", ErrRefused, errors.Join(errs...))
}

// kind gives err the kind of sentinel for errors.Is without adding the
// sentinel's words to its message.
func kind(sentinel, err error) error { return &kindError{sentinel: sentinel, err: err} }

type kindError struct{ sentinel, err error }

func (e *kindError) Error() string        { return e.err.Error() }
func (e *kindError) Is(target error) bool { return target == e.sentinel }
func (e *kindError) Unwrap() error        { return e.err }
