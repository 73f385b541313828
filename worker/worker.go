package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/chunk"
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
	Cast    string
	CastOID uint32
	OID     uint32
	// AsText sends the value as its text form, cast from text to Cast: for
	// values passed through as the source's text, json/jsonb (whose
	// decoding would lose their exact text), and the types pgx has no
	// binary form for. The other values go in Cast's binary form: the
	// source's own bytes for a value passed through raw
	// (*chunk.Raw), a Go value encoded by pgx.
	AsText bool
	JSON   bool
}

// KeyPart is a destination column that holds a part of the source's key,
// passed through unchanged.
type KeyPart struct {
	Name string
	Cast string
}

// SourceColumn names a source column, for the copy of a failed row.
type SourceColumn struct {
	Name string
	JSON bool   // the value is JSON text
	OID  uint32 // the type of its binary form, when it comes raw
}

// Checkpoint supplies the statements that record chunks and failed rows.
type Checkpoint interface {
	// Schema names the state schema, to tell its errors from the user's.
	Schema() string
	// IsFenced tells a commit refused because a newer runner took the job.
	IsFenced(err error) bool
	// CommitChunkSQL wraps an INSERT without parameters so one statement
	// writes the rows and the chunk's row.
	CommitChunkSQL(insert string) string
	// RecordChunkSQL records a chunk inside a transaction that wrote its rows.
	RecordChunkSQL() string
	// ChunkAfterSQL reads where the committed chunk ending at a key begins.
	ChunkAfterSQL() string
	// RecordFailedRowsSQL records failed rows.
	RecordFailedRowsSQL() string
}

// DB is the destination pool. Each worker holds one of its connections,
// where its stage lives, for as long as the connection works.
type DB interface {
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
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
	// Path is how the rows were written: PathDirect, PathStage or
	// PathIsolated (bisected for failing rows); "" when none was.
	Path string
	// Elapsed is how long the attempt that committed took, from the
	// transform to the commit's reply: what sizing chunks by time measures.
	Elapsed time.Duration
	// Transform and Write split the attempt's time: transforming the rows
	// and building their COPY stream, then the rest (the connection, the
	// COPY, the statements and the commit).
	Transform, Write time.Duration
	// EndsChunk says that the piece is its chunk's last (or the whole
	// chunk): once it commits, the chunk is done.
	EndsChunk bool
}

// Outcome is how one attempt at a chunk, or at a piece of one, ended.
type Outcome int

// The outcomes of an attempt, as Config.OnAttempt hears them.
const (
	Committed Outcome = iota // written and recorded
	Retried                  // failed, and will be tried again
	Split                    // timed out twice: halved, each half tried on its own
	GaveUp                   // failed for good: the error stops the workers
)

// The write paths of Result.Path.
const (
	PathDirect   = "direct"
	PathStage    = "stage"
	PathIsolated = "isolated"
)

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
	// DirectCopy lets a chunk whose key range holds no destination row (or,
	// probed by RangeKey, few, which it leaves out) be copied straight into
	// the table: every column goes in binary, and the table honours COPY as
	// it does INSERT (no rules, no row-level security). A chunk whose COPY
	// fails goes through the stage.
	DirectCopy bool
	// Straight, for a straight copy (chunks with Tuples), names for each
	// destination column the SourceColumns index it comes from, to show a
	// failed row's source values.
	Straight []int
	// RangeKey names the destination columns that hold the source's key,
	// under a unique index, for probing a chunk's range before a direct
	// COPY; without it every chunk tries the COPY.
	RangeKey []KeyPart
	// LeaveOutPresent lets a direct COPY leave out the rows whose keys the
	// range probe finds in the destination, counted as skipped: the
	// caller knows that no trigger changes a key before RangeKey's index
	// sees it, so a row of such a key would conflict. (It applies only to
	// keys whose text stands for their value; see KeysByText.) Without it
	// any row in the range sends the chunk through the stage.
	LeaveOutPresent bool
	Transformer     transform.Transformer
	Checkpoint      Checkpoint
	// Generation is the runner's, from claiming the job: every commit
	// carries it, and fails once a newer runner has raised it.
	Generation int64
	// Partition is the partition of a job spread over several runners
	// that the chunks belong to, 0 for a job of one runner; Generation is
	// then the token of the runner's lease on it.
	Partition int
	Workers   int
	// Limiter caps rows per second across all workers; nil means no cap.
	Limiter *rate.Limiter
	// Throttle, when set, is waited on before each chunk's commit, after
	// the limiter: it returns once production lets the job write (a
	// standby caught up, the load fell), or with ctx's error.
	Throttle     func(context.Context) error
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
	// OnAttempt, if set, hears how each attempt at a chunk or a piece of
	// one ended, with the attempt's Result (its durations; a committed
	// one's rows), from the worker's goroutine. An attempt cut short
	// because the workers are stopping is not an outcome.
	OnAttempt func(Outcome, Result)
	// OnRateWait, if set, hears how long a worker waited on Limiter
	// before it wrote a chunk.
	OnRateWait func(time.Duration)
}

