package backfill

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/paginator"
	"github.com/backfill/backfill/progress"
	"github.com/backfill/backfill/worker"
)

// A partitioned job (Job.Partitions > 1) is split at start into key ranges
// of about equal row counts, and read by any number of runners, on any
// hosts, coordinated through the state schema alone: each runner claims
// one partition at a time (FOR UPDATE SKIP LOCKED), holds it by a lease it
// renews, reads and writes it as a job of one runner reads its whole range,
// and claims the next when it is done. Every chunk commits under the
// lease's token, which the chunk's own statement checks, so a runner that
// stopped or was cut off past its lease cannot commit again, and another
// runner continues the partition from its checkpoint. A runner with no
// partition left to claim asks the holder of the one with most rows left
// to hand the rest of it over, so the last partition does not keep one
// runner busy while the others idle. The job's rate cap is shared out
// equally between the live leases.

// executePartitioned is execute for a partitioned job: it creates the job
// and its partitions, or joins them, then claims partitions until none is
// left to read.
func (r *runner) executePartitioned(ctx context.Context, p *plan, existing *checkpoint.Job, startedAt time.Time) (Report, error) {
	j := r.job
	rep := Report{Job: j.Name}
	upper, estimate, err := r.takeJob(ctx, p, existing, startedAt, func(c *pgx.Conn) error {
		return r.store.RunPartitioned(ctx, c, j.Name, storedRate(j.Rate))
	})
	if err != nil {
		return rep, err
	}
	if existing != nil {
		r.log.Info().Str("from", p.spec.From).Str("to", p.spec.To).Str("was", existing.State).
			Str("runner", r.owner).Msg("runner joined the job")
	}

	limiter, err := r.newLimiter(limitOf(j.Rate))
	if err != nil {
		return rep, err
	}
	var before checkpoint.Counters
	if err := r.withControl(ctx, func(c *pgx.Conn) error {
		before, err = r.store.Counters(ctx, c, j.Name)
		return err
	}); err != nil {
		return rep, err
	}
	tracker := progress.New(estimate, before.RowsRead, j.Now)
	var runRows atomic.Int64
	onChunk := func(res worker.Result) {
		tracker.Add(res.Read)
		runRows.Add(int64(res.Read))
		if r.sizer != nil {
			r.sizer.Observe(res.Read, res.Elapsed)
		}
	}
	began := j.Now()
	stopThrottle, runErr := r.startThrottle(ctx, limiter)
	if runErr == nil {
		runErr = r.claimPartitions(ctx, p, upper, limiter, tracker, onChunk)
	}
	stopThrottle()
	rep.Elapsed = j.Now().Sub(began)
	rep.RunRows = runRows.Load()
	return r.finishPartitioned(ctx, rep, runErr)
}

// runnerID names a runner: its host and pid, and a nonce against a pid
// reused on the same host.
func runnerID() string {
	host, _ := os.Hostname()
	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce)
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(nonce))
}

// splitPoints are the keys that cut the job's rows after after, up to
// upper, into n ranges of about equal row counts (paginator.SplitPoints).
func splitPoints(ctx context.Context, src *pgxpool.Pool, p *plan, where string, after, upper []string, n int, estimate int64) ([][]string, error) {
	return paginator.SplitPoints(ctx, src, p.source.Name.Identifier(), p.key, where, after, upper, n, estimate)
}

// partitionsOf cuts the job's range, up to upper, into its partitions.
func (r *runner) partitionsOf(ctx context.Context, p *plan, upper []string, estimate int64) ([]checkpoint.Partition, error) {
	var points [][]string
	if upper == nil || len(upper) > 0 { // not an empty table
		var err error
		points, err = splitPoints(ctx, r.src, p, r.job.Where, nil, upper, r.job.Partitions, estimate)
		if err != nil {
			return nil, err
		}
	}
	if len(points)+1 < r.job.Partitions {
		r.log.Warn().Int("partitions", len(points)+1).Int("asked", r.job.Partitions).
			Msg("fewer partitions than asked for: too few distinct keys among the rows")
	}
	parts := make([]checkpoint.Partition, len(points)+1)
	for i := range parts {
		if i > 0 {
			parts[i].After = points[i-1]
		}
		if i < len(points) {
			parts[i].Last = points[i]
		}
		parts[i].RowsEstimated = estimate / int64(len(parts))
	}
	return parts, nil
}

