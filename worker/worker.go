package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/paginator"
	"github.com/backfill/backfill/retry"
	"github.com/backfill/backfill/transform"
)

// DefaultDrainTimeout bounds how long in-flight chunks may take to finish
// once the run is told to stop.
const DefaultDrainTimeout = 30 * time.Second

// ErrTooManyFailedRows stops a job whose failed rows pass the limit: a
// systematic mistake should be caught early, not after the whole table.
var ErrTooManyFailedRows = errors.New("too many failed rows")

// Column is one destination column the workers write.
type Column struct {
	Name string
	Type string // the exact type, typmod included, for messages
	// Cast is the type each value is cast to before the column's own
	// assignment takes it: the unconstrained form of a type (bpchar, not
	// character(8)), which never cuts a value as an explicit cast to a
	// typmod does.
	Cast string
	OID  uint32
	// AsText sends the value as its text form, cast from text to Cast: for
	// values passed through untouched from the source, json/jsonb, arrays
	// (which unnest would flatten) and the types pgx cannot send as an
	// array.
	AsText bool
	JSON   bool
}

// SourceColumn names a source column, for the copy of a failed row.
type SourceColumn struct {
	Name string
	JSON bool // the value is JSON text
}

// Checkpoint supplies the statements that record chunks and failed rows.
type Checkpoint interface {
	// Schema names the state schema, to tell its errors from the user's.
	Schema() string
	// IsFenced tells a commit refused because a newer runner took the job.
	IsFenced(err error) bool
	// CommitChunkSQL wraps an INSERT so one statement writes the rows and
	// the chunk's row.
	CommitChunkSQL(insert string) string
	// RecordChunkSQL records a chunk inside a transaction that wrote its rows.
	RecordChunkSQL() string
	// ChunkAfterSQL reads where the committed chunk ending at a key begins.
	ChunkAfterSQL() string
	// RecordFailedRowsSQL records failed rows.
	RecordFailedRowsSQL() string
}

// DB is the destination pool.
type DB interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Result is what one chunk (or one piece of a split chunk) did.
type Result struct {
	Seq      int64
	Read     int
	Filtered int
	Failed   int
	Inserted int
	Skipped  int
	Last     []string
	// Elapsed is how long the attempt that committed took, from the
	// transform to the commit's reply: what sizing chunks by time measures.
	Elapsed time.Duration
}

// Config says how to write.
type Config struct {
	Job   string
	Table pgx.Identifier
	// Columns are the destination columns, in the order of
	// Transformer.Columns().
	Columns []Column
	// SourceColumns name the values of a chunk's rows.
	SourceColumns []SourceColumn
	// OverridingSystemValue writes values into GENERATED ALWAYS identity
	// columns, which a copy must preserve.
	OverridingSystemValue bool
	Transformer           transform.Transformer
	Checkpoint            Checkpoint
	// Generation is the runner's, from claiming the job: every commit
	// carries it, and fails once a newer runner has raised it.
	Generation int64
	Workers    int
	// Limiter caps rows per second across all workers; nil means no cap.
	Limiter      *rate.Limiter
	DrainTimeout time.Duration
	Retry        retry.Policy
	// MaxFailedRows stops the job when the job's failed rows exceed it;
	// FailedRowsBefore are those recorded by earlier runs.
	MaxFailedRows    int64
	FailedRowsBefore int64
	Logger           zerolog.Logger
	// OnChunk is called after each committed chunk, from the worker's
	// goroutine.
	OnChunk func(Result)
}

// Pool is a set of workers.
type Pool struct {
	cfg       Config
	commitSQL string // fast path: rows and chunk row in one statement
	insertSQL string // slow path: the rows alone, counting inserts
	failed    atomic.Int64
}