// Pool is a set of workers.
type Pool struct {
	cfg    Config
	sql    statements
	failed atomic.Int64
	direct directPolicy
	// leaveOutPresent: a direct COPY may leave out the rows whose keys the
	// range probe lists (Config.LeaveOutPresent, for keys KeysByText)
	leaveOutPresent bool
	crew            crew
}

// directPolicy keeps chunks off the direct COPY for a while after several
// in a row fell back to the stage: a destination that already holds rows
// would otherwise have each chunk copied twice.
type directPolicy struct {
	fallbacks atomic.Int32 // direct COPYs that failed since the last that did not
	stageFor  atomic.Int64 // chunks still to go through the stage
	// noProbe is set once a range probe failed on other than a lost
	// connection (a privilege revoked while the job runs): the chunks then
	// try the COPY without it.
	noProbe atomic.Bool
}

const (
	// fallbacksBeforeRest direct COPYs failing in a row keep the next
	// restChunks chunks on the stage.
	fallbacksBeforeRest = 3
	restChunks          = 100
)

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
		if !c.AsText && c.CastOID == 0 {
			return nil, fmt.Errorf("destination column %q has no type OID to encode its values for", c.Name)
		}
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	p := &Pool{cfg: cfg, sql: buildStatements(cfg, cfg.Checkpoint.CommitChunkSQL), leaveOutPresent: cfg.LeaveOutPresent && KeysByText(cfg.RangeKey)}
	p.failed.Store(cfg.FailedRowsBefore)
	p.crew.target = cfg.Workers
	p.crew.log = func(workers int) { cfg.Logger.Info().Int("workers", workers).Msg("worker pool resized") }
	return p, nil
}

// Statements are the statements that write a chunk.
type Statements struct {
	CopyToStage string
	// Insert inserts the stage into the destination and records the chunk.
	Insert string
	// CopyDirect copies a chunk straight into the destination, when the
	// job may (Config.DirectCopy); empty otherwise.
	CopyDirect string
}

// SQL returns the statements that write a chunk.
func (p *Pool) SQL() Statements {
	st := Statements{CopyToStage: p.sql.copyStage, Insert: p.sql.commit}
	if p.cfg.DirectCopy {
		st.CopyDirect = p.sql.copyDest
	}
	return st
}

// Run starts cfg.Workers workers (or as many as the last Resize said) that
// take chunks from in until it is closed or ctx is cancelled; Resize
// changes their number while it runs. Cancelling ctx stops workers from
// taking chunks; chunks being written finish within DrainTimeout. The first
// error stops all workers and is returned.
func (p *Pool) Run(ctx context.Context, db DB, in <-chan *chunk.Chunk) error {
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stopDrainTimer := context.AfterFunc(ctx, func() { time.AfterFunc(p.cfg.DrainTimeout, cancelDrain) })
	defer stopDrainTimer()

	g, gctx := errgroup.WithContext(ctx)
	p.crew.start(in, func() { g.Go(func() error { return p.work(gctx, drainCtx, db, in) }) })
	err := g.Wait()
	p.crew.stop()
	return err
}

// errStopping is a worker's chunk left unwritten because the run stops.
var errStopping = errors.New("stopping")

// work is one worker of Run: it takes chunks until in is closed, ctx is
// cancelled, or the pool has more workers than its size, when it retires
// between two chunks and closes its connection.
func (p *Pool) work(ctx, drainCtx context.Context, db DB, in <-chan *chunk.Chunk) error {
	w := p.newWorker()
	retired := false
	defer func() {
		if retired {
			w.close()
		} else {
			w.release()
		}
		p.crew.leave(retired)
	}()
	for {
		var wake <-chan struct{}
		if wake, retired = p.crew.stay(); retired {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case c, ok := <-in:
			if !ok {
				return nil
			}
			var err error
			if w, err = p.write(ctx, drainCtx, db, w, c); err != nil {
				if errors.Is(err, errStopping) {
					return nil // the chunk is left for resume
				}
				return err
			}
		}
	}
}

// write waits for the limiter's tokens for a chunk, then commits it under
// drainCtx. It returns the worker to continue with (see commit).
func (p *Pool) write(ctx, drainCtx context.Context, db DB, w *worker, c *chunk.Chunk) (*worker, error) {
	p.crew.busy.Add(1)
	defer p.crew.busy.Add(-1)
	if lim := p.cfg.Limiter; lim != nil {
		began := time.Now()
		err := waitRows(ctx, lim, len(c.Rows))
		waited := time.Since(began)
		p.crew.waited.Add(int64(waited))
		if p.cfg.OnRateWait != nil {
			p.cfg.OnRateWait(waited)
		}
		if err != nil {
			if ctx.Err() != nil {
				return w, errStopping
			}
			return w, fmt.Errorf("rate limiter for chunk %d: %w", c.Seq, err)
		}
	}
	if wait := p.cfg.Throttle; wait != nil {
		// time held by production is not time a worker more would use
		began := time.Now()
		err := wait(ctx)
		p.crew.waited.Add(int64(time.Since(began)))
		if err != nil {
			if ctx.Err() != nil {
				return w, errStopping
			}
			return w, fmt.Errorf("throttle before chunk %d: %w", c.Seq, err)
		}
	}
	w, err := w.commit(drainCtx, db, piece{chunk: c, lo: 0, hi: len(c.Rows), after: c.After, last: c.Last})
	if err != nil {
		return w, err
	}
	c.Release() // written: its storage serves a later page
	return w, nil
}