// claimPartitions claims and reads partitions until none is left to read,
// the job is paused, or an error stops the runner.
func (r *runner) claimPartitions(ctx context.Context, p *plan, upper []string, limiter *rate.Limiter, tracker *progress.Tracker, onChunk func(worker.Result)) error {
	j := r.job
	idle := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var lease *checkpoint.Lease
		var req checkpoint.Requests
		err := r.withControl(ctx, func(c *pgx.Conn) error {
			var err error
			if req, err = r.store.Requests(ctx, c, j.Name); err != nil || req.Pause {
				return err
			}
			lease, err = r.store.ClaimPartition(ctx, c, j.Name, r.owner, j.LeaseTimeout)
			return err
		})
		switch {
		case err != nil:
			return err
		case req.Pause:
			return fmt.Errorf("%w: job %q by request", ErrPaused, j.Name)
		case lease == nil:
			done, err := r.waitForPartition(ctx, !idle)
			if err != nil || done {
				return err
			}
			idle = true
			continue
		}
		idle = false
		err = r.readPartition(ctx, p, lease, upper, limiter, tracker, onChunk)
		if err == nil {
			err = r.withControl(ctx, func(c *pgx.Conn) error { return r.store.FinishPartition(ctx, c, lease) })
		}
		if errors.Is(err, checkpoint.ErrLeaseLost) || r.store.IsFenced(err) {
			return r.lostLease(lease, err)
		}
		if err != nil {
			r.release(ctx, lease)
			return err
		}
		r.log.Info().Int("partition", lease.Partition.ID).Msg("partition done")
	}
}

// waitForPartition is what a runner does when no partition is free: it
// reports done once none is left to read; else it asks the holder of the
// partition with most rows left to hand the rest over (logging it when
// first is set), and waits a moment before the next claim.
func (r *runner) waitForPartition(ctx context.Context, first bool) (done bool, err error) {
	var parts []checkpoint.Partition
	var asked int
	err = r.withControl(ctx, func(c *pgx.Conn) error {
		var err error
		if parts, err = r.store.Partitions(ctx, c, r.job.Name); err != nil {
			return err
		}
		asked, err = r.store.RequestSplit(ctx, c, r.job.Name, int64(2*r.job.fixedChunkSize()))
		return err
	})
	if err != nil {
		return false, err
	}
	pending := 0
	for _, part := range parts {
		if part.State != checkpoint.StateDone {
			pending++
		}
	}
	if pending == 0 {
		return true, nil
	}
	if first || asked != 0 {
		r.log.Info().Int("pending", pending).Int("split_asked_of", asked).Msg("no free partition: waiting for one, or a split")
	}
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-time.After(r.leaseBeat()):
		return false, nil
	}
}

// leaseBeat is how often a runner renews its lease: a third of the lease,
// at most once a second, so that the rate's shares follow runners coming
// and going within a second (a share left unused by a runner gone idle is
// rate the job loses), and a split is asked of a holder within one.
func (r *runner) leaseBeat() time.Duration {
	return min(r.job.LeaseTimeout/3, leaseBeatMax)
}

// leaseBeatMax bounds leaseBeat: a renewal a second per runner is little
// for the state table to carry.
const leaseBeatMax = time.Second