// New checks cfg and builds the statements.
func New(cfg Config) (*Pool, error) {
	if cfg.Workers <= 0 {
		return nil, fmt.Errorf("workers must be positive, got %d", cfg.Workers)
	}
	if len(cfg.Columns) != len(cfg.Transformer.Columns()) {
		return nil, fmt.Errorf("%d destination columns for a transform writing %d", len(cfg.Columns), len(cfg.Transformer.Columns()))
	}
	for _, c := range cfg.Columns {
		if c.Cast == "" {
			return nil, fmt.Errorf("destination column %q has no type to cast its values to", c.Name)
		}
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	p := &Pool{
		cfg:       cfg,
		commitSQL: cfg.Checkpoint.CommitChunkSQL(InsertSQL(cfg.Table, cfg.Columns, cfg.OverridingSystemValue, checkpoint.ChunkParams+1)),
		insertSQL: "WITH ins AS (" + InsertSQL(cfg.Table, cfg.Columns, cfg.OverridingSystemValue, 1) + " RETURNING 1) SELECT count(*) FROM ins",
	}
	p.failed.Store(cfg.FailedRowsBefore)
	return p, nil
}

// SQL returns the statement that commits a chunk.
func (p *Pool) SQL() string { return p.commitSQL }

// InsertSQL builds the chunk's INSERT; its array parameters start at $first.
func InsertSQL(table pgx.Identifier, cols []Column, overriding bool, first int) string {
	names := make([]string, len(cols))
	sel := make([]string, len(cols))
	arrays := make([]string, len(cols))
	aliases := make([]string, len(cols))
	for i, c := range cols {
		names[i] = pgx.Identifier{c.Name}.Sanitize()
		aliases[i] = fmt.Sprintf("c%d", i+1)
		if c.AsText {
			arrays[i] = fmt.Sprintf("$%d::text[]", first+i)
			sel[i] = aliases[i] + "::" + c.Cast
		} else {
			arrays[i] = fmt.Sprintf("$%d::%s[]", first+i, c.Cast)
			sel[i] = aliases[i]
		}
	}
	override := ""
	if overriding {
		override = " OVERRIDING SYSTEM VALUE"
	}
	return fmt.Sprintf("INSERT INTO %s (%s)%s SELECT %s FROM unnest(%s) AS u(%s) ON CONFLICT DO NOTHING",
		table.Sanitize(), strings.Join(names, ", "), override, strings.Join(sel, ", "),
		strings.Join(arrays, ", "), strings.Join(aliases, ", "))
}

// Run starts cfg.Workers workers that take chunks from in until it is closed
// or ctx is cancelled. Cancelling ctx stops workers from taking chunks;
// chunks being written finish within DrainTimeout. The first error stops all
// workers and is returned.
func (p *Pool) Run(ctx context.Context, db DB, in <-chan *paginator.Chunk) error {
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stopDrainTimer := context.AfterFunc(ctx, func() { time.AfterFunc(p.cfg.DrainTimeout, cancelDrain) })
	defer stopDrainTimer()

	g, gctx := errgroup.WithContext(ctx)
	for range p.cfg.Workers {
		g.Go(func() error {
			w := p.newWorker()
			for {
				select {
				case <-gctx.Done():
					return nil
				case c, ok := <-in:
					if !ok {
						return nil
					}
					if lim := p.cfg.Limiter; lim != nil {
						if err := waitRows(gctx, lim, len(c.Rows)); err != nil {
							if gctx.Err() != nil {
								return nil // stopping: the chunk is left for resume
							}
							return fmt.Errorf("rate limiter for chunk %d: %w", c.Seq, err)
						}
					}
					var err error
					if w, err = w.commit(drainCtx, db, piece{chunk: c, lo: 0, hi: len(c.Rows), after: c.After, last: c.Last}); err != nil {
						return err
					}
				}
			}
		})
	}
	return g.Wait()
}

// Forget is called, inside the transaction that re-wrote a group of
// previously failed rows, with what became of them; it updates the
// checkpoint to match.
type Forget func(ctx context.Context, tx pgx.Tx, r checkpoint.Retried) error

// RetryFailed re-attempts rows recorded as failed that belong to one
// chunk (chunkLast): c holds those still in the source. Rows that still
// fail are recorded again with their new error; forget moves the others
// out of failed_rows, all in one transaction.
func (p *Pool) RetryFailed(ctx context.Context, db DB, c *paginator.Chunk, chunkLast []string, forget Forget) (Result, error) {
	var res Result
	pc := piece{chunk: c, lo: 0, hi: len(c.Rows), last: chunkLast, retried: forget, result: &res}
	_, err := p.newWorker().commit(ctx, db, pc)
	return res, err
}

// piece is the part of a chunk committed as one checkpoint row: the whole
// chunk, or half of one split after repeated timeouts. It covers the keys
// (after, last] and the chunk's rows [lo, hi).
type piece struct {
	chunk  *paginator.Chunk
	lo, hi int
	after  []string
	last   []string
	// retried is set when the rows are recorded failed rows being tried
	// again: there is no chunk row to write, only counters to move.
	retried Forget
	result  *Result // where a retried piece's result goes
}

func (pc piece) split() (piece, piece) {
	mid := pc.lo + (pc.hi-pc.lo)/2
	k := pc.chunk.Keys[mid-1]
	left, right := pc, pc
	left.hi, left.last = mid, k
	right.lo, right.after = mid, k
	return left, right
}

type worker struct {
	p     *Pool
	dst   []any
	cols  [][]any // column-major transformed values of the rows that survived
	rows  []int   // rows[i] is the chunk row of position i in cols
	types *pgtype.Map
}

func (p *Pool) newWorker() *worker {
	n := len(p.cfg.Columns)
	return &worker{p: p, dst: make([]any, n), cols: make([][]any, n), types: pgtype.NewMap()}
}

// failure is one row that could not be written.
type failure struct {
	row      int // index in the chunk
	sqlstate string
	column   string
	message  string
}

// errPanic marks an attempt that panicked; it is retried like a transient
// error, and the worker's state is replaced.
var errPanic = errors.New("panic")

// commit writes one piece, retrying transient errors with backoff, splitting
// it after repeated timeouts, and isolating rows that fail on their data. It
// returns the worker to continue with: a fresh one after a panic.
func (w *worker) commit(ctx context.Context, db DB, pc piece) (*worker, error) {
	timeouts := 0
	for attempt := 1; ; attempt++ {
		began := time.Now()
		res, err := w.attempt(ctx, db, pc)
		if err == nil {
			res.Elapsed = time.Since(began)
			if pc.retried != nil {
				*pc.result = res
			} else if w.p.cfg.OnChunk != nil {
				w.p.cfg.OnChunk(res)
			}
			return w, nil
		}
		if w.p.cfg.Checkpoint.IsFenced(err) {
			// nothing of the chunk was written, and no attempt of this
			// runner's can be: stop
			return w, fmt.Errorf("%w: chunk %d not committed by superseded generation %d: %w", checkpoint.ErrFenced, pc.chunk.Seq, w.p.cfg.Generation, err)
		}
		if errors.Is(err, errPanic) {
			w = w.p.newWorker()
		}
		if alreadyCommitted(err, w.p.cfg.Checkpoint.Schema()) {
			same, checkErr := w.sameRangeCommitted(ctx, db, pc)
			switch {
			case checkErr != nil:
				err = checkErr // retried below if transient: the next attempt meets the same chunk
			case !same:
				return w, overlapError(pc)
			default:
				// the reply to an earlier attempt was lost, but it committed
				w.p.cfg.Logger.Info().Int64("seq", pc.chunk.Seq).Msg("chunk was already committed by an earlier attempt")
				return w, nil
			}
		}
		if ctx.Err() != nil {
			return w, err
		}
		kind := retry.Classify(err)
		if errors.Is(err, errPanic) {
			kind = retry.Transient
		}
		if kind == retry.Timeout {
			timeouts++
			// a retried group of failed rows is not split: its counters move
			// as one (and it is small)
			if timeouts >= 2 && pc.hi-pc.lo > 1 && pc.retried == nil {
				left, right := pc.split()
				w.p.cfg.Logger.Warn().Int64("seq", pc.chunk.Seq).Int("rows", pc.hi-pc.lo).
					Msg("chunk timed out twice: splitting it in half")
				if w, err = w.commit(ctx, db, left); err != nil {
					return w, err
				}
				return w.commit(ctx, db, right)
			}
		}
		if kind != retry.Transient && kind != retry.Timeout {
			return w, err
		}
		if attempt > w.p.cfg.Retry.MaxRetries {
			return w, fmt.Errorf("%w (gave up after %d attempts; raise --max-retries or fix the cause, then resume)", err, attempt)
		}
		w.p.cfg.Logger.Warn().Err(err).Int64("seq", pc.chunk.Seq).Int("attempt", attempt).Msg("retrying chunk")
		if err := w.p.cfg.Retry.Wait(ctx, attempt); err != nil {
			return w, err
		}
	}
}

// alreadyCommitted: the checkpoint's primary key refuses a second row for
// the same range, so a retry of a chunk that did commit fails with 23505 on
// the state schema's chunks table. (The user's table cannot raise 23505
// under ON CONFLICT DO NOTHING, save from a deferrable constraint: hence
// the schema check.)
func alreadyCommitted(err error, stateSchema string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.TableName == "chunks" && pgErr.SchemaName == stateSchema
}

// sameRangeCommitted reports whether the committed chunk ending where pc
// ends also begins where pc begins. Only then is pc a retry of a chunk that
// committed; a committed chunk that begins later leaves pc's first rows
// unwritten, and taking pc for done would lose them.
func (w *worker) sameRangeCommitted(ctx context.Context, db DB, pc piece) (bool, error) {
	var after []string
	if err := db.QueryRow(ctx, w.p.cfg.Checkpoint.ChunkAfterSQL(), w.p.cfg.Job, pc.last).Scan(&after); err != nil {
		return false, fmt.Errorf("read the committed chunk that ends at key %v: %w", pc.last, err)
	}
	return slices.Equal(after, pc.after), nil
}

// overlapError stops the job rather than count pc done; resume reads the
// gap again.
func overlapError(pc piece) error {
	return fmt.Errorf("chunk %d covers keys (%v, %v], but the committed chunk that ends at the same key begins later: "+
		"the ranges overlap, so this chunk is not counted done; resume reads the rows between them again",
		pc.chunk.Seq, pc.after, pc.last)
}

// attempt transforms and writes a piece once, recovering a panic.
func (w *worker) attempt(ctx context.Context, db DB, pc piece) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			w.p.cfg.Logger.Error().Int64("seq", pc.chunk.Seq).Str("panic", fmt.Sprint(r)).Str("stack", string(debug.Stack())).
				Msg("worker panicked; the chunk will be retried by a fresh worker")
			err = fmt.Errorf("chunk %d: %w: %v", pc.chunk.Seq, errPanic, r)
		}
	}()
	res = Result{Seq: pc.chunk.Seq, Read: pc.hi - pc.lo, Last: pc.last}
	failures := w.transform(pc, &res)
	if len(failures) == 0 && pc.retried == nil {
		err = w.writeFast(ctx, db, pc, &res)
		// a fenced commit is refused as a whole, for no row's sake
		if retry.Classify(err) != retry.Data || w.p.cfg.Checkpoint.IsFenced(err) {
			return res, err
		}
	}
	return res, w.writeIsolating(ctx, db, pc, &res, failures)
}

