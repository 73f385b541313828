package backfill

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/checkpoint"
	bfsql "github.com/backfill/backfill/sql"
	"github.com/backfill/backfill/throttle"
)

// DefaultSampleChunks is how many chunks a dry run pushes through.
const DefaultSampleChunks = 10

// DryRunOptions tune a dry run beyond the Job it rehearses.
type DryRunOptions struct {
	// SampleChunks is how many chunks to push through; 0 means the whole
	// table.
	SampleChunks int
	// ExactCount counts the source's rows instead of trusting the planner.
	ExactCount bool
	// PreviewRows is how many transformed rows to show (default 5).
	PreviewRows int
	// MaxFailures is how many failing rows to list (default 10).
	MaxFailures int
}

// DryRunReport is what a dry run found. Its JSON form is a stable interface
// (`backfill dry-run --json`).
type DryRunReport struct {
	Job string `json:"job"`
	// OK is true when the job can run and the sample met no failing row.
	OK bool `json:"ok"`
	// Problems stop the job from running at all (missing table, unsafe
	// key, type mismatch, …); all of them, not just the first.
	Problems []string         `json:"problems"`
	Source   DryRunTable      `json:"source"`
	Dest     DryRunTable      `json:"dest"`
	Sample   DryRunSample     `json:"sample"`
	Failures []DryRunFailure  `json:"failures"`
	Preview  DryRunPreview    `json:"preview"`
	Estimate DryRunEstimate   `json:"estimate"`
	SQL      DryRunStatements `json:"sql"`
	// Throttle is each signal the job would wait for, read once.
	Throttle []DryRunSignal `json:"throttle"`
	// Notes are facts worth knowing that do not stop the job.
	Notes []string `json:"notes"`
}

// DryRunSignal is one throttle signal as a dry run read it.
type DryRunSignal struct {
	Signal string `json:"signal"` // "replica lag on replica 1"
	Kind   string `json:"kind"`   // the metrics' reason label: replica_lag, load, …
	// Throttled says the job would wait now; Critical, that it would
	// pause.
	Throttled bool   `json:"throttled"`
	Critical  bool   `json:"critical"`
	Reading   string `json:"reading"`         // what was measured, against what limit
	Error     string `json:"error,omitempty"` // why it could not be read: a run waits
	Note      string `json:"note,omitempty"`  // what the signal cannot see
}

// DryRunTable describes one table.
type DryRunTable struct {
	Table         string `json:"table"`
	RowsEstimated int64  `json:"rows_estimated"`
	RowsExact     *int64 `json:"rows_exact"` // with --exact-count
	SizeBytes     int64  `json:"size_bytes"`
}

// DryRunSample counts what the sample would do.
type DryRunSample struct {
	Chunks      int     `json:"chunks"`
	WholeTable  bool    `json:"whole_table"`
	RowsRead    int64   `json:"rows_read"`
	WouldInsert int64   `json:"would_insert"`
	WouldSkip   int64   `json:"would_skip"` // conflicts with existing rows
	WouldFail   int64   `json:"would_fail"`
	Filtered    int64   `json:"filtered"`
	Seconds     float64 `json:"seconds"`
	RowsPerSec  float64 `json:"rows_per_sec"` // with the rate cap off
}

// DryRunFailure is one row that would fail.
type DryRunFailure struct {
	Key      []string `json:"key"`
	SQLState string   `json:"sqlstate"` // "" for a transform error
	Column   string   `json:"column"`
	Message  string   `json:"message"`
}

