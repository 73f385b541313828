package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/chunk"
	"github.com/backfill/backfill/paginator"
	"github.com/backfill/backfill/progress"
	"github.com/backfill/backfill/retry"
	bfsql "github.com/backfill/backfill/sql"
	"github.com/backfill/backfill/worker"
)

// Report is what Run did.
type Report struct {
	Job   string
	State string
	// AlreadyDone is true when the job had finished before this run, which
	// then did nothing.
	AlreadyDone bool
	// Totals over every run of the job, summed from its checkpoint.
	Totals checkpoint.Counters
	// RunRows is the rows read by this run; Elapsed its duration.
	RunRows int64
	Elapsed time.Duration
}

// finishTimeout bounds the writes that record a run's end, which must
// happen even when the run's context is already cancelled.
const finishTimeout = 15 * time.Second

type runner struct {
	job   Job
	log   zerolog.Logger
	store *checkpoint.Store
	// control holds the runner lock; it is used by one goroutine at a time
	// (set-up, then the heartbeat, then the final state) through withControl.
	control    *pgx.Conn
	controlCfg *pgx.ConnConfig
	// gen is the runner's generation of the job, taken with the lock: the
	// fencing token that every write of the runner's carries.
	gen int64
	// locking says the control session holds the job's runner lock: a job
	// of one runner's. A partitioned job's runners take leases instead.
	locking bool
	// owner names this runner (host:pid:nonce) in the leases of a
	// partitioned job and in its metrics' runner label.
	owner string
	src   *pgxpool.Pool
	dst   *pgxpool.Pool
	retry retry.Policy
	// sizer sizes the chunks of a job sized by time (Job.ChunkSize 0),
	// across the passes of a run; nil for a fixed chunk size.
	sizer *paginator.Sizer
	// window keeps the paginator from reading ahead of the workers while
	// --rate auto sets the rate (chunk.Window); nil for a job that started
	// with a rate of its own.
	window *chunk.Window
	// workers is the worker count the job's row held when the runner last
	// read or wrote it (see resize.go).
	workers int
	// pool is the current pass's worker pool; nil before the first.
	pool *worker.Pool
	// throttle is what the job waits for (throttling.go).
	throttle *throttling
	obs      *observer
}

// Run starts or resumes a job (j.Mode) and returns when it is done, failed
// or interrupted. Nothing is written before the job is validated.
func Run(ctx context.Context, j Job) (Report, error) {
	j = j.withDefaults()
	if err := j.validate(); err != nil {
		return Report{Job: j.Name}, err
	}
	r := &runner{job: j, log: j.Logger.With().Str("job", j.Name).Logger(), retry: retryPolicy(j.MaxRetries), owner: runnerID()}
	defer r.close()
	var err error
	if r.obs, err = newObserver(ctx, j, r.owner, r.log); err != nil {
		return Report{Job: j.Name}, err
	}
	defer r.obs.close() // once the run has recorded its end: the final figures are in
	rep, err := r.run(ctx)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrInterrupted) {
		// stopped while still setting up: nothing ran, so nothing is lost
		err = fmt.Errorf("%w: job %q before it started: %w", ErrInterrupted, j.Name, err)
	}
	return rep, scrub(err, j.SourceURL, j.DestURL)
}

func (r *runner) close() {
	if r.throttle != nil {
		r.throttle.close(context.Background())
	}
	if r.src != nil {
		r.src.Close()
	}
	if r.dst != nil {
		r.dst.Close()
	}
	if r.control != nil {
		ctx, cancel := context.WithTimeout(context.Background(), finishTimeout)
		defer cancel()
		if r.locking && !r.control.IsClosed() {
			// released here rather than when the server notices that the
			// session ended, which it does a moment after Close returns: a
			// resume run as soon as this run returns must find the job free
			_ = r.store.Unlock(ctx, r.control, r.job.Name)
		}
		_ = r.control.Close(ctx) // ends the session, which releases the runner lock if the unlock could not
	}
}