// transform fills w.cols with the piece's rows that transform cleanly and
// returns the rows that do not.
func (w *worker) transform(pc piece, res *Result) []failure {
	for i := range w.cols {
		w.cols[i] = w.cols[i][:0] // the previous statement has returned
	}
	w.rows = w.rows[:0]
	res.Filtered = 0
	var failures []failure
	for r := pc.lo; r < pc.hi; r++ {
		keep, err := w.p.cfg.Transformer.Apply(pc.chunk.Rows[r], w.dst)
		if err == nil && keep {
			err = w.toWireForm()
		}
		if err != nil {
			f := failure{row: r, message: err.Error()}
			var re *transform.RowError
			if errors.As(err, &re) {
				f.column = re.Column
			}
			failures = append(failures, f)
			continue
		}
		if !keep {
			res.Filtered++
			continue
		}
		for i, v := range w.dst {
			w.cols[i] = append(w.cols[i], v)
		}
		w.rows = append(w.rows, r)
	}
	return failures
}

// toWireForm converts w.dst in place to what each column's parameter takes.
func (w *worker) toWireForm() error {
	for i, col := range w.p.cfg.Columns {
		if !col.AsText {
			continue
		}
		v, err := w.textForm(col, w.dst[i])
		if err != nil {
			return &transform.RowError{Column: col.Name, Err: err}
		}
		w.dst[i] = v
	}
	return nil
}