// DryRunPreview is the first rows as they would be written.
type DryRunPreview struct {
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

// DryRunEstimate is how long the job would take.
type DryRunEstimate struct {
	Rows               int64    `json:"rows"` // exact count if asked, else the planner's
	Rate               float64  `json:"rate"` // the cap; 0 means none
	SecondsAtRate      *float64 `json:"seconds_at_rate"`
	SecondsUnthrottled *float64 `json:"seconds_unthrottled"`
}

// DryRunStatements are the exact statements the run would use.
type DryRunStatements struct {
	FirstPage string `json:"first_page"`
	NextPage  string `json:"next_page"`
	// ChunkEnd, for a job with a where predicate, finds the key where each
	// chunk's scan ends; the page queries then read up to it.
	ChunkEnd string `json:"chunk_end,omitempty"`
	// CopyToStage copies a chunk into the worker's temporary stage, from
	// which Insert writes it to the destination and records it.
	CopyToStage string `json:"copy_to_stage"`
	Insert      string `json:"insert"`
	// CopyDirect copies a chunk straight into the destination when its key
	// range holds no row there, or few, which it leaves out.
	CopyDirect string `json:"copy_direct,omitempty"`
	// WritePath says which of these a chunk takes, and why.
	WritePath string `json:"write_path"`
}

// DryRun rehearses a job: every check of Run, estimates, and a sample
// pushed through paginator → transform → worker → INSERT inside a
// transaction that is rolled back, so the conflicts, constraint violations
// and transform errors it counts are real. It writes nothing that outlives
// it: no rows, no state schema, no job (sequences used by defaults do
// advance, as in any rolled-back transaction).
//
// A job that cannot run returns a report with Problems and an error
// wrapping ErrRefused (or ErrInvalidJob).
func DryRun(ctx context.Context, j Job, opts DryRunOptions) (DryRunReport, error) {
	j.Mode = ModeStart
	j = j.withDefaults()
	rep := DryRunReport{Job: j.Name, Problems: []string{}, Failures: []DryRunFailure{}, Notes: []string{}, Throttle: []DryRunSignal{}}
	if opts.PreviewRows == 0 {
		opts.PreviewRows = 5
	}
	if opts.MaxFailures == 0 {
		opts.MaxFailures = 10
	}
	if opts.SampleChunks < 0 {
		return rep, fmt.Errorf("%w: sample chunks %d: 0 for the whole table, or a positive number", ErrInvalidJob, opts.SampleChunks)
	}
	if err := j.validate(); err != nil {
		rep.Problems = problems(err)
		return rep, err
	}
	src, err := openPool(ctx, j.SourceURL, j.session(), "source", 2, true)
	if err != nil {
		return rep, scrub(err, j.SourceURL, j.DestURL)
	}
	defer src.Close()
	dst, err := openPool(ctx, j.DestURL, j.session(), "destination", 2, false)
	if err != nil {
		return rep, scrub(err, j.SourceURL, j.DestURL)
	}
	defer dst.Close()
	err = dryRun(ctx, j, opts, src, dst, &rep)
	if err != nil && len(rep.Problems) == 0 && (errors.Is(err, ErrRefused) || errors.Is(err, ErrInvalidJob)) {
		rep.Problems = problems(err)
	}
	return rep, scrub(err, append([]string{j.SourceURL, j.DestURL}, j.Replicas...)...)
}

// problems splits a joined error into one message per problem.
func problems(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if joined, ok := e.(interface{ Unwrap() []error }); ok {
			for _, inner := range joined.Unwrap() {
				walk(inner)
			}
			return
		}
		if errors.Is(e, ErrRefused) || errors.Is(e, ErrInvalidJob) {
			if inner := errors.Unwrap(e); inner != nil && inner != ErrRefused && inner != ErrInvalidJob {
				if _, ok := inner.(interface{ Unwrap() []error }); ok {
					walk(inner)
					return
				}
			}
		}
		out = append(out, e.Error())
	}
	walk(err)
	return out
}