// Forget is called, inside the transaction open on conn that re-wrote a
// group of previously failed rows, with what became of them; it updates
// the checkpoint to match.
type Forget func(ctx context.Context, conn *pgx.Conn, r checkpoint.Retried) error

// RetryFailed re-attempts rows recorded as failed that belong to one
// chunk (chunkLast): c holds those still in the source. Rows that still
// fail are recorded again with their new error; forget moves the others
// out of failed_rows, all in one transaction.
func (p *Pool) RetryFailed(ctx context.Context, db DB, c *chunk.Chunk, chunkLast []string, forget Forget) (Result, error) {
	var res Result
	pc := piece{chunk: c, lo: 0, hi: len(c.Rows), last: chunkLast, retried: forget, result: &res}
	w, err := p.newWorker().commit(ctx, db, pc)
	w.release()
	return res, err
}

// piece is the part of a chunk committed as one checkpoint row: the whole
// chunk, or half of one split after repeated timeouts. It covers the keys
// (after, last] and the chunk's rows [lo, hi).
type piece struct {
	chunk  *chunk.Chunk
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
	p    *Pool
	conn *pgxpool.Conn // nil until needed, and after it broke
	dst  []any
	cols [][]any // column-major transformed values of the rows that survived
	rows []int   // rows[i] is the chunk row of position i in cols
	// copy is the COPY stream of the rows in cols; numbered is the same
	// with the rows numbered, built when rows are isolated
	copy, numbered []byte
	// ends[i] is where row i of rows ends in copy
	ends []int
	// tuples are a straight copy's rows instead (cols is then unused), and
	// bufs the stream made of them
	tuples [][]byte
	bufs   net.Buffers
	types  *pgtype.Map
}

func (p *Pool) newWorker() *worker {
	n := len(p.cfg.Columns)
	return &worker{p: p, dst: make([]any, n), cols: make([][]any, n), types: pgtype.NewMap()}
}

// connect gives the worker a connection with its stage.
func (w *worker) connect(ctx context.Context, db DB) error {
	if w.conn != nil {
		return nil
	}
	conn, err := db.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect a worker to %s: %w", w.p.cfg.Table.Sanitize(), err)
	}
	if _, err := conn.Exec(ctx, w.p.sql.stage); err != nil {
		conn.Release()
		return fmt.Errorf("create the worker's stage for %s: %w", w.p.cfg.Table.Sanitize(), err)
	}
	w.conn = conn
	return nil
}

// release returns the connection, which the pool closes if it is broken or
// inside a transaction.
func (w *worker) release() {
	if w.conn != nil {
		w.conn.Release()
		w.conn = nil
	}
}

// close ends the worker's session, and its stage with it: a worker that
// retires leaves no idle connection behind, so the destination's sessions
// follow the pool's size.
func (w *worker) close() {
	if w.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
		defer cancel()
		_ = w.conn.Conn().Close(ctx) // the pool then destroys it on release
	}
	w.release()
}

// rollback ends the transaction an attempt left open; a connection that
// cannot is given up.
func (w *worker) rollback(ctx context.Context) {
	if w.conn == nil {
		return
	}
	if pc := w.conn.Conn().PgConn(); !pc.IsClosed() && pc.TxStatus() != 'I' {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		if _, err := w.conn.Exec(ctx, "ROLLBACK"); err != nil {
			pc.Close(ctx) //nolint:errcheck // giving it up
		}
	}
	if w.conn.Conn().IsClosed() {
		w.release()
	}
}

// rollbackTimeout bounds the ROLLBACK after a failed attempt.
const rollbackTimeout = 5 * time.Second

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
			w.tell(Committed, pc, res)
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
			w.tell(GaveUp, pc, res)
			return w, fmt.Errorf("%w: chunk %d not committed by superseded generation %d: %w", checkpoint.ErrFenced, pc.chunk.Seq, w.p.cfg.Generation, err)
		}
		if errors.Is(err, errPanic) {
			w.release()
			w = w.p.newWorker()
		}
		if alreadyCommitted(err, w.p.cfg.Checkpoint.Schema()) {
			same, checkErr := w.sameRangeCommitted(ctx, db, pc)
			switch {
			case checkErr != nil:
				err = checkErr // retried below if transient: the next attempt meets the same chunk
			case !same:
				w.tell(GaveUp, pc, res)
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
				w.tell(Split, pc, res)
				if w, err = w.commit(ctx, db, left); err != nil {
					return w, err
				}
				return w.commit(ctx, db, right)
			}
		}
		if kind != retry.Transient && kind != retry.Timeout {
			w.tell(GaveUp, pc, res)
			return w, err
		}
		if attempt > w.p.cfg.Retry.MaxRetries {
			w.tell(GaveUp, pc, res)
			return w, fmt.Errorf("%w (gave up after %d attempts; raise Job.MaxRetries or fix the cause, then resume)", err, attempt)
		}
		w.p.cfg.Logger.Warn().Err(err).Int64("seq", pc.chunk.Seq).Int("attempt", attempt).Msg("retrying chunk")
		w.tell(Retried, pc, res)
		if err := w.p.cfg.Retry.Wait(ctx, attempt); err != nil {
			return w, err
		}
	}
}