func (r *runner) run(ctx context.Context) (Report, error) {
	j := &r.job
	rep := Report{Job: j.Name}
	var err error
	if r.store, err = checkpoint.New(j.StateSchema); err != nil {
		return rep, err
	}
	if r.controlCfg, err = connConfig(j.DestURL, j.session(), "destination"); err != nil {
		return rep, err
	}
	if err := r.connectControl(ctx); err != nil {
		return rep, err
	}

	existing, err := r.store.Job(ctx, r.control, j.Name)
	if errors.Is(err, checkpoint.ErrJobNotFound) {
		existing, err = nil, nil
	}
	if err != nil {
		return rep, err
	}
	var stored Spec
	switch {
	case j.Mode != ModeStart && existing == nil:
		// a runner that holds the lock may be starting the job right now
		if err := r.lock(ctx); err != nil {
			return rep, err
		}
		return rep, refused(kind(ErrJobNotFound, fmt.Errorf("job %q does not exist in state schema %q of the destination", j.Name, j.StateSchema)))
	case existing != nil:
		if stored, err = storedSpec(existing); err != nil {
			return rep, err
		}
	}
	if j.Mode != ModeStart {
		j.resumeFrom(stored, *existing)
	}
	partitioned := j.Partitions > 1
	switch {
	case j.Mode == ModeJoin && !partitioned:
		return rep, refused(fmt.Errorf("job %q has one runner, which takes the job's lock: resume it instead of joining it", j.Name))
	case partitioned && j.RetryFailed:
		return rep, refused(fmt.Errorf("job %q is partitioned: retrying its failed rows is not supported yet", j.Name))
	case partitioned && j.AutoRate:
		return rep, refused(fmt.Errorf("job %q is partitioned: its runners share one fixed rate cap, and --rate auto is not supported yet", j.Name))
	case !partitioned:
		if err := r.lock(ctx); err != nil {
			return rep, err
		}
	}

	if r.src, err = openPool(ctx, j.SourceURL, j.session(), "source", 2, true); err != nil {
		return rep, err
	}
	// as many connections as a job may have workers: the pool's size
	// changes while it runs (resize.go)
	if r.dst, err = openPool(ctx, j.DestURL, j.session(), "destination", WorkersLimit, false); err != nil {
		return rep, err
	}
	startedAt := j.Now().UTC().Truncate(time.Microsecond) // as PostgreSQL stores it
	if existing != nil {
		startedAt = existing.StartedAt
	}
	p, err := buildPlan(ctx, r.src, r.dst, *j, startedAt)
	if err != nil {
		return rep, err
	}
	if existing != nil {
		if diffs := stored.differences(p.spec); len(diffs) > 0 {
			return rep, refused(fmt.Errorf("job %q was started with a different spec (%s); use a new job name, or the original spec", j.Name, strings.Join(diffs, "; ")))
		}
		if existing.State == checkpoint.StateDone && !j.RetryFailed {
			rep.State, rep.AlreadyDone = checkpoint.StateDone, true
			rep.Totals, err = r.store.Counters(ctx, r.control, j.Name)
			return rep, err
		}
		if j.Mode == ModeStart {
			return rep, refused(kind(ErrJobExists, fmt.Errorf("job %q already exists and is %s", j.Name, existing.State)))
		}
	}
	if j.Transform != nil || len(j.Columns) > 0 || j.SkipIf != "" {
		if err := p.trial(ctx, r.src, *j, r.log); err != nil {
			return rep, err
		}
	}
	r.workers = r.startingWorkers()
	if r.throttle, err = newThrottling(ctx, *j, r.log, r.store, true); err != nil {
		return rep, err
	}
	r.observeThrottle()
	if partitioned {
		return r.executePartitioned(ctx, p, existing, startedAt)
	}
	return r.execute(ctx, p, existing, startedAt)
}

// connectControl opens the control connection and, for a job of one
// runner once it is known to be one, takes the job's runner lock on it;
// ErrJobBusy when another runner holds it.
func (r *runner) connectControl(ctx context.Context) error {
	if r.control != nil {
		_ = r.control.Close(ctx)
		r.control = nil
	}
	conn, err := pgx.ConnectConfig(ctx, r.controlCfg)
	if err != nil {
		return fmt.Errorf("connect to destination database %s: %w", describeTarget(r.controlCfg), err)
	}
	r.control = conn
	if !r.locking {
		return nil
	}
	return r.lock(ctx)
}

// lock takes the job's runner lock on the control session; ErrJobBusy when
// another runner holds it.
func (r *runner) lock(ctx context.Context) error {
	r.locking = true
	locked, err := r.store.TryLock(ctx, r.control, r.job.Name)
	if err != nil {
		return err
	}
	if !locked {
		return r.busy(ctx)
	}
	return nil
}

