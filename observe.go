package backfill

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/metrics"
	"github.com/backfill/backfill/progress"
	"github.com/backfill/backfill/worker"
)

// progressGaugesEvery is how often the progress ratio and ETA gauges are
// brought up to date: fresh enough for any scrape interval.
const progressGaugesEvery = time.Second

// observer is what a run shows its operators while it runs: its metrics,
// served on Job.MetricsAddr beside the runner's health, and its progress,
// drawn as a live line on a terminal or logged. It counts and reports; it
// decides nothing about the run.
//
// The run's counters count what this run did, and only that: after a run,
// each equals the difference the run made to what status reports (for a
// new job, status's figures themselves), with these exceptions: a chunk
// whose commit reply was lost committed but was never heard of, so it is
// in status and not in the counters; a chunk split in pieces is done once,
// when its last piece commits, and a resume that finishes the rest of a
// split chunk counts it done again where status counts it once; and the
// rows --retry-failed tries again count by what became of them this time
// (inserted, skipped, filtered or failed again), where status moves them
// out of failed.
type observer struct {
	metrics  *metrics.Metrics
	log      zerolog.Logger
	console  *progress.Console
	interval time.Duration
	// health is why the runner does not hold its job (/healthz answers
	// 503 with it), nil while it does.
	health atomic.Pointer[error]
	server *metrics.Server // nil without Job.MetricsAddr
	stop   context.CancelFunc
	// throttled says why the job waits, "" while it does not: the
	// throttle's reason (observeThrottle), for the progress line; nil for
	// no throttle. The rate limiter's waits are the cap's, not a throttle.
	throttled func() string
}

// newObserver builds the run's observer, its series labelled with the job
// and the runner, and, with Job.MetricsAddr, starts
// serving its metrics, so that an address in use fails the run before it
// writes anything. close stops the server.
func newObserver(ctx context.Context, j Job, runner string, log zerolog.Logger) (*observer, error) {
	m, err := metrics.New(j.Name, runner)
	if err != nil {
		return nil, err
	}
	o := &observer{metrics: m, log: log, console: j.Console, interval: j.ProgressInterval, stop: func() {}}
	o.setHealth(fmt.Errorf("the runner has not taken job %q yet", j.Name))
	if j.MetricsAddr == "" {
		return o, nil
	}
	serveCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	srv, err := metrics.Serve(serveCtx, metrics.ServerConfig{Addr: j.MetricsAddr, Metrics: m, Health: func() error {
		if err := o.health.Load(); err != nil {
			return *err
		}
		return nil
	}})
	if err != nil {
		stop()
		return nil, fmt.Errorf("Job.MetricsAddr: %w", err)
	}
	o.server, o.stop = srv, stop
	log.Info().Str("addr", srv.Addr()).Msg("serving metrics at /metrics and the runner's health at /healthz")
	return o, nil
}

// close stops serving, once the run's final figures are in.
func (o *observer) close() {
	o.stop()
	if o.server == nil {
		return
	}
	if err := o.server.Wait(); err != nil {
		o.log.Warn().Err(err).Msg("the metrics server stopped badly")
	}
}

func (o *observer) setHealth(err error) { o.health.Store(&err) }

// holds says the runner holds its job: it has claimed it under its lock.
func (o *observer) holds() { o.health.Store(nil) }

// lost says the runner lost its control session, and the job's lock with
// it, until it takes the job again.
func (o *observer) lost() {
	o.setHealth(errors.New("the runner lost its control session, and the job's lock with it; it is taking the job again"))
}

// ended records how the run ended: the runner no longer holds the job, its
// pool is gone, and a job done has all its progress.
func (o *observer) ended(state string) {
	o.setHealth(fmt.Errorf("the run has ended: the job is %s", state))
	o.metrics.ReadPoolFrom(nil)
	if state == StateDone {
		o.metrics.SetProgress(1, 0)
	}
}