// tell reports how an attempt at pc ended to Config.OnAttempt. A retried
// group of failed rows is no chunk's attempt: the caller counts it.
func (w *worker) tell(o Outcome, pc piece, res Result) {
	if w.p.cfg.OnAttempt != nil && pc.retried == nil {
		w.p.cfg.OnAttempt(o, res)
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
	if err := w.connect(ctx, db); err != nil {
		return false, err
	}
	var after []string
	if err := w.conn.QueryRow(ctx, w.p.cfg.Checkpoint.ChunkAfterSQL(), w.p.cfg.Job, pc.last).Scan(&after); err != nil {
		w.rollback(ctx)
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
	res = Result{Seq: pc.chunk.Seq, Read: pc.hi - pc.lo, Last: pc.last, EndsChunk: pc.hi == len(pc.chunk.Rows)}
	began := time.Now()
	failures := w.transform(pc, &res)
	res.Transform = time.Since(began)
	defer func() { res.Write = time.Since(began) - res.Transform }()
	if err := w.connect(ctx, db); err != nil {
		return res, err
	}
	defer w.rollback(ctx)
	if len(failures) == 0 && pc.retried == nil {
		err = w.writeFast(ctx, db, pc, &res)
		// a fenced commit is refused as a whole, for no row's sake
		if retry.Classify(err) != retry.Data || w.p.cfg.Checkpoint.IsFenced(err) {
			return res, err
		}
		w.rollback(ctx)
		if err := w.connect(ctx, db); err != nil { // the rollback may have given the connection up
			return res, err
		}
	}
	return res, w.writeIsolating(ctx, pc, &res, failures)
}

// transform fills w.cols with the piece's rows that transform cleanly and
// returns the rows that do not.
func (w *worker) transform(pc piece, res *Result) []failure {
	for i := range w.cols {
		w.cols[i] = w.cols[i][:0] // the previous statement has returned
	}
	w.rows = w.rows[:0]
	res.Filtered = 0
	if pc.chunk.Tuples != nil {
		// a straight copy: the rows are written as the source sent them
		for r := pc.lo; r < pc.hi; r++ {
			w.rows = append(w.rows, r)
		}
		w.tuples = pc.chunk.Tuples[pc.lo:pc.hi]
		return nil
	}
	w.tuples = nil
	w.copy = append(w.copy[:0], copyHeader...)
	w.ends = w.ends[:0]
	var failures []failure
	for r := pc.lo; r < pc.hi; r++ {
		keep, err := w.p.cfg.Transformer.Apply(pc.chunk.Rows[r], w.dst)
		if err == nil && keep {
			err = w.toWireForm()
		}
		if err == nil && keep {
			mark := len(w.copy)
			if w.copy, err = w.appendRow(w.copy, w.dst, -1); err != nil {
				w.copy = w.copy[:mark]
			}
		}
		if err != nil {
			f := failure{row: r, message: err.Error()}
			var re *transform.RowError
			var ce *rowError
			switch {
			case errors.As(err, &re):
				f.column = re.Column
			case errors.As(err, &ce):
				f.column = ce.column
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
		w.ends = append(w.ends, len(w.copy))
	}
	w.copy = append(w.copy, copyTrailer...)
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

// writeFast writes the piece and its checkpoint row in one transaction:
// straight into the destination when its key range is empty and the job
// may, through the stage otherwise.
func (w *worker) writeFast(ctx context.Context, db DB, pc piece, res *Result) error {
	if len(w.rows) == 0 {
		// a step without a matching row, or a chunk all filtered: only its
		// record
		args := checkpoint.RecordChunkArgs(w.p.cfg.Job, w.record(pc, res, 0), 0, 0)
		if _, err := w.conn.Exec(ctx, w.p.cfg.Checkpoint.RecordChunkSQL(), args...); err != nil {
			return fmt.Errorf("record chunk %d (keys %v..%v), which writes no row: %w", pc.chunk.Seq, pc.after, pc.last, err)
		}
		return nil
	}
	if w.p.cfg.DirectCopy && w.p.direct.try() {
		done, err := w.writeDirect(ctx, pc, res)
		if done || err != nil {
			return err
		}
		w.rollback(ctx)
		if err := w.connect(ctx, db); err != nil { // the rollback may have given the connection up
			return err
		}
	}
	return w.writeStaged(ctx, pc, res)
}

// try says whether a chunk may try the direct COPY.
func (d *directPolicy) try() bool {
	for {
		n := d.stageFor.Load()
		if n <= 0 {
			return true
		}
		if d.stageFor.CompareAndSwap(n, n-1) {
			return false
		}
	}
}

// fellBack counts a direct COPY that failed, and says whether the chunks
// now keep to the stage for a while.
func (d *directPolicy) fellBack() bool {
	if d.fallbacks.Add(1) < fallbacksBeforeRest {
		return false
	}
	d.fallbacks.Store(0)
	d.stageFor.Store(restChunks)
	return true
}

// writeDirect copies the piece straight into the destination and records
// it, in one transaction, when the destination holds no row in its key
// range, or fewer than half the piece's rows, which the COPY leaves out and
// the record counts as skipped (what INSERT … ON CONFLICT DO NOTHING would
// do: the keys are under a unique index). done is false, with a nil error,
// when the piece must go through the stage instead: the range holds more
// rows, or rows the COPY may not leave out (see beginProbing), or the COPY
// failed on one (a row written meanwhile, a unique index the range probe
// cannot see, a value the column refuses). The transaction is then left for the caller to
// roll back; nothing of it commits.
func (w *worker) writeDirect(ctx context.Context, pc piece, res *Result) (done bool, err error) {
	conn := w.conn.Conn()
	present, err := w.beginProbing(ctx, pc)
	if err != nil {
		if errors.Is(err, errRangeHoldsRows) {
			return false, nil
		}
		return false, err
	}
	var rows io.Reader
	if len(present) == 0 {
		rows = w.stream()
	} else {
		rows = w.streamWithout(pc, present)
	}
	tag, err := conn.PgConn().CopyFrom(ctx, rows, w.p.sql.copyDest)
	if err != nil {
		var pgErr *pgconn.PgError
		if kind := retry.Classify(err); !errors.As(err, &pgErr) || kind == retry.Transient || kind == retry.Timeout {
			return false, fmt.Errorf("copy chunk %d (keys %v..%v) into %s: %w", pc.chunk.Seq, pc.after, pc.last, w.p.cfg.Table.Sanitize(), err)
		}
		rest := w.p.direct.fellBack()
		log := w.p.cfg.Logger.Debug()
		if rest {
			log = w.p.cfg.Logger.Info().Int("chunks", restChunks)
		}
		log.Int64("seq", pc.chunk.Seq).Str("sqlstate", pgErr.Code).Str("error", pgErr.Message).
			Msg(map[bool]string{false: "direct COPY failed: writing the chunk through the stage",
				true: "direct COPY failed several times in a row: the next chunks go through the stage"}[rest])
		return false, nil
	}
	w.p.direct.fallbacks.Store(0)
	res.Path = PathDirect
	written := len(w.rows)
	res.Inserted = int(tag.RowsAffected()) // a trigger may skip rows
	res.Skipped = written - res.Inserted
	args := checkpoint.RecordChunkArgs(w.p.cfg.Job, w.record(pc, res, written), res.Inserted, res.Skipped)
	if err := w.commitWith(ctx, nil, w.p.cfg.Checkpoint.RecordChunkSQL(), args); err != nil {
		return false, fmt.Errorf("record chunk %d (keys %v..%v) copied into %s: %w", pc.chunk.Seq, pc.after, pc.last, w.p.cfg.Table.Sanitize(), err)
	}
	return true, nil
}

// errRangeHoldsRows: the destination holds rows in the chunk's key range
// that the direct COPY cannot go around.
var errRangeHoldsRows = errors.New("the destination holds rows in the chunk's key range")

// beginProbing begins the chunk's transaction and, when the job can,
// probes the destination for rows in the chunk's key range, in the same
// round trip. It returns the keys of the rows found (keyText) when they
// are fewer than half the piece's rows (a key the piece does not have is
// no conflict of the COPY's); errRangeHoldsRows when there are more, or
// when the COPY may not leave rows out (Config.LeaveOutPresent) and there
// are any.
func (w *worker) beginProbing(ctx context.Context, pc piece) (map[string]struct{}, error) {
	probe := w.p.sql.probe[b2i(pc.after != nil)]
	if probe == "" || w.p.direct.noProbe.Load() {
		return nil, w.begin(ctx)
	}
	limit := 1 // any row in the range sends the piece through the stage
	if w.p.leaveOutPresent {
		limit = max((len(w.rows)+1)/2, 1) // as many as half the rows: the stage
	}
	var args []any
	for _, part := range pc.after {
		args = append(args, part)
	}
	for _, part := range pc.last {
		args = append(args, part)
	}
	args = append(args, limit)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(probe, args...)
	br := w.conn.SendBatch(ctx, b)
	_, err := br.Exec()
	var (
		present  map[string]struct{}
		returned int
	)
	if err == nil {
		present, returned, err = w.presentKeys(br, limit)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	var pgErr *pgconn.PgError
	switch kind := retry.Classify(err); {
	case err != nil && errors.As(err, &pgErr) && kind != retry.Transient && kind != retry.Timeout:
		if !w.p.direct.noProbe.Swap(true) {
			w.p.cfg.Logger.Warn().Err(err).Msg("probing chunks' key ranges failed: chunks try the direct COPY without a probe")
		}
		return nil, errRangeHoldsRows // this chunk through the stage: its transaction has failed
	case err != nil:
		return nil, fmt.Errorf("probe the key range of chunk %d in %s: %w", pc.chunk.Seq, w.p.cfg.Table.Sanitize(), err)
	case returned >= limit:
		return nil, errRangeHoldsRows // the range may hold more than the probe listed
	}
	return present, nil
}

// presentKeys reads the range probe's rows, at most limit, and returns
// the keys of those without a NULL part (which no source key equals) and
// how many rows came back.
func (w *worker) presentKeys(br pgx.BatchResults, limit int) (map[string]struct{}, int, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var present map[string]struct{}
	parts := make([]*string, len(w.p.cfg.RangeKey))
	dest := make([]any, len(parts))
	for i := range parts {
		dest[i] = &parts[i]
	}
	text := make([]string, len(parts))
	returned := 0
rows:
	for rows.Next() {
		returned++
		if err := rows.Scan(dest...); err != nil {
			return nil, returned, err
		}
		for i, p := range parts {
			if p == nil {
				continue rows
			}
			text[i] = *p
		}
		if present == nil {
			present = make(map[string]struct{}, limit)
		}
		present[keyText(text)] = struct{}{}
	}
	return present, returned, rows.Err()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (w *worker) begin(ctx context.Context) error {
	if _, err := w.conn.Exec(ctx, "BEGIN"); err != nil {
		return fmt.Errorf("begin a transaction on %s: %w", w.p.cfg.Table.Sanitize(), err)
	}
	return nil
}

// commitWith runs one last statement of the transaction, scanning its row
// into dest unless dest is nil, and commits, in one round trip.
func (w *worker) commitWith(ctx context.Context, dest *int, sql string, args []any) error {
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	b.Queue("COMMIT")
	br := w.conn.SendBatch(ctx, b)
	var err error
	if dest != nil {
		err = br.QueryRow().Scan(dest)
	} else {
		_, err = br.Exec()
	}
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyIn sends a COPY stream.
func (w *worker) copyIn(ctx context.Context, conn *pgx.Conn, sql string, data io.Reader, seq int64) error {
	if _, err := conn.PgConn().CopyFrom(ctx, data, sql); err != nil {
		return fmt.Errorf("copy chunk %d into the stage: %w", seq, err)
	}
	return nil
}

// writeStaged copies the piece into the stage, then inserts it into the
// destination and records the chunk in one statement, and commits.
func (w *worker) writeStaged(ctx context.Context, pc piece, res *Result) error {
	if err := w.begin(ctx); err != nil {
		return err
	}
	if err := w.copyIn(ctx, w.conn.Conn(), w.p.sql.copyStage, w.stream(), pc.chunk.Seq); err != nil {
		return err
	}
	written := len(w.rows)
	res.Path = PathStage
	args := checkpoint.CommitChunkArgs(w.p.cfg.Job, w.record(pc, res, written))
	if err := w.commitWith(ctx, &res.Inserted, w.p.sql.commit, args); err != nil {
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
		Generation: w.p.cfg.Generation, SplitLast: splitLast, Path: res.Path, Partition: w.p.cfg.Partition,
	}
}

// writeIsolating writes the piece in a transaction, bisecting the rows
// under savepoints until each row that fails on its data stands alone:
// O(k log n) statements for k bad rows among n. The good rows, the failed
// rows' records and the checkpoint row commit together.
func (w *worker) writeIsolating(ctx context.Context, pc piece, res *Result, failures []failure) error {
	if err := w.begin(ctx); err != nil {
		return fmt.Errorf("isolating chunk %d: %w", pc.chunk.Seq, err)
	}
	conn := w.conn.Conn()
	failures, err := w.isolate(ctx, conn, pc, res, failures)
	if err != nil {
		return err
	}
	res.Failed = len(failures)
	res.Path = PathIsolated
	written := len(w.rows)
	res.Skipped = written - res.Inserted - countWrittenFailures(failures, w.rows)

	if err := w.recordFailures(ctx, conn, pc, failures); err != nil {
		return err
	}
	if pc.retried != nil {
		r := checkpoint.Retried{StillFailing: make([][]string, len(failures)), Inserted: res.Inserted, Skipped: res.Skipped, Filtered: res.Filtered}
		for i, f := range failures {
			r.StillFailing[i] = pc.chunk.Keys[f.row]
		}
		if err := pc.retried(ctx, conn, r); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
			return fmt.Errorf("commit chunk %d: %w", pc.chunk.Seq, err)
		}
	} else {
		args := checkpoint.RecordChunkArgs(w.p.cfg.Job, w.record(pc, res, written), res.Inserted, res.Skipped)
		if err := w.commitWith(ctx, nil, w.p.cfg.Checkpoint.RecordChunkSQL(), args); err != nil {
			return fmt.Errorf("record chunk %d: %w", pc.chunk.Seq, err)
		}
	}
	if len(failures) > 0 {
		w.p.cfg.Logger.Warn().Int64("seq", pc.chunk.Seq).Int("failed_rows", len(failures)).
			Str("first_error", failures[0].message).Msg("rows failed; recorded in failed_rows")
		if total := w.p.failed.Add(int64(len(failures))); pc.retried == nil && w.p.cfg.MaxFailedRows > 0 && total > w.p.cfg.MaxFailedRows {
			return fmt.Errorf("%w: %d rows failed, more than Job.MaxFailedRows %d; the last: %s", ErrTooManyFailedRows, total, w.p.cfg.MaxFailedRows, failures[len(failures)-1].message)
		}
	}
	return nil
}

// isolate copies the transformed rows into the stage, numbered, and
// inserts them from it inside the transaction open on conn, bisecting
// under savepoints until each row that fails on its data stands alone. It
// returns the failures (those given plus those found); res.Inserted counts
// the rows written.
func (w *worker) isolate(ctx context.Context, conn *pgx.Conn, pc piece, res *Result, failures []failure) ([]failure, error) {
	res.Inserted = 0
	// a value the stage's type refuses (a character the destination's
	// encoding lacks) fails the COPY of every row with it: halve the
	// rows copied until each refused row stands alone, a failure, and
	// the others are staged
	err := w.halving(ctx, conn, pc, "stage", 0, len(w.rows), &failures, func(lo, hi int) error {
		data, err := w.copyRows(lo, hi)
		if err != nil {
			return fmt.Errorf("chunk %d: %w", pc.chunk.Seq, err)
		}
		if _, err := conn.Exec(ctx, "SAVEPOINT stage"); err != nil {
			return fmt.Errorf("savepoint in chunk %d: %w", pc.chunk.Seq, err)
		}
		if err := w.copyIn(ctx, conn, w.p.sql.copyRows, bytes.NewReader(data), pc.chunk.Seq); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "RELEASE SAVEPOINT stage"); err != nil {
			return fmt.Errorf("release savepoint in chunk %d: %w", pc.chunk.Seq, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = w.halving(ctx, conn, pc, "bisect", 0, len(w.rows), &failures, func(lo, hi int) error {
		b := &pgx.Batch{}
		b.Queue("SAVEPOINT bisect")
		b.Queue(w.p.sql.insertRange, lo, hi)
		b.Queue("RELEASE SAVEPOINT bisect")
		br := conn.SendBatch(ctx, b)
		var n int
		_, err := br.Exec()
		if err == nil {
			err = br.QueryRow().Scan(&n)
		}
		if err == nil {
			_, err = br.Exec()
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write rows of chunk %d: %w", pc.chunk.Seq, err)
		}
		res.Inserted += n
		return nil
	})
	if err != nil {
		return nil, err
	}
	return failures, nil
}

// halving runs try on the stage positions [lo, hi); try opens savepoint
// and releases it when it succeeds. A range that fails on its data is rolled
// back to the savepoint and halved, until each row that fails stands alone
// and is appended to failures: O(k log n) tries for k bad rows among n.
func (w *worker) halving(ctx context.Context, conn *pgx.Conn, pc piece, savepoint string, lo, hi int, failures *[]failure, try func(lo, hi int) error) error {
	if lo >= hi {
		return nil
	}
	err := try(lo, hi)
	if err == nil || retry.Classify(err) != retry.Data {
		return err
	}
	if _, rerr := conn.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); rerr != nil {
		return fmt.Errorf("roll back to savepoint in chunk %d: %w", pc.chunk.Seq, rerr)
	}
	if hi-lo == 1 {
		*failures = append(*failures, rowFailure(w.rows[lo], err))
		return nil
	}
	mid := lo + (hi-lo)/2
	if err := w.halving(ctx, conn, pc, savepoint, lo, mid, failures, try); err != nil {
		return err
	}
	return w.halving(ctx, conn, pc, savepoint, mid, hi, failures, try)
}

// rowFailure is chunk row's failure with err, which it met alone.
func rowFailure(row int, err error) failure {
	f := failure{row: row, message: err.Error()}
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
	return f
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
func (p *Pool) Rehearse(ctx context.Context, tx pgx.Tx, c *chunk.Chunk, previewRows int) (Rehearsal, error) {
	w := p.newWorker()
	pc := piece{chunk: c, lo: 0, hi: len(c.Rows), after: c.After, last: c.Last}
	reh := Rehearsal{Result: Result{Seq: c.Seq, Read: len(c.Rows), Last: c.Last}}
	failures := w.transform(pc, &reh.Result)
	oids := make([]uint32, len(p.cfg.Columns))
	for i, c := range p.cfg.Columns {
		oids[i] = c.CastOID
	}
	for r := 0; r < min(previewRows, len(w.rows)); r++ {
		row := make([]any, len(p.cfg.Columns))
		for i := range row {
			if w.tuples != nil {
				row[i] = rawField(tupleFields(w.tuples[r])[i])
			} else {
				row[i] = w.cols[i][r]
			}
		}
		reh.Preview = append(reh.Preview, row)
	}
	if err := asText(ctx, tx.Conn().PgConn(), reh.Preview, oids); err != nil {
		return reh, fmt.Errorf("preview chunk %d: %w", c.Seq, err)
	}
	for _, row := range reh.Preview {
		for i, v := range row {
			row[i] = w.readable(oids[i], v)
		}
	}
	// the stage lives in tx, and is emptied for each chunk the dry run's
	// one transaction rehearses
	for _, sql := range []string{p.sql.stage, p.sql.clearStage} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return reh, fmt.Errorf("prepare the stage for chunk %d: %w", c.Seq, err)
		}
	}
	failures, err := w.isolate(ctx, tx.Conn(), pc, &reh.Result, failures)
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

// readable decodes a value passed through raw, for a person to read: a
// failed row's copy, a dry run's preview. Bytes it cannot decode stay
// bytes.
func (w *worker) readable(oid uint32, v any) any {
	raw, ok := v.(*chunk.Raw)
	if !ok {
		return v
	}
	if t, ok := w.types.TypeForOID(oid); ok {
		if dv, err := t.Codec.DecodeValue(w.types, oid, pgtype.BinaryFormatCode, *raw); err == nil {
			return dv
		}
	}
	return []byte(*raw)
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
func (w *worker) recordFailures(ctx context.Context, conn *pgx.Conn, pc piece, failures []failure) error {
	if len(failures) == 0 {
		return nil
	}
	keys := make([]string, len(failures))
	states := make([]*string, len(failures))
	columns := make([]*string, len(failures))
	messages := make([]string, len(failures))
	sources := make([]string, len(failures))
	rows := make([][]any, len(failures))
	oids := make([]uint32, len(w.p.cfg.SourceColumns))
	for i, c := range w.p.cfg.SourceColumns {
		oids[i] = c.OID
	}
	for i, f := range failures {
		row := w.sourceRow(pc.chunk, f.row)
		rows[i] = slices.Clone(row[:min(len(row), len(oids))])
	}
	if err := asText(ctx, conn.PgConn(), rows, oids); err != nil {
		return fmt.Errorf("record %d failed rows of chunk %d: %w", len(failures), pc.chunk.Seq, err)
	}
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
		sources[i] = w.sourceJSON(rows[i])
	}
	if _, err := conn.Exec(ctx, w.p.cfg.Checkpoint.RecordFailedRowsSQL(), w.p.cfg.Job, pc.last, keys, states, columns, messages, sources); err != nil {
		return fmt.Errorf("record %d failed rows of chunk %d: %w", len(failures), pc.chunk.Seq, err)
	}
	return nil
}

// sourceRow returns row r of c as the source's values, in the order of
// SourceColumns: a straight copy's tuple taken apart again.
func (w *worker) sourceRow(c *chunk.Chunk, r int) []any {
	if c.Tuples == nil {
		return c.Rows[r]
	}
	row := make([]any, len(w.p.cfg.SourceColumns))
	for i, f := range tupleFields(c.Tuples[r]) {
		if i < len(w.p.cfg.Straight) && w.p.cfg.Straight[i] < len(row) {
			row[w.p.cfg.Straight[i]] = rawField(f)
		}
	}
	return row
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
		v = w.readable(c.OID, v)
		switch x := v.(type) {
		case string:
			if c.JSON && json.Valid([]byte(x)) {
				v = json.RawMessage(x)
			}
		case [16]byte:
			v = pgtype.UUID{Bytes: x, Valid: true}
		}
		m[c.Name] = jsonValue(v)
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

// CopyStreamBuilder returns what a worker does to a chunk before it
// writes it: transform it and build its COPY stream, whose size it
// returns. For measuring the client's cost of a chunk without a server;
// the builder is one worker's, for one goroutine.
func (p *Pool) CopyStreamBuilder() func(c *chunk.Chunk) (int, error) {
	w := p.newWorker()
	return func(c *chunk.Chunk) (int, error) {
		var res Result
		if failures := w.transform(piece{chunk: c, lo: 0, hi: len(c.Rows)}, &res); len(failures) > 0 {
			return 0, fmt.Errorf("chunk %d: %d rows failed, the first: %s", c.Seq, len(failures), failures[0].message)
		}
		if w.tuples != nil {
			n, err := io.Copy(io.Discard, w.stream())
			return int(n), err
		}
		return len(w.copy), nil
	}
}

// rateWaitPart is the longest one reservation of a chunk's tokens waits at
// the limit of its time: a limit raised meanwhile (--rate auto doubling,
// an operator's set --rate) holds from the next part on.
const rateWaitPart = 100 * time.Millisecond

// waitRows waits for n rows' worth of the limiter's tokens, in parts of at
// most its burst and of at most rateWaitPart's worth of its limit. A
// chunk sized by time, read while there was no cap, may be larger than the
// burst of a cap set since (WaitN refuses more than the burst under a
// finite limit), and the burst stays the fixed chunk size so that a cap
// lets no larger burst through. And a reservation's wait is fixed when it
// is made: 50,000 rows reserved at 1,000 rows/s would wait 50 s however
// far the limit rose a second later.
func waitRows(ctx context.Context, lim *rate.Limiter, n int) error {
	for n > 0 {
		part := min(n, max(lim.Burst(), 1))
		if limit := lim.Limit(); limit != rate.Inf {
			part = min(part, max(1, int(float64(limit)*rateWaitPart.Seconds())))
		}
		if err := lim.WaitN(ctx, part); err != nil {
			if ctx.Err() == nil && part > lim.Burst() {
				continue // the burst shrank since it was read (a cut of --rate auto): smaller parts
			}
			return err
		}
		n -= part
	}
	return nil
}