func dryRun(ctx context.Context, j Job, opts DryRunOptions, src, dst *pgxpool.Pool, rep *DryRunReport) error {
	store, err := checkpoint.New(j.StateSchema)
	if err != nil {
		return err
	}
	stateSchema, err := store.Exists(ctx, dst)
	if err != nil {
		return err
	}
	switch existing, err := store.Job(ctx, dst, j.Name); {
	case errors.Is(err, checkpoint.ErrJobNotFound):
	case err != nil:
		return err
	default:
		held, err := store.Locked(ctx, dst, j.Name)
		if err != nil {
			return err
		}
		if held {
			return refused(fmt.Errorf("job %q is running now on this destination (%s); a dry run would compete with it", j.Name, store.LockHolder(ctx, dst, j.Name)))
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("job %q already exists here (state %s): `start` would refuse it; use a new name or `resume`", j.Name, existing.State))
	}

	now := j.Now().UTC()
	p, err := buildPlan(ctx, src, dst, j, now)
	if err != nil {
		return err
	}
	rep.Source.Table, rep.Dest.Table = p.spec.From, p.spec.To
	if rep.Source.RowsEstimated, err = estimateRows(ctx, src, p, j.Where); err != nil {
		return err
	}
	if note := guessedEstimate(ctx, src, p, rep.Source.RowsEstimated); note != "" {
		rep.Notes = append(rep.Notes, note)
	}
	if j.ChunkSize == 0 && limitOf(j.Rate) == rate.Inf {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the run sizes chunks by time (%s a chunk, %d to %d rows); the sample used %d-row chunks",
			j.TargetChunkTime, DefaultChunkSize, MaxTimedChunkSize, j.fixedChunkSize()))
	}
	rows := rep.Source.RowsEstimated
	if opts.ExactCount {
		var n int64
		if err := src.QueryRow(ctx, "SELECT count(*)"+sourceRows(p, j.Where)).Scan(&n); err != nil {
			return fmt.Errorf("count rows of %s: %w", p.source.Name, err)
		}
		rep.Source.RowsExact, rows = &n, n
	}
	for _, t := range []struct {
		pool *pgxpool.Pool
		oid  uint32
		into *int64
	}{{src, p.source.OID, &rep.Source.SizeBytes}, {dst, p.dest.OID, &rep.Dest.SizeBytes}} {
		if err := t.pool.QueryRow(ctx, bfsql.Static(bfsql.CatalogTotalSize), t.oid).Scan(t.into); err != nil {
			return fmt.Errorf("measure table size: %w", err)
		}
	}
	rep.Dest.RowsEstimated = -1
	_ = dst.QueryRow(ctx, bfsql.Static(bfsql.CatalogRowsEstimated), p.dest.OID).Scan(&rep.Dest.RowsEstimated)

	upper, err := p.end(ctx, src, j)
	if err != nil {
		return err
	}
	st, err := p.stages(j, pass{upper: upper, store: store, workers: 1})
	if err != nil {
		return err
	}
	ws := st.pool.SQL()
	rep.SQL = DryRunStatements{CopyToStage: ws.CopyToStage, Insert: ws.Insert, CopyDirect: ws.CopyDirect, WritePath: p.writePath}
	ps := st.pag.SQL()
	rep.SQL.FirstPage, rep.SQL.NextPage, rep.SQL.ChunkEnd = ps.FirstPage, ps.NextPage, ps.Step
	rep.Preview.Columns = p.transformer.Columns()
	rep.Preview.Rows = [][]any{}

	if err := rehearse(ctx, st, src, dst, opts, rep); err != nil {
		return err
	}

	th, err := newThrottling(ctx, j, j.Logger, store, false)
	if err != nil {
		return err
	}
	defer th.close(context.WithoutCancel(ctx))
	rep.Throttle = th.checkAll(ctx, stateSchema)

	rep.Estimate = DryRunEstimate{Rows: rows, Rate: storedRate(j.Rate)}
	if rep.Sample.RowsPerSec > 0 {
		s := float64(rows) / rep.Sample.RowsPerSec
		rep.Estimate.SecondsUnthrottled = &s
	}
	switch {
	case math.IsInf(j.Rate, 1):
		rep.Estimate.SecondsAtRate = rep.Estimate.SecondsUnthrottled
	default:
		// the cap binds unless the database pair is slower than it
		rps := j.Rate
		if rep.Sample.RowsPerSec > 0 {
			rps = min(rps, rep.Sample.RowsPerSec)
		}
		s := float64(rows) / rps
		rep.Estimate.SecondsAtRate = &s
	}
	if j.AutoRate {
		rep.Notes = append(rep.Notes, fmt.Sprintf("with Job.Rate auto the run starts at %d rows/s and moves the rate with what the probes "+
			"and signals read: the estimate at its rate takes its ceiling (none: unthrottled)", throttle.DefaultAutoStart))
	}
	rep.OK = rep.Sample.WouldFail == 0
	return nil
}