// writeFast writes the piece and its checkpoint row in one statement.
func (w *worker) writeFast(ctx context.Context, db DB, pc piece, res *Result) error {
	written := len(w.rows)
	args := checkpoint.CommitChunkArgs(w.p.cfg.Job, w.record(pc, res, written))
	for _, a := range w.cols {
		args = append(args, a)
	}
	if err := db.QueryRow(ctx, w.p.commitSQL, args...).Scan(&res.Inserted); err != nil {
		return fmt.Errorf("write chunk %d (keys %v..%v) to %s: %w", pc.chunk.Seq, pc.after, pc.last, w.p.cfg.Table.Sanitize(), err)
	}
	res.Skipped = written - res.Inserted
	return nil
}

func (w *worker) record(pc piece, res *Result, written int) checkpoint.ChunkRecord {
	first := []string(nil)
	if pc.hi > pc.lo {
		first = pc.chunk.Keys[pc.lo]
	}
	var splitLast []string
	if pc.lo > 0 || pc.hi < len(pc.chunk.Rows) {
		splitLast = pc.chunk.Last // a piece: a resume reads the rest as this chunk
	}
	return checkpoint.ChunkRecord{
		Seq: pc.chunk.Seq, After: pc.after, First: first, Last: pc.last,
		RowsRead: res.Read, RowsFiltered: res.Filtered, RowsFailed: res.Failed, RowsWritten: written,
		Generation: w.p.cfg.Generation, SplitLast: splitLast,
	}
}

