package backfill

import (
	"errors"
	"fmt"
)

// The errors a caller tells apart with errors.Is.
var (
	// ErrInvalidJob wraps every error about the Job's own fields (a usage
	// error, as opposed to a refusal after looking at the databases).
	ErrInvalidJob = errors.New("invalid job")
	// ErrRefused wraps every reason a job is refused after looking at the
	// databases: a missing table or column, an unsafe key, a changed spec.
	ErrRefused = errors.New("refused")
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

	// errControlLost stops the pipeline when the control session, and with
	// it the runner lock, is gone: the runner takes the job again, or stops.
	errControlLost = errors.New("control connection lost")
)

func refused(errs ...error) error {
	return fmt.Errorf("%w: %w", ErrRefused, errors.Join(errs...))
}