// rehearse pushes the sample through the real paginator and worker code
// inside one destination transaction, then rolls it back.
func rehearse(ctx context.Context, st stages, src, dst *pgxpool.Pool, opts DryRunOptions, rep *DryRunReport) error {
	tx, err := dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin the dry run's transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // always rolled back: nothing may outlive the dry run

	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	chunks, readErr := st.read(readCtx, src, 1)
	began := time.Now()
	rep.Sample.WholeTable = opts.SampleChunks == 0
	for c := range chunks {
		if len(c.Rows) == 0 {
			continue // a step of a filtered job without a matching row: a run records it, a sample need not
		}
		reh, err := st.pool.Rehearse(ctx, tx, c, opts.PreviewRows-len(rep.Preview.Rows))
		if err != nil {
			return fmt.Errorf("rehearse chunk %d: %w", c.Seq, err)
		}
		rep.Sample.Chunks++
		rep.Sample.RowsRead += int64(reh.Read)
		rep.Sample.WouldInsert += int64(reh.Inserted)
		rep.Sample.WouldSkip += int64(reh.Skipped)
		rep.Sample.WouldFail += int64(reh.Failed)
		rep.Sample.Filtered += int64(reh.Filtered)
		for _, row := range reh.Preview {
			rep.Preview.Rows = append(rep.Preview.Rows, displayRow(row))
		}
		for _, f := range reh.Failures {
			if len(rep.Failures) < opts.MaxFailures {
				rep.Failures = append(rep.Failures, DryRunFailure(f))
			}
		}
		if opts.SampleChunks > 0 && rep.Sample.Chunks >= opts.SampleChunks {
			stopReading()
			break
		}
	}
	elapsed := time.Since(began)
	for range chunks { // let the reader finish
	}
	if err := <-readErr; err != nil && readCtx.Err() == nil {
		return err
	}
	if rep.Sample.Chunks > 0 && opts.SampleChunks > 0 && rep.Sample.Chunks < opts.SampleChunks {
		rep.Sample.WholeTable = true // the table ended within the sample
	}
	rep.Sample.Seconds = elapsed.Seconds()
	if elapsed > 0 {
		rep.Sample.RowsPerSec = float64(rep.Sample.RowsRead) / elapsed.Seconds()
	}
	return nil
}

// displayRow turns values as the worker would send them into values that
// print and marshal readably.
func displayRow(row []any) []any {
	out := make([]any, len(row))
	for i, v := range row {
		switch x := v.(type) {
		case [16]byte:
			out[i] = fmt.Sprintf("%x-%x-%x-%x-%x", x[0:4], x[4:6], x[6:8], x[8:10], x[10:16])
		case time.Time:
			out[i] = x.Format(time.RFC3339Nano)
		case []byte:
			out[i] = fmt.Sprintf("\\x%x", x)
		case fmt.Stringer:
			out[i] = x.String()
		default:
			if dv, ok := v.(driver.Valuer); ok {
				if val, err := dv.Value(); err == nil {
					out[i] = val
					continue
				}
			}
			out[i] = v
		}
	}
	return out
}