// writeIsolating writes the piece in a transaction, bisecting the rows
// under savepoints until each row that fails on its data stands alone:
// O(k log n) statements for k bad rows among n. The good rows, the failed
// rows' records and the checkpoint row commit together.
func (w *worker) writeIsolating(ctx context.Context, db DB, pc piece, res *Result, failures []failure) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin isolating chunk %d: %w", pc.chunk.Seq, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	failures, err = w.isolate(ctx, tx, pc, res, failures)
	if err != nil {
		return err
	}
	res.Failed = len(failures)
	written := len(w.rows)
	res.Skipped = written - res.Inserted - countWrittenFailures(failures, w.rows)

	if err := w.recordFailures(ctx, tx, pc, failures); err != nil {
		return err
	}
	if pc.retried != nil {
		r := checkpoint.Retried{StillFailing: make([][]string, len(failures)), Inserted: res.Inserted, Skipped: res.Skipped, Filtered: res.Filtered}
		for i, f := range failures {
			r.StillFailing[i] = pc.chunk.Keys[f.row]
		}
		if err := pc.retried(ctx, tx, r); err != nil {
			return err
		}
	} else {
		args := checkpoint.RecordChunkArgs(w.p.cfg.Job, w.record(pc, res, written), res.Inserted, res.Skipped)
		if _, err := tx.Exec(ctx, w.p.cfg.Checkpoint.RecordChunkSQL(), args...); err != nil {
			return fmt.Errorf("record chunk %d: %w", pc.chunk.Seq, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit chunk %d: %w", pc.chunk.Seq, err)
	}
	if len(failures) > 0 {
		w.p.cfg.Logger.Warn().Int64("seq", pc.chunk.Seq).Int("failed_rows", len(failures)).
			Str("first_error", failures[0].message).Msg("rows failed; recorded in failed_rows")
		if total := w.p.failed.Add(int64(len(failures))); pc.retried == nil && w.p.cfg.MaxFailedRows > 0 && total > w.p.cfg.MaxFailedRows {
			return fmt.Errorf("%w: %d rows failed, more than --max-failed-rows %d; the last: %s", ErrTooManyFailedRows, total, w.p.cfg.MaxFailedRows, failures[len(failures)-1].message)
		}
	}
	return nil
}

// isolate inserts the transformed rows in tx, bisecting under savepoints
// until each row that fails on its data stands alone, and returns the
// failures (those given plus those found). res.Inserted counts the rows
// written.
func (w *worker) isolate(ctx context.Context, tx pgx.Tx, pc piece, res *Result, failures []failure) ([]failure, error) {
	res.Inserted = 0
	var bisect func(lo, hi int) error
	bisect = func(lo, hi int) error {
		if lo >= hi {
			return nil
		}
		if _, err := tx.Exec(ctx, "SAVEPOINT bisect"); err != nil {
			return fmt.Errorf("savepoint in chunk %d: %w", pc.chunk.Seq, err)
		}
		args := make([]any, len(w.cols))
		for i, col := range w.cols {
			args[i] = col[lo:hi]
		}
		var n int
		err := tx.QueryRow(ctx, w.p.insertSQL, args...).Scan(&n)
		if err == nil {
			res.Inserted += n
			_, err = tx.Exec(ctx, "RELEASE SAVEPOINT bisect")
			return err
		}
		if retry.Classify(err) != retry.Data {
			return fmt.Errorf("write rows of chunk %d: %w", pc.chunk.Seq, err)
		}
		if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT bisect"); rerr != nil {
			return fmt.Errorf("roll back to savepoint in chunk %d: %w", pc.chunk.Seq, rerr)
		}
		if hi-lo == 1 {
			f := failure{row: w.rows[lo], message: err.Error()}
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				f.sqlstate, f.column, f.message = pgErr.Code, pgErr.ColumnName, pgErr.Message
				if pgErr.Detail != "" {
					f.message += ": " + pgErr.Detail
				}
				if pgErr.ConstraintName != "" {
					f.message += " (constraint " + pgErr.ConstraintName + ")"
				}
			}
			failures = append(failures, f)
			return nil
		}
		mid := lo + (hi-lo)/2
		if err := bisect(lo, mid); err != nil {
			return err
		}
		return bisect(mid, hi)
	}
	if err := bisect(0, len(w.rows)); err != nil {
		return nil, err
	}
	return failures, nil
}