// readPartition reads and writes the partition of lease to its end, under
// its token, renewing the lease beside the pipeline.
func (r *runner) readPartition(ctx context.Context, p *plan, lease *checkpoint.Lease, upper []string, limiter *rate.Limiter, tracker *progress.Tracker, onChunk func(worker.Result)) error {
	j := r.job
	part := lease.Partition
	var (
		resume  checkpoint.Resume
		before  checkpoint.Counters
		nextSeq int64
	)
	err := r.withControl(ctx, func(c *pgx.Conn) error {
		var err error
		if resume, err = r.store.ResumeState(ctx, c, j.Name); err != nil {
			return err
		}
		if nextSeq, err = r.store.PartitionNextSeq(ctx, c, j.Name, part.ID); err != nil {
			return err
		}
		before, err = r.store.Counters(ctx, c, j.Name)
		return err
	})
	if err != nil {
		return err
	}
	end := part.Last
	if end == nil {
		end = upper // the job's end
	}
	log := r.log.With().Int("partition", part.ID).Logger()
	var splitAsked atomic.Bool
	st, err := p.stages(j, pass{
		upper: end, resume: resume, sizer: r.sizer, store: r.store, gen: lease.Token, workers: j.Workers,
		limiter: limiter, throttle: r.throttle.wait, failedBefore: before.RowsFailed, log: log, onChunk: onChunk, obs: r.obs,
		partition: part.ID, lower: part.After, nextSeq: nextSeq, cut: r.cutter(p, lease, &splitAsked),
	})
	if err != nil {
		return err
	}
	log.Info().Int64("token", lease.Token).Strs("after_key", part.After).Strs("last_key", part.Last).Msg("partition claimed")
	return r.pipeline(ctx, st, tracker, func(ctx context.Context) error { return r.renew(ctx, lease, limiter, &splitAsked) })
}

// renew renews the lease until ctx ends, applying the job's requests: its
// share of the rate cap, a pause, a split asked for by an idle runner.
func (r *runner) renew(ctx context.Context, lease *checkpoint.Lease, limiter *rate.Limiter, splitAsked *atomic.Bool) error {
	beat := func() error {
		var st checkpoint.LeaseState
		err := r.withControl(ctx, func(c *pgx.Conn) error {
			var err error
			st, err = r.store.RenewLease(ctx, c, lease, r.job.LeaseTimeout)
			return err
		})
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, checkpoint.ErrLeaseLost):
			return r.lostLease(lease, err)
		case err != nil:
			r.log.Warn().Err(err).Int("partition", lease.Partition.ID).Msg("lease renewal failed; trying again at the next beat")
			return nil
		case st.Pause:
			r.log.Info().Msg("pause requested: finishing the chunks in flight")
			return fmt.Errorf("%w: job %q by request", ErrPaused, r.job.Name)
		}
		share := limitOf(st.Rate)
		if share != rate.Inf {
			share /= rate.Limit(max(1, st.Live))
		}
		if share != limiter.Limit() {
			r.log.Info().Float64("rate", float64(share)).Float64("job_rate", st.Rate).Int("runners", st.Live).
				Msg("rate share changed (0: no cap)")
			r.setLimit(limiter, share)
		}
		if st.Split {
			splitAsked.Store(true)
		}
		return nil
	}
	if err := beat(); err != nil { // at once: the rate's share
		return err
	}
	t := time.NewTicker(r.leaseBeat())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := beat(); err != nil {
				return err
			}
		}
	}
}