// setRate shows the job's rate cap.
func (o *observer) setRate(limit rate.Limit) {
	if limit == rate.Inf {
		limit = 0
	}
	o.metrics.SetRate(float64(limit))
}

// onRead, onAttempt and onRateWait are a pass's hooks into the metrics:
// the paginator's reads, the workers' attempts and their waits on the
// rate limiter. A nil observer (a dry run's stages) has none.
func (o *observer) onRead() func(time.Duration) {
	if o == nil {
		return nil
	}
	return func(d time.Duration) { o.metrics.ObserveStage(metrics.StageRead, d) }
}

func (o *observer) onAttempt() func(worker.Outcome, worker.Result) {
	if o == nil {
		return nil
	}
	return o.attempt
}

func (o *observer) onRateWait() func(time.Duration) {
	if o == nil {
		return nil
	}
	return o.metrics.AddThrottled
}

// attemptStatus is the chunk status of each attempt's outcome.
var attemptStatus = map[worker.Outcome]metrics.ChunkStatus{
	worker.Committed: metrics.ChunkDone, worker.Retried: metrics.ChunkRetried,
	worker.Split: metrics.ChunkSplit, worker.GaveUp: metrics.ChunkFailed,
}

// attempt counts one attempt at a chunk. A chunk is done, as status counts
// chunks, once its last piece commits with rows read; the rows of every
// committed piece count.
func (o *observer) attempt(out worker.Outcome, res worker.Result) {
	c := metrics.Chunk{Status: attemptStatus[out], Transform: res.Transform, Write: res.Write}
	if out != worker.Committed {
		o.metrics.ObserveChunk(c)
		return
	}
	c.Rows = rowsOf(res)
	if !res.EndsChunk || res.Read == 0 {
		c.Status = "" // a piece, or a step without a matching row: no chunk is done
		o.metrics.AddRows(c.Rows)
	}
	o.metrics.ObserveChunk(c)
}

// retried counts the failed rows of one chunk tried again.
func (o *observer) retried(res worker.Result) { o.metrics.AddRows(rowsOf(res)) }

func rowsOf(res worker.Result) metrics.Rows {
	return metrics.Rows{Inserted: res.Inserted, Skipped: res.Skipped, Filtered: res.Filtered, Failed: res.Failed}
}

// watchPool has the pool gauges read a pass's workers and their channel.
func (o *observer) watchPool(pool *worker.Pool) {
	o.metrics.ReadPoolFrom(func() metrics.PoolStats {
		return metrics.PoolStats{Size: pool.Size(), Busy: pool.Busy(), Pending: pool.Pending(), Capacity: pool.Capacity()}
	})
}

// report shows a pass's progress until ctx ends: the live line or the
// log's lines, and the progress gauges.
func (o *observer) report(ctx context.Context, tracker *progress.Tracker, pool *worker.Pool) {
	var wg sync.WaitGroup
	wg.Go(func() {
		progress.NewReporter(o.console, o.log, o.interval, func() progress.Status {
			// the size the pool keeps: Size counts the workers running, none
			// once the pass has ended, when the line is drawn a last time
			s := progress.Status{Snapshot: tracker.Snapshot(), WorkersBusy: pool.Busy(), Workers: pool.Target()}
			if o.throttled != nil {
				s.Throttle = o.throttled()
			}
			return s
		}).Run(ctx)
	})
	wg.Go(func() {
		t := time.NewTicker(progressGaugesEvery)
		defer t.Stop()
		for {
			o.setProgress(tracker.Snapshot())
			select {
			case <-ctx.Done():
				o.setProgress(tracker.Snapshot()) // the pass's last figures
				return
			case <-t.C:
			}
		}
	})
	wg.Wait()
}

// setProgress sets the progress gauges to a snapshot's figures.
func (o *observer) setProgress(s progress.Snapshot) {
	ratio := -1.0
	if s.Percent >= 0 {
		ratio = s.Percent / 100
	}
	o.metrics.SetProgress(ratio, s.ETA)
}