// Failure is a row that would not be written, as a dry run reports it.
type Failure struct {
	Key      []string
	SQLState string // "" for a transform error
	Column   string
	Message  string
}

// Rehearsal is what a chunk would do.
type Rehearsal struct {
	Result
	Failures []Failure
	// Preview holds up to previewRows of the chunk's rows as they would be
	// written, one value per destination column.
	Preview [][]any
}

// Rehearse transforms and writes a chunk inside tx exactly as a run would,
// bisecting rows that fail on their data, but records nothing: the caller
// rolls tx back. The conflicts, constraint violations and transform errors
// it meets are real.
func (p *Pool) Rehearse(ctx context.Context, tx pgx.Tx, c *paginator.Chunk, previewRows int) (Rehearsal, error) {
	w := p.newWorker()
	pc := piece{chunk: c, lo: 0, hi: len(c.Rows), after: c.After, last: c.Last}
	reh := Rehearsal{Result: Result{Seq: c.Seq, Read: len(c.Rows), Last: c.Last}}
	failures := w.transform(pc, &reh.Result)
	for r := 0; r < min(previewRows, len(w.rows)); r++ {
		row := make([]any, len(w.cols))
		for i := range w.cols {
			row[i] = w.cols[i][r]
		}
		reh.Preview = append(reh.Preview, row)
	}
	failures, err := w.isolate(ctx, tx, pc, &reh.Result, failures)
	if err != nil {
		return reh, err
	}
	reh.Failed = len(failures)
	reh.Skipped = len(w.rows) - reh.Inserted - countWrittenFailures(failures, w.rows)
	for _, f := range failures {
		reh.Failures = append(reh.Failures, Failure{Key: c.Keys[f.row], SQLState: f.sqlstate, Column: f.column, Message: f.message})
	}
	return reh, nil
}