// withControl runs fn on the control connection, retrying what a retry may
// cure. A lock timeout, deadlock, serialization failure or statement
// timeout leaves the session, and the runner lock on it, intact: fn is
// retried on the same session. Only a lost session (a server restart, a
// terminated backend, a network cut) has lost the lock with it: then it
// reconnects with backoff and takes the lock again before retrying fn, and
// returns ErrJobBusy if another runner holds it. What fn writes carries the
// runner's generation, so it fails (ErrFenced) if another runner took the
// job while the lock was gone.
// migrate brings the state schema up to date on the control connection,
// retried like any control statement: a deadlock with an older runner
// still writing beside it (40P01) or a lock timeout must not fail a start.
func (r *runner) migrate(ctx context.Context) error {
	return r.withControl(ctx, func(c *pgx.Conn) error { return r.store.Migrate(ctx, c) })
}

func (r *runner) withControl(ctx context.Context, fn func(*pgx.Conn) error) error {
	err := fn(r.control)
	for attempt := 1; err != nil; attempt++ {
		lost := r.controlLost()
		if kind := retry.Classify(err); !lost && kind != retry.Transient && kind != retry.Timeout ||
			attempt > r.retry.MaxRetries || ctx.Err() != nil {
			return err
		}
		if lost {
			r.log.Warn().Err(err).Int("attempt", attempt).Msg("control connection lost; reconnecting")
		} else {
			r.log.Warn().Err(err).Int("attempt", attempt).Msg("retrying on the control connection, which keeps the runner lock")
		}
		if werr := r.retry.Wait(ctx, attempt); werr != nil {
			return err
		}
		if lost {
			if cerr := r.connectControl(ctx); cerr != nil {
				if errors.Is(cerr, ErrJobBusy) {
					return cerr
				}
				err = cerr
				continue
			}
		}
		err = fn(r.control)
	}
	return nil
}

// controlLost reports whether the control session is gone, and the runner
// lock with it. pgx closes a connection on any error that ends the session
// (a FATAL from the server, a broken socket) and on no other.
func (r *runner) controlLost() bool { return r.control == nil || r.control.IsClosed() }

// reclaim takes the job again after the control session was lost: a new
// session, the runner lock, and a new generation if no other runner took
// the job meanwhile. The new generation fences whatever of this runner's
// own may still be in flight.
func (r *runner) reclaim(ctx context.Context) error {
	err := r.withControl(ctx, func(c *pgx.Conn) error {
		gen, err := r.store.ReclaimJob(ctx, c, r.job.Name, r.gen)
		if err == nil {
			r.gen = gen
		}
		return err
	})
	if errors.Is(err, checkpoint.ErrFenced) {
		return r.superseded(err)
	}
	return err
}

// superseded is the error of a runner whose generation another runner has
// superseded: the job is that runner's now.
func (r *runner) superseded(err error) error {
	return fmt.Errorf("%w: job %q: another runner took it while this one had lost its session (generation %d); "+
		"nothing this runner had in flight was counted: %w", ErrJobBusy, r.job.Name, r.gen, err)
}

// busy builds the error for a job whose lock another session holds.
func (r *runner) busy(ctx context.Context) error {
	holder := r.store.LockHolder(ctx, r.control, r.job.Name)
	if j, err := r.store.Job(ctx, r.control, r.job.Name); err == nil && j.RunnerHost != nil && j.RunnerPID != nil {
		holder = fmt.Sprintf("host %s pid %d (%s)", *j.RunnerHost, *j.RunnerPID, holder)
	}
	return fmt.Errorf("%w: job %q is held by %s; wait for it, or stop that process first", ErrJobBusy, r.job.Name, holder)
}

// storedRate is the rate as the job row keeps it: 0 for no cap.
func storedRate(r float64) float64 {
	if math.IsInf(r, 1) {
		return 0
	}
	return r
}

