package backfill

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/chunk"
	"github.com/backfill/backfill/paginator"
	"github.com/backfill/backfill/retry"
	"github.com/backfill/backfill/worker"
)

// The pipeline is built here, once, for every way of driving it: a run's
// passes, a dry run's sample, the checks of a plan and verify's readers.
// A change to how a job reads, retries or writes is made here.

// retryPolicy is a job's one way of retrying what a retry may cure: a page
// of the source, a chunk's write, a statement on the control connection,
// a digest of verify's.
func retryPolicy(maxRetries int) retry.Policy {
	return retry.Policy{MaxRetries: maxRetries, Base: retry.DefaultBase, Cap: retry.DefaultCap}
}

// keyOrderReader is how every paginator of a job reads a table: in the
// order of the key, matching the job's where, retrying as the job retries.
// The rest of its configuration says what it reads and from where on.
func keyOrderReader(table pgx.Identifier, key []paginator.KeyColumn, where string, maxRetries int) paginator.Config {
	return paginator.Config{Table: table, Key: key, Where: where, ChunkSize: 1, Retry: retryPolicy(maxRetries)}
}

// reading is how the job reads its source: the columns the plan reads, in
// chunks of the fixed size, as COPY tuples for a straight copy.
func (p *plan) reading(j Job) paginator.Config {
	cfg := keyOrderReader(p.source.Name.Identifier(), p.key, j.Where, j.MaxRetries)
	cfg.Columns, cfg.ChunkSize, cfg.CopyOrder = p.read, j.fixedChunkSize(), p.straight
	return cfg
}

// end is the last key the job reads, which a new job records: the source's
// last key now, or nil for a job that follows the table to its end.
func (p *plan) end(ctx context.Context, src paginator.Querier, j Job) ([]string, error) {
	if j.Follow {
		return nil, nil
	}
	return paginator.LastKey(ctx, src, p.source.Name.Identifier(), p.key, j.Where)
}

// stages are a job's paginator and workers.
type stages struct {
	pag  *paginator.Paginator
	pool *worker.Pool
}

// pass is what a run's pass gives the stages beyond the plan and the job,
// and a dry run leaves zero where it has nothing to give.
type pass struct {
	upper  []string          // the job's end (paginator.Config.Upper)
	resume checkpoint.Resume // what is committed already: zero for nothing
	// sizer sizes the chunks of a job sized by time; nil for the fixed
	// size.
	sizer *paginator.Sizer
	// window bounds the chunks read ahead of their writing; nil for the
	// channel's depth.
	window  *chunk.Window
	store   *checkpoint.Store
	gen     int64 // the runner's generation, which every commit carries
	workers int
	limiter *rate.Limiter // nil for no cap
	// throttle is waited on before each commit (Throttler.Wait); nil
	// for none
	throttle func(context.Context) error
	// failedBefore are the job's failed rows before the pass, which count
	// towards its limit.
	failedBefore int64
	log          zerolog.Logger
	onChunk      func(worker.Result) // nil for nothing more than the log's line
	obs          *observer           // the run's metrics; nil for none
	// A partition of a job spread over several runners: its id (0 for a
	// job of one runner), the key it starts after, the seq its next chunk
	// takes (0: after the job's last), and the hook that may end its read
	// early to hand the rest to another runner.
	partition int
	lower     []string
	nextSeq   int64
	cut       func(ctx context.Context, cursor, upper []string) ([]string, error)
}

// stages builds the paginator that reads what the pass lacks and the
// workers that write it.
func (p *plan) stages(j Job, ps pass) (stages, error) {
	read := p.reading(j)
	read.Upper, read.Sizer, read.Window = ps.upper, ps.sizer, ps.window
	read.Bounds, read.Split = resumeBounds(ps.resume)
	read.NextSeq = ps.resume.MaxSeq + 1
	if ps.partition != 0 {
		read.Lower, read.Partition, read.NextSeq, read.Cut = ps.lower, true, ps.nextSeq, ps.cut
	}
	read.OnRead = ps.obs.onRead()
	read.OnRetry = func(err error, attempt int) {
		ps.log.Warn().Err(err).Int("attempt", attempt).Msg("retrying source read")
	}
	pag, err := paginator.New(read)
	if err != nil {
		return stages{}, err
	}
	pool, err := worker.New(worker.Config{
		Job: j.Name, Table: p.dest.Name.Identifier(), Columns: p.write, SourceColumns: p.sourceColumns,
		OverridingSystemValue: p.overriding, DirectCopy: p.direct, RangeKey: p.rangeKey, LeaveOutPresent: p.leaveOutPresent, Straight: p.straight,
		Transformer: p.transformer, Checkpoint: ps.store, Generation: ps.gen, Partition: ps.partition,
		Workers: ps.workers, Limiter: ps.limiter, Throttle: ps.throttle, DrainTimeout: j.DrainTimeout, Retry: retryPolicy(j.MaxRetries),
		MaxFailedRows: max(j.MaxFailedRows, 0), FailedRowsBefore: ps.failedBefore, Logger: ps.log,
		OnAttempt: ps.obs.onAttempt(), OnRateWait: ps.obs.onRateWait(),
		OnChunk: func(res worker.Result) {
			if ps.onChunk != nil {
				ps.onChunk(res)
			}
			ps.log.Debug().Int64("seq", res.Seq).Int("read", res.Read).Int("inserted", res.Inserted).
				Int("skipped", res.Skipped).Int("filtered", res.Filtered).Int("failed", res.Failed).Str("path", res.Path).
				Strs("last_key", res.Last).Msg("chunk committed")
		},
	})
	if err != nil {
		return stages{}, err
	}
	return stages{pag: pag, pool: pool}, nil
}

// read runs the paginator on a goroutine of its own into a channel of
// depth chunks, which it closes when the paginator returns; the error
// channel then holds what the paginator returned (nil at the job's end).
func (s stages) read(ctx context.Context, src paginator.Querier, depth int) (<-chan *chunk.Chunk, <-chan error) {
	chunks := make(chan *chunk.Chunk, depth)
	done := make(chan error, 1)
	go func() {
		defer close(chunks)
		done <- s.pag.Run(ctx, src, chunks)
	}()
	return chunks, done
}