// countWrittenFailures counts failures among rows offered to the INSERT (as
// opposed to rows that failed in the transform and were never offered).
func countWrittenFailures(failures []failure, offered []int) int {
	in := make(map[int]bool, len(offered))
	for _, r := range offered {
		in[r] = true
	}
	n := 0
	for _, f := range failures {
		if in[f.row] {
			n++
		}
	}
	return n
}

// recordFailures inserts the failed rows of a piece.
func (w *worker) recordFailures(ctx context.Context, tx pgx.Tx, pc piece, failures []failure) error {
	if len(failures) == 0 {
		return nil
	}
	keys := make([]string, len(failures))
	states := make([]*string, len(failures))
	columns := make([]*string, len(failures))
	messages := make([]string, len(failures))
	sources := make([]string, len(failures))
	for i, f := range failures {
		k, _ := json.Marshal(pc.chunk.Keys[f.row])
		keys[i] = string(k)
		if f.sqlstate != "" {
			states[i] = &failures[i].sqlstate
		}
		if f.column != "" {
			columns[i] = &failures[i].column
		}
		messages[i] = f.message
		sources[i] = w.sourceJSON(pc.chunk.Rows[f.row])
	}
	if _, err := tx.Exec(ctx, w.p.cfg.Checkpoint.RecordFailedRowsSQL(), w.p.cfg.Job, pc.last, keys, states, columns, messages, sources); err != nil {
		return fmt.Errorf("record %d failed rows of chunk %d: %w", len(failures), pc.chunk.Seq, err)
	}
	return nil
}

// sourceJSON renders a source row for failed_rows, so an operator can see
// what failed without querying the source.
func (w *worker) sourceJSON(row []any) string {
	m := make(map[string]any, len(row))
	for i, v := range row {
		if i >= len(w.p.cfg.SourceColumns) {
			break
		}
		c := w.p.cfg.SourceColumns[i]
		switch x := v.(type) {
		case string:
			if c.JSON && json.Valid([]byte(x)) {
				v = json.RawMessage(x)
			}
		case [16]byte:
			v = pgtype.UUID{Bytes: x, Valid: true}
		}
		m[c.Name] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"unrenderable": err.Error()})
	}
	return string(b)
}

// errNoTextForm is returned for a value that has no text form we can make.
var errNoTextForm = errors.New("no text form")

// textForm renders v as PostgreSQL's input function for col expects.
func (w *worker) textForm(col Column, v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	case json.RawMessage:
		return string(x), nil
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.String {
		return rv.String(), nil // a named string type, such as transform.JSON
	}
	if col.JSON {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode %T as JSON: %w", v, err)
		}
		return string(b), nil
	}
	if _, ok := w.types.TypeForOID(col.OID); ok {
		b, err := w.types.Encode(col.OID, pgtype.TextFormatCode, v, nil)
		if err != nil {
			return nil, fmt.Errorf("encode %T as %s: %w", v, col.Type, err)
		}
		if b == nil {
			return nil, nil
		}
		return string(b), nil
	}
	if s, ok := v.(fmt.Stringer); ok {
		return s.String(), nil
	}
	return nil, fmt.Errorf("%w for a %T in a %s column", errNoTextForm, v, col.Type)
}

// waitRows waits for n rows' worth of the limiter's tokens, in parts of at
// most its burst: a chunk sized by time, read while there was no cap, may
// be larger than the burst of a cap set since (WaitN refuses more than the
// burst under a finite limit), and the burst stays the fixed chunk size so
// that a cap lets no larger burst through.
func waitRows(ctx context.Context, lim *rate.Limiter, n int) error {
	for n > 0 {
		part := min(n, max(lim.Burst(), 1))
		if err := lim.WaitN(ctx, part); err != nil {
			return err
		}
		n -= part
	}
	return nil
}