// execute records the job as running and runs the pipeline to its end.
func (r *runner) execute(ctx context.Context, p *plan, existing *checkpoint.Job, startedAt time.Time) (Report, error) {
	j := r.job
	rep := Report{Job: j.Name}
	host, _ := os.Hostname()
	pid := os.Getpid()
	// a new generation before reading the checkpoint: the claim waits for
	// the commits still in flight of any runner before, and fences all
	// that come after, so what is read next is complete
	upper, estimate, err := r.takeJob(ctx, p, existing, startedAt, func(c *pgx.Conn) error {
		var err error
		r.gen, err = r.store.ClaimJob(ctx, c, j.Name, storedRate(j.Rate), r.workers, host, pid)
		return err
	})
	if err != nil {
		return rep, err
	}

	limiter, err := r.newLimiter(limitOf(j.Rate))
	if err != nil {
		return rep, err
	}
	var tracker *progress.Tracker
	var runRows atomic.Int64
	began := j.Now()
	stopThrottle, runErr := r.startThrottle(ctx, limiter)
	// One pass, and one more after each loss of the control session that
	// the runner survives by taking the job again: like a resume, it reads
	// the checkpoint afresh under its new generation.
	for pass := 0; runErr == nil; pass++ {
		var st stages
		var before checkpoint.Counters
		st, before, runErr = r.preparePass(ctx, p, upper, limiter, func(res worker.Result) {
			tracker.Add(res.Read)
			runRows.Add(int64(res.Read))
			r.throttle.committed(res.Read)
			if r.sizer != nil {
				r.sizer.Observe(res.Read, res.Elapsed)
			}
		})
		if runErr != nil {
			break
		}
		switch {
		case pass > 0:
			r.log.Info().Int64("generation", r.gen).Int64("chunks_done", before.ChunksDone).Int64("rows_done", before.RowsRead).
				Msg("job taken again after the control connection was lost")
		case existing != nil:
			r.log.Info().Str("from", p.spec.From).Str("to", p.spec.To).Int64("chunks_done", before.ChunksDone).
				Int64("rows_done", before.RowsRead).Int64("rows_failed", before.RowsFailed).Str("was", existing.State).Str("write_path", p.writePath).Msg("job resumed")
		}
		if tracker == nil {
			tracker = progress.New(estimate, before.RowsRead, j.Now)
		}
		if j.RetryFailed && pass == 0 {
			runErr = r.retryFailed(ctx, st)
		}
		if runErr == nil {
			runErr = r.pipeline(ctx, st, tracker, func(ctx context.Context) error { return r.heartbeat(ctx, limiter, st.pool) })
		}
		if !errors.Is(runErr, errControlLost) || ctx.Err() != nil {
			break
		}
		r.log.Warn().Err(runErr).Msg("control connection lost: the workers stopped; taking the job again")
		r.obs.lost()
		if runErr = r.reclaim(ctx); runErr != nil {
			break
		}
		r.obs.holds()
	}
	stopThrottle()
	rep.Elapsed = j.Now().Sub(began)
	rep.RunRows = runRows.Load()
	return r.finish(ctx, rep, runErr)
}

// takeJob makes the job this runner's: a new job is created (createJob);
// an existing one has its state schema brought up to date and is claimed
// on the control connection. It returns the job's end and the planner's
// estimate of its rows.
func (r *runner) takeJob(ctx context.Context, p *plan, existing *checkpoint.Job, startedAt time.Time, claim func(*pgx.Conn) error) ([]string, int64, error) {
	if existing == nil {
		return r.createJob(ctx, p, startedAt)
	}
	if err := r.migrate(ctx); err != nil {
		return nil, 0, err
	}
	if err := r.withControl(ctx, claim); err != nil {
		return nil, 0, err
	}
	r.obs.holds()
	return existing.UpperKey, existing.RowsEstimated, nil
}