// cutter is the paginator's cut hook for a partition: once a split has
// been asked for, it finds the key that halves the unread rest, and hands
// the rest after it to a new partition before the paginator reads on.
func (r *runner) cutter(p *plan, lease *checkpoint.Lease, splitAsked *atomic.Bool) func(ctx context.Context, cursor, upper []string) ([]string, error) {
	return func(ctx context.Context, cursor, upper []string) ([]string, error) {
		if !splitAsked.CompareAndSwap(true, false) {
			return nil, nil
		}
		log := r.log.With().Int("partition", lease.Partition.ID).Logger()
		after := cursor
		if after == nil {
			after = lease.Partition.After
		}
		points, err := splitPoints(ctx, r.src, p, r.job.Where, after, upper, 2, lease.Partition.RowsEstimated)
		if err != nil || len(points) == 0 {
			log.Info().Err(err).Msg("split asked for, but the rest is too small or could not be cut")
			return nil, nil
		}
		// a connection of its own: the control session is the renewer's,
		// and the workers hold every connection of the pool
		conn, err := pgx.ConnectConfig(ctx, r.controlCfg)
		if err != nil {
			log.Warn().Err(err).Msg("split asked for, but the destination could not be reached")
			return nil, nil
		}
		defer conn.Close(context.WithoutCancel(ctx))
		rest := lease.Partition.RowsEstimated / 2
		id, err := r.store.SplitPartition(ctx, conn, lease, points[0], lease.Partition.RowsEstimated-rest, rest)
		switch {
		case errors.Is(err, checkpoint.ErrLeaseLost):
			return nil, r.lostLease(lease, err)
		case err != nil:
			log.Warn().Err(err).Msg("split asked for, but it failed; reading on")
			return nil, nil
		}
		log.Info().Strs("at", points[0]).Int("new_partition", id).Msg("partition split: another runner takes the rest")
		return points[0], nil
	}
}

// release gives the partition up for another runner at once, on a stop.
func (r *runner) release(ctx context.Context, lease *checkpoint.Lease) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	if err := r.withControl(rctx, func(c *pgx.Conn) error { return r.store.ReleaseLease(rctx, c, lease) }); err != nil {
		r.log.Warn().Err(err).Int("partition", lease.Partition.ID).Msg("could not release the lease: it expires by itself")
	}
}

// lostLease is the error of a runner whose lease another runner may have
// taken over: none of its commits since counted.
func (r *runner) lostLease(lease *checkpoint.Lease, err error) error {
	return fmt.Errorf("%w: job %q partition %d (token %d): this runner was stopped or cut off from the destination past the "+
		"lease timeout (%s); another runner continues the partition, and nothing this one had in flight counted: %v",
		ErrLeaseLost, r.job.Name, lease.Partition.ID, lease.Token, r.job.LeaseTimeout, err)
}

// finishPartitioned records how this runner's run ended: the job's state
// when it is the one to record it (see checkpoint.SetStatePartitioned).
func (r *runner) finishPartitioned(ctx context.Context, rep Report, runErr error) (Report, error) {
	j := r.job
	finishCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout+r.retry.Cap)
	defer cancel()
	state, lastError := checkpoint.StateDone, ""
	switch {
	case runErr == nil:
	case errors.Is(runErr, ErrLeaseLost):
		r.log.Error().Err(runErr).Msg("stopped: lost the lease")
		rep.State = checkpoint.StateRunning // by the other runners
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
	defer r.obs.ended(state)
	var recorded bool
	err := r.withControl(finishCtx, func(c *pgx.Conn) error {
		var err error
		if recorded, err = r.store.SetStatePartitioned(finishCtx, c, j.Name, state, lastError); err != nil {
			return err
		}
		rep.Totals, err = r.store.Counters(finishCtx, c, j.Name)
		return err
	})
	if err != nil {
		return rep, errors.Join(runErr, err)
	}
	rep.State = state
	ev := r.log.Info()
	if state == checkpoint.StateFailed {
		ev = r.log.Error().Str("error", lastError)
	}
	ev = ev.Str("state", state).Int64("rows_read", rep.Totals.RowsRead).Int64("rows_inserted", rep.Totals.RowsInserted).
		Int64("rows_skipped", rep.Totals.RowsSkipped).Int64("rows_filtered", rep.Totals.RowsFiltered).
		Int64("rows_failed", rep.Totals.RowsFailed).Int64("chunks_done", rep.Totals.ChunksDone).
		Int64("run_rows", rep.RunRows).Str("elapsed", rep.Elapsed.Round(time.Millisecond).String())
	if !recorded {
		rep.State = checkpoint.StateRunning
		ev.Msg("runner stopped (" + state + "): other runners go on with the job")
		return rep, runErr
	}
	ev.Msg("job " + state)
	return rep, runErr
}
