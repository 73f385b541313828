package backfill

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/autoscale"
	"github.com/backfill/backfill/worker"
)

// The pool's size while the job runs. The job's row holds it (workers):
// the runner stores its pool's size there at each heartbeat, and an
// operator's `backfill set --workers` writes it there too, which the
// runner applies at its next heartbeat (followWorkers). Between the two
// the operator wins: the runner stores its size only while the row still
// holds the count it last saw there (checkpoint.Store.SyncWorkers). (An
// operator who sets the very count the row held before an autoscale change
// the runner has not stored yet is taken for no request: a heartbeat's
// window, after which the autoscaler goes on from where it is anyway.)
//
// The destination pool (pgxpool) is opened for WorkersLimit connections,
// as its size cannot change once made; it creates connections only when
// asked and keeps none idle beyond what was asked. The limit that follows
// the worker count is the worker pool's: each worker holds one connection,
// its own, with its own stage, from its first chunk until it retires or
// the run ends, and a worker that retires closes it. Recreating the pgxpool
// at each resize instead would have to wait for every worker to give its
// connection back, and lose each worker's stage with it.

// startingWorkers is the pool's size at the start of a run: Job.Workers,
// within the autoscale bounds for a job that autoscales.
func (r *runner) startingWorkers() int {
	n := r.withinBounds(r.job.Workers)
	if n != r.job.Workers {
		r.log.Info().Int("workers", r.job.Workers).Int("min_workers", r.job.MinWorkers).Int("max_workers", r.job.MaxWorkers).
			Int("starting_with", n).Msg("workers outside the autoscale bounds: starting within them")
	}
	return n
}

// passWorkers is the pool's size at the start of a pass: what --rate auto
// set last while it sizes the pool (one worker at the first pass), else
// the job's row's count within the autoscale bounds.
func (r *runner) passWorkers() int {
	if n := r.throttle.autoWorkers(); n > 0 {
		return n
	}
	return r.withinBounds(r.workers)
}

// rowWorkers is the count the runner stores in the job's row for its pool:
// the pool's size, or while --rate auto sizes the pool the most it may
// use (the job's own count), which a resume starts from as its ceiling.
func (r *runner) rowWorkers(pool *worker.Pool) int {
	if r.throttle.poolIsAuto() {
		return r.workers
	}
	return pool.Target()
}

// withinBounds is n kept within what the job's pool may be.
func (r *runner) withinBounds(n int) int {
	least, most := 1, WorkersLimit
	if r.job.Autoscale {
		least, most = r.job.MinWorkers, r.job.MaxWorkers
	}
	return min(max(n, least), most)
}

// followWorkers, at each heartbeat, stores the pool's size in the job's
// row, or resizes the pool to the count an operator has set there since.
func (r *runner) followWorkers(ctx context.Context, pool *worker.Pool) error {
	size := r.rowWorkers(pool)
	stored, err := r.store.SyncWorkers(ctx, r.control, r.job.Name, r.gen, r.workers, size)
	if err != nil {
		return err
	}
	r.workers = stored
	if stored == size {
		return nil
	}
	if r.throttle.stopSizing() {
		r.log.Info().Int("workers", stored).Msg("workers set by request: --rate auto sets only the rate from now on")
	}
	want := r.withinBounds(stored)
	ev := r.log.Info().Int("from", pool.Target()).Int("to", want)
	if want != stored {
		// stored at the next heartbeat, when the row still holds the request
		ev = ev.Int("requested", stored).Int("min_workers", r.job.MinWorkers).Int("max_workers", r.job.MaxWorkers)
	}
	ev.Msg("workers changed by request")
	return r.resize(pool, want)
}

// storeWorkers stores the last pass's pool size as the run ends, on conn,
// for the job's resume to start with (unless an operator has set a count
// since, which stays).
func (r *runner) storeWorkers(ctx context.Context, conn *pgx.Conn) error {
	if r.pool == nil {
		return nil
	}
	_, err := r.store.SyncWorkers(ctx, conn, r.job.Name, r.gen, r.workers, r.rowWorkers(r.pool))
	return err
}

// resize sets the pool's size, and the memory share of each chunk the
// pipeline then holds.
func (r *runner) resize(pool *worker.Pool, workers int) error {
	if err := pool.Resize(workers); err != nil {
		return err
	}
	r.resized(workers)
	return nil
}

// resized follows a new pool size with the chunks' memory share and,
// under --rate auto, the window of chunks read.
func (r *runner) resized(workers int) {
	r.window.Follow(workers)
	if r.sizer != nil {
		r.sizer.SetMaxBytes(r.chunkMemory(workers))
	}
}

// chunkMemory is each chunk's share of TimedChunksMemory: of those queued,
// those being written and the page being read or, while a window bounds
// the chunks read and not yet written (--rate auto), of the window's. A
// share that assumed a full queue under the window would keep chunks at a
// fraction of what the job's memory holds, and small chunks cost the
// server a transaction's overhead each.
func (r *runner) chunkMemory(workers int) int64 {
	held := r.job.QueueDepth + workers + 1
	if bound := r.window.Bound(); bound > 0 {
		held = bound
	}
	return TimedChunksMemory / int64(held)
}

// autoscaleTiming is how often the controller decides and how long the
// queue must stay nearly empty before a worker is retired: autoscale's
// defaults, unless a test shortens them.
type autoscaleTiming struct {
	interval, shrinkAfter time.Duration
}

// autoscale sizes the pool by its bottleneck until ctx ends (Job.Autoscale):
// each change is logged with its reason, and stored at the next heartbeat.
func (r *runner) autoscale(ctx context.Context, pool *worker.Pool) {
	ctl, err := autoscale.New(autoscale.Config{Min: r.job.MinWorkers, Max: r.job.MaxWorkers,
		Interval: r.job.autoscaleTiming.interval, ShrinkAfter: r.job.autoscaleTiming.shrinkAfter})
	if err != nil {
		r.log.Error().Err(err).Msg("autoscale is off") // the job's validation keeps this from happening
		return
	}
	autoscale.Run(ctx, ctl, pool, func(from int, d autoscale.Decision, o autoscale.Observation) bool {
		if !pool.ResizeFrom(from, d.Size) {
			return false // an operator's count came first
		}
		r.resized(d.Size)
		msg := "autoscale: growing the pool"
		if d.Size < from {
			msg = "autoscale: shrinking the pool"
		}
		r.log.Info().Int("from", from).Int("to", d.Size).Str("reason", d.Reason).Float64("queue_fill", o.Fill).
			Float64("workers_busy", o.Busy).Str("waited", o.Waited.Round(time.Millisecond).String()).Msg(msg)
		return true
	})
}