// createJob records a new job as running under this runner: its row, and
// for a partitioned job its partitions, in one transaction. It returns the
// job's end and the planner's estimate of its rows.
func (r *runner) createJob(ctx context.Context, p *plan, startedAt time.Time) (upper []string, estimate int64, err error) {
	j := r.job
	estimate, upper, spec, err := r.newJob(ctx, p)
	if err != nil {
		return nil, 0, err
	}
	var parts []checkpoint.Partition
	if j.Partitions > 1 {
		if parts, err = r.partitionsOf(ctx, p, upper, estimate); err != nil {
			return nil, 0, err
		}
	}
	host, _ := os.Hostname()
	err = r.withControl(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			var err error
			r.gen, err = r.store.CreateJob(ctx, tx, checkpoint.NewJob{
				Name: j.Name, Spec: spec, Rate: storedRate(j.Rate), Workers: r.workers,
				RowsEstimated: estimate, UpperKey: upper, Host: host, PID: os.Getpid(), StartedAt: startedAt,
			})
			if err != nil || parts == nil {
				return err
			}
			return r.store.CreatePartitions(ctx, tx, j.Name, parts)
		})
	})
	if err != nil {
		return nil, 0, err
	}
	r.obs.holds()
	r.log.Info().Str("from", p.spec.From).Str("to", p.spec.To).Strs("key", p.spec.Key).
		Int64("rows_estimated", estimate).Strs("last_key", upper).Bool("follow", j.Follow).Int("partitions", max(1, len(parts))).
		Str("chunk_size", chunkSizeText(j.ChunkSize)).Str("write_path", p.writePath).Str("runner", r.owner).Msg("job started")
	return upper, estimate, nil
}

// newJob finds what a new job records: the planner's estimate of its rows
// (warning when that is a guess), its end, and its stored spec; and brings
// the state schema up to date for it.
func (r *runner) newJob(ctx context.Context, p *plan) (estimate int64, upper []string, spec []byte, err error) {
	if estimate, err = estimateRows(ctx, r.src, p, r.job.Where); err != nil {
		return 0, nil, nil, err
	}
	if note := guessedEstimate(ctx, r.src, p, estimate); note != "" {
		r.log.Warn().Msg(note)
	}
	if upper, err = p.end(ctx, r.src, r.job); err != nil {
		return 0, nil, nil, err
	}
	if spec, err = marshalSpec(p.spec); err != nil {
		return 0, nil, nil, err
	}
	return estimate, upper, spec, r.migrate(ctx)
}

// newLimiter is the run's rate limiter, starting at limit, and for a job
// sized by time its sizer. There is always a limiter, unlimited or not,
// so `backfill set --rate` can change it while the job runs; its burst is
// the fixed chunk size even when chunks are sized by time, for a cap is
// applied at that size (the workers wait for a larger chunk read before
// the cap in parts).
func (r *runner) newLimiter(limit rate.Limit) (*rate.Limiter, error) {
	limiter := rate.NewLimiter(limit, r.job.fixedChunkSize())
	r.obs.setRate(limit)
	if r.job.ChunkSize == 0 {
		var err error
		if r.sizer, err = r.newSizer(); err != nil {
			return nil, err
		}
		r.sizer.Hold(limit != rate.Inf)
	}
	return limiter, nil
}

// preparePass reads the job's checkpoint, which the runner's generation
// now fences, and builds the paginator to read what it lacks and the
// workers to write it.
func (r *runner) preparePass(ctx context.Context, p *plan, upper []string, limiter *rate.Limiter, onChunk func(worker.Result)) (stages, checkpoint.Counters, error) {
	j := r.job
	var (
		resume checkpoint.Resume
		before checkpoint.Counters
	)
	err := r.withControl(ctx, func(c *pgx.Conn) error {
		var err error
		if resume, err = r.store.ResumeState(ctx, c, j.Name); err != nil {
			return err
		}
		before, err = r.store.Counters(ctx, c, j.Name)
		return err
	})
	if err != nil {
		return stages{}, before, err
	}
	workers := r.passWorkers()
	if r.throttle.autoOn() {
		if r.window == nil {
			r.window = chunk.NewWindow(workers)
		}
	}
	r.resized(workers) // a later pass's pool may start at another size
	st, err := p.stages(j, pass{
		upper: upper, resume: resume, sizer: r.sizer, window: r.window, store: r.store, gen: r.gen, workers: workers,
		limiter: limiter, throttle: r.throttle.wait, failedBefore: before.RowsFailed, log: r.log, onChunk: onChunk, obs: r.obs,
	})
	r.pool = st.pool
	r.throttle.pool.Store(st.pool)
	return st, before, err
}

// finish records how the run ended. It runs even when ctx is cancelled,
// and reconnects if the server went away under the run.
func (r *runner) finish(ctx context.Context, rep Report, runErr error) (Report, error) {
	j := r.job
	finishCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout+r.retry.Cap)
	defer cancel()
	state, lastError := checkpoint.StateDone, ""
	if errors.Is(runErr, checkpoint.ErrFenced) && !errors.Is(runErr, ErrJobBusy) {
		runErr = r.superseded(runErr)
	}
	switch {
	case runErr == nil:
	case errors.Is(runErr, ErrJobBusy):
		// another runner took the job over while our lock was gone: its
		// state is not ours to write
		r.log.Error().Err(runErr).Msg("stopped: another runner has the job")
		r.obs.setHealth(runErr)
		return rep, runErr
	case errors.Is(runErr, ErrPaused):
		state = checkpoint.StatePaused
	case ctx.Err() != nil:
		state, runErr = checkpoint.StateInterrupted, fmt.Errorf("%w: job %q after %s", ErrInterrupted, j.Name, rep.Elapsed.Round(time.Millisecond))
	default:
		state, lastError = checkpoint.StateFailed, scrub(runErr, j.SourceURL, j.DestURL).Error()
		runErr = fmt.Errorf("%w: %w", ErrJobFailed, runErr)
	}
	rep.State = state
	defer r.obs.ended(state)
	err := r.withControl(finishCtx, func(c *pgx.Conn) error {
		if err := r.storeWorkers(finishCtx, c); err != nil {
			return err
		}
		if err := r.store.SetState(finishCtx, c, j.Name, r.gen, state, lastError); err != nil {
			return err
		}
		var err error
		rep.Totals, err = r.store.Counters(finishCtx, c, j.Name)
		return err
	})
	if errors.Is(err, checkpoint.ErrFenced) || errors.Is(err, ErrJobBusy) {
		err = r.superseded(err)
		r.log.Error().Err(err).Msg("stopped: another runner has the job")
		return rep, err
	}
	if err != nil {
		return rep, errors.Join(runErr, err)
	}
	ev := r.log.Info()
	if state == checkpoint.StateFailed {
		ev = r.log.Error().Str("error", lastError)
	}
	ev.Str("state", state).Int64("rows_read", rep.Totals.RowsRead).Int64("rows_inserted", rep.Totals.RowsInserted).
		Int64("rows_skipped", rep.Totals.RowsSkipped).Int64("rows_filtered", rep.Totals.RowsFiltered).
		Int64("rows_failed", rep.Totals.RowsFailed).Int64("chunks_done", rep.Totals.ChunksDone).
		Str("elapsed", rep.Elapsed.Round(time.Millisecond).String()).Msg("job " + state)
	return rep, runErr
}

// retryFailed tries the job's recorded failed rows again, one chunk's rows
// at a time, re-reading them from the source.
func (r *runner) retryFailed(ctx context.Context, st stages) error {
	var groups []checkpoint.FailedGroup
	err := r.withControl(ctx, func(c *pgx.Conn) error {
		var err error
		groups, err = r.store.FailedRows(ctx, c, r.job.Name)
		return err
	})
	if err != nil {
		return err
	}
	var total, fixed int
	for _, g := range groups {
		rows, err := st.pag.ReadKeys(ctx, r.src, g.Keys)
		if err != nil {
			return err
		}
		var still int
		res, err := st.pool.RetryFailed(ctx, r.dst, rows, g.ChunkLast, func(ctx context.Context, conn *pgx.Conn, retried checkpoint.Retried) error {
			still = len(retried.StillFailing)
			return r.store.ForgetFailedRows(ctx, conn, r.job.Name, r.gen, g.ChunkLast, retried)
		})
		if err != nil {
			return fmt.Errorf("retry failed rows of the chunk ending at %v: %w", g.ChunkLast, err)
		}
		r.obs.retried(res)
		total += len(g.Keys)
		fixed += len(g.Keys) - still
		r.log.Debug().Strs("chunk_last_key", g.ChunkLast).Int("rows", len(g.Keys)).Int("inserted", res.Inserted).
			Int("still_failing", still).Msg("retried failed rows")
	}
	r.log.Info().Int("retried", total).Int("resolved", fixed).Int("still_failing", total-fixed).Msg("failed rows retried")
	return nil
}

// limitOf turns a rows-per-second cap into the limiter's form.
func limitOf(rowsPerSec float64) rate.Limit {
	if rowsPerSec <= 0 || math.IsInf(rowsPerSec, 1) {
		return rate.Inf
	}
	return rate.Limit(rowsPerSec)
}

// pipeline runs paginator → channel → workers, with the progress report
// and beat (the job's heartbeat, or a partition's lease renewal) beside
// them until both finish. An error of beat's stops the pipeline.
func (r *runner) pipeline(ctx context.Context, st stages, tracker *progress.Tracker, beat func(context.Context) error) error {
	pipeCtx, cancelPipe := context.WithCancelCause(ctx)
	defer cancelPipe(nil)
	g, gctx := errgroup.WithContext(pipeCtx)
	chunks, readErr := st.read(gctx, r.src, r.job.QueueDepth)
	r.obs.watchPool(st.pool)
	g.Go(func() error { return <-readErr })
	g.Go(func() error { return st.pool.Run(gctx, r.dst, chunks) })

	sideCtx, stopSide := context.WithCancel(ctx)
	var side sync.WaitGroup
	side.Go(func() { r.obs.report(sideCtx, tracker, st.pool) })
	side.Go(func() {
		if err := beat(sideCtx); err != nil {
			cancelPipe(err) // paused, lost the control session, the job to another runner, or the lease
		}
	})
	if r.job.Autoscale {
		side.Go(func() { r.autoscale(sideCtx, st.pool) })
	}
	side.Go(func() {
		if err := r.throttle.pauseWhenCritical(sideCtx); err != nil {
			cancelPipe(err)
		}
	})
	err := g.Wait()
	// a job of one runner whose pipeline ran out has its last chunk in:
	// the report's last figures say so (a partition's is one of several)
	if err == nil && pipeCtx.Err() == nil && r.job.Partitions <= 1 {
		tracker.Finish()
	}
	stopSide()
	side.Wait()
	if cause := context.Cause(pipeCtx); errors.Is(cause, ErrJobBusy) || errors.Is(cause, ErrPaused) || errors.Is(cause, errControlLost) ||
		errors.Is(cause, ErrLeaseLost) {
		return cause
	}
	if err == nil && ctx.Err() != nil {
		// the workers stop at a cancel without an error, leaving the chunks
		// they held or that were queued: the job is not done, whatever the
		// paginator had read
		return ctx.Err()
	}
	return err
}

// heartbeat keeps the job row's heartbeat fresh, so status can tell a live
// runner from a dead one, and acts on an operator's requests: a new rate
// is applied to the shared limiter at once, a new worker count to the
// pool (followWorkers, which also stores the pool's own size); a pause
// returns ErrPaused, which stops the pipeline like an interrupt. It returns errControlLost
// when the control session is gone, for the lock went with it: the workers
// must stop. Any other error (a lock timeout while someone holds the job's
// row) leaves the session and the lock as they were: it tries again at the
// next beat. It returns ErrJobBusy when another runner has taken the job.
func (r *runner) heartbeat(ctx context.Context, limiter *rate.Limiter, pool *worker.Pool) error {
	t := time.NewTicker(DefaultHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			req, err := r.store.Heartbeat(ctx, r.control, r.job.Name, r.gen)
			if err == nil && !req.Pause {
				err = r.followWorkers(ctx, pool)
			}
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, checkpoint.ErrFenced):
				return r.superseded(err)
			case err != nil && r.controlLost():
				return fmt.Errorf("%w: %w", errControlLost, err)
			case err != nil:
				r.log.Warn().Err(err).Msg("heartbeat failed; the control session and the runner lock are intact")
				continue
			case req.Pause:
				r.log.Info().Msg("pause requested: finishing the chunks in flight")
				return fmt.Errorf("%w: job %q by request", ErrPaused, r.job.Name)
			}
			wasAuto := r.throttle.autoOn()
			r.throttleBeat(ctx, req)
			if want := limitOf(req.Rate); !r.throttle.autoOn() && (wasAuto || want != limiter.Limit()) {
				if want != limiter.Limit() {
					r.log.Info().Float64("rate", req.Rate).Msg("rate changed by request (0: no cap)")
				}
				r.setLimit(limiter, want) // after --rate auto, its chunk sizing and window end too
			}
		}
	}
}

// setLimit applies a new rate cap. A job sized by time goes back to its
// fixed chunk size while it has a cap, as if started with it, and sizes by
// time again when the cap is lifted; the chunks already read larger than
// the limiter's burst wait for their tokens in parts (see worker).
func (r *runner) setLimit(limiter *rate.Limiter, want rate.Limit) {
	limiter.SetLimit(want)
	limiter.SetBurst(r.job.fixedChunkSize()) // as at the start: a cap lets no larger burst through
	r.obs.setRate(want)
	r.window.Resize(0) // a rate an operator set reads ahead, as at the start
	if r.sizer != nil {
		if pool := r.throttle.pool.Load(); pool != nil {
			r.sizer.SetMaxBytes(r.chunkMemory(pool.Size())) // of the queue's chunks again
		}
		r.sizer.Limit(0)
		r.sizer.Hold(want != rate.Inf)
	}
}

// autoChunkTime is how much of the rate --rate auto sets one chunk of a
// job sized by time holds at most.
const autoChunkTime = 100 * time.Millisecond

// setAutoLimit applies a rate --rate auto set. Unlike an operator's cap it
// leaves a job sized by time sized by time, for the controller's rate is
// no size anyone chose, and fixed 1,000-row chunks would cost the server a
// transaction's overhead for each (a worker more, at a high rate); a
// chunk holds at most autoChunkTime of the rate.
//
// The limiter's burst is a chunk of that size, too: a bucket that holds
// only a fixed 1,000-row chunk's tokens fills while a worker writes and
// then wastes what the rate allows meanwhile, so every chunk would wait
// for its tokens on top of its write, at any rate.
func (r *runner) setAutoLimit(limiter *rate.Limiter, want rate.Limit) {
	chunk := int(float64(want) * autoChunkTime.Seconds())
	limiter.SetLimit(want)
	r.obs.setRate(want)
	if r.sizer != nil {
		limiter.SetBurst(max(r.job.fixedChunkSize(), chunk))
		r.sizer.Hold(false)
		r.sizer.Limit(chunk)
	}
}

// newSizer builds the sizer of a job sized by time, which logs the size
// when it has doubled or halved.
func (r *runner) newSizer() (*paginator.Sizer, error) {
	return paginator.NewSizer(paginator.SizerConfig{
		Target: r.job.TargetChunkTime, Min: DefaultChunkSize, Max: MaxTimedChunkSize,
		MaxBytes: r.chunkMemory(r.workers),
		OnResize: func(from, to int, rowsPerSec float64) {
			r.log.Info().Int("from", from).Int("to", to).Int("rows_per_s_per_worker", int(rowsPerSec)).
				Str("target", r.job.TargetChunkTime.String()).Msg("chunk size changed")
		},
	})
}

// guessedEstimate returns, when the source table has never been analyzed,
// a note saying that the planner's estimate is a guess and how to fix it;
// "" otherwise, or when the catalog cannot tell.
func guessedEstimate(ctx context.Context, q *pgxpool.Pool, p *plan, estimate int64) string {
	var never bool
	if err := q.QueryRow(ctx, bfsql.Static(bfsql.CatalogNeverAnalyzed), p.source.OID).Scan(&never); err != nil || !never {
		return ""
	}
	return fmt.Sprintf("%s has never been analyzed: the planner's estimate of %d rows is a guess from its size, and so are the "+
		"percentages and ETA; ANALYZE %s makes them exact enough", p.source.Name, estimate, p.source.Name)
}

// sourceRows is the FROM clause of a statement over the rows the job
// reads: the source table, with the job's where.
func sourceRows(p *plan, where string) string {
	from := " FROM " + p.source.Name.String()
	if where != "" {
		from += " WHERE (" + where + ")"
	}
	return from
}

// estimateRows asks the planner how many rows the source query returns.
func estimateRows(ctx context.Context, q *pgxpool.Pool, p *plan, where string) (int64, error) {
	sql := "EXPLAIN (FORMAT JSON) SELECT 1" + sourceRows(p, where)
	var out []struct {
		Plan struct {
			Rows float64 `json:"Plan Rows"`
		} `json:"Plan"`
	}
	var raw []byte
	if err := q.QueryRow(ctx, sql).Scan(&raw); err != nil {
		return 0, fmt.Errorf("estimate rows of %s: %w", p.source.Name, err)
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out) == 0 {
		return 0, fmt.Errorf("read the planner's estimate for %s: %v", p.source.Name, err)
	}
	return int64(out[0].Plan.Rows), nil
}
