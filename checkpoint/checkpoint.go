package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	bfsql "github.com/backfill/backfill/sql"
)

// DefaultSchema is the state schema's default name.
const DefaultSchema = "backfill"

// Job states, as stored and as status reports them.
const (
	StateRunning     = "running"
	StatePaused      = "paused"
	StateInterrupted = "interrupted"
	StateFailed      = "failed"
	StateDone        = "done"
)

// ErrJobNotFound is returned (wrapped) for a job that has no row.
var ErrJobNotFound = errors.New("job not found")

// ErrFenced is returned (wrapped) for a write by a runner whose generation
// a newer runner of the job has superseded: the write did not happen.
var ErrFenced = errors.New("a newer runner has taken the job over")

// undefinedColumn is the SQLSTATE of a statement naming a column a state
// schema older than the statement lacks.
const undefinedColumn = "42703"

// fencedCode is the SQLSTATE the state schema's fence raises (sql/schema.sql,
// migration 3).
const fencedCode = "BF001"

// IsFenced reports whether err is the fence of this store's state schema
// refusing a superseded runner's chunk: not a data error (bisecting the
// chunk cannot help) and not transient (retrying cannot either).
func (s *Store) IsFenced(err error) bool {
	if errors.Is(err, ErrFenced) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == fencedCode && pgErr.SchemaName == s.schema
}

// Querier is a connection, pool or transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Beginner starts transactions; Migrate needs one.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Store reads and writes one state schema.
type Store struct {
	schema string
	stmts  *bfsql.Statements
}

// New returns the store for the named state schema.
func New(schema string) (*Store, error) {
	if schema == "" {
		schema = DefaultSchema
	}
	stmts, err := bfsql.For(pgx.Identifier{schema}.Sanitize())
	if err != nil {
		return nil, err
	}
	return &Store{schema: schema, stmts: stmts}, nil
}

// Schema returns the state schema's name.
func (s *Store) Schema() string { return s.schema }

// Job is a job's row.
type Job struct {
	Name          string
	Spec          json.RawMessage
	State         string
	Rate          float64
	Workers       int
	RowsEstimated int64
	UpperKey      []string
	StartedAt     time.Time
	UpdatedAt     time.Time
	FinishedAt    *time.Time
	LastError     *string
	RunnerHost    *string
	RunnerPID     *int32
	HeartbeatAt   *time.Time
	// AutoRateMax is nil for a fixed Rate; else the job runs with --rate
	// auto under this ceiling (0: none), and Rate is the rate auto chose
	// last.
	AutoRateMax *float64
	// ThrottleRequested is an operator's throttle by hand (SetThrottle).
	ThrottleRequested bool
	// Throttled and ThrottleReason say what the runner waits for, while
	// it runs.
	Throttled      bool
	ThrottleReason *string
}

// Exists reports whether the state schema has been created.
func (s *Store) Exists(ctx context.Context, q Querier) (bool, error) {
	var oid *uint32
	name := pgx.Identifier{s.schema, "jobs"}.Sanitize()
	if err := q.QueryRow(ctx, bfsql.Static(bfsql.RelationOID), name).Scan(&oid); err != nil {
		return false, fmt.Errorf("look for state table %s: %w", name, err)
	}
	return oid != nil, nil
}

// Migrate creates the state schema or brings it to the newest version. It
// runs in one transaction under an advisory lock, so concurrent runners
// migrate once.
func (s *Store) Migrate(ctx context.Context, db Beginner) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate state schema %q: %w", s.schema, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, bfsql.Static(bfsql.MigrateLock)); err != nil {
		return fmt.Errorf("migrate state schema %q (%s): %w", s.schema, bfsql.MigrateLock, err)
	}
	for _, name := range []bfsql.Name{bfsql.CreateSchema, bfsql.CreateVersionTable} {
		if _, err := tx.Exec(ctx, s.stmts.Get(name)); err != nil {
			return fmt.Errorf("migrate state schema %q (%s): %w", s.schema, name, err)
		}
	}
	var version int
	if err := tx.QueryRow(ctx, s.stmts.Get(bfsql.GetVersion)).Scan(&version); err != nil {
		return fmt.Errorf("read version of state schema %q: %w", s.schema, err)
	}
	for _, m := range s.stmts.Migrations() {
		if m.Version <= version {
			continue
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("migrate state schema %q to version %d: %w", s.schema, m.Version, err)
		}
		if _, err := tx.Exec(ctx, s.stmts.Get(bfsql.SetVersion), m.Version); err != nil {
			return fmt.Errorf("record state schema %q version %d: %w", s.schema, m.Version, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit migration of state schema %q: %w", s.schema, err)
	}
	return nil
}

func scanJob(row pgx.Row) (Job, error) {
	var j Job
	err := row.Scan(&j.Name, &j.Spec, &j.State, &j.Rate, &j.Workers, &j.RowsEstimated, &j.UpperKey,
		&j.StartedAt, &j.UpdatedAt, &j.FinishedAt, &j.LastError, &j.RunnerHost, &j.RunnerPID, &j.HeartbeatAt,
		&j.AutoRateMax, &j.ThrottleRequested, &j.Throttled, &j.ThrottleReason)
	return j, err
}

// Job reads one job. A missing job, or a missing state schema, returns an
// error wrapping ErrJobNotFound.
func (s *Store) Job(ctx context.Context, q Querier, name string) (*Job, error) {
	exists, err := s.Exists(ctx, q)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, fmt.Errorf("job %q: %w (no state schema %q in this database)", name, ErrJobNotFound, s.schema)
	}
	j, err := scanJob(q.QueryRow(ctx, s.stmts.Get(bfsql.JobGet), name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("job %q: %w in state schema %q", name, ErrJobNotFound, s.schema)
	}
	if err != nil {
		return nil, fmt.Errorf("read job %q: %w", name, err)
	}
	return &j, nil
}

// Jobs lists every job, oldest first; none when the schema does not exist.
func (s *Store) Jobs(ctx context.Context, q Querier) ([]Job, error) {
	exists, err := s.Exists(ctx, q)
	if err != nil || !exists {
		return nil, err
	}
	rows, err := q.Query(ctx, s.stmts.Get(bfsql.JobList))
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Job, error) { return scanJob(r) })
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// NewJob is what CreateJob records.
type NewJob struct {
	Name          string
	Spec          json.RawMessage
	Rate          float64
	Workers       int
	RowsEstimated int64
	UpperKey      []string
	Host          string
	PID           int
	StartedAt     time.Time
}

// CreateJob inserts a job in state running and returns its runner's
// generation.
func (s *Store) CreateJob(ctx context.Context, q Querier, j NewJob) (int64, error) {
	var gen int64
	err := q.QueryRow(ctx, s.stmts.Get(bfsql.JobCreate), j.Name, j.Spec, j.Rate, j.Workers, j.RowsEstimated, j.UpperKey, j.Host, j.PID, j.StartedAt).Scan(&gen)
	if err != nil {
		return 0, fmt.Errorf("create job %q: %w", j.Name, err)
	}
	return gen, nil
}

// ClaimJob marks an existing job running under this runner, which must hold
// the job's runner lock, and returns the runner's new generation. Every
// commit of an earlier generation fails from then on; the claim waits for
// those in flight, so what the caller reads of the checkpoint afterwards
// includes them, and it reads the next seq only then.
func (s *Store) ClaimJob(ctx context.Context, q Querier, name string, rate float64, workers int, host string, pid int) (int64, error) {
	var gen int64
	if err := q.QueryRow(ctx, s.stmts.Get(bfsql.JobClaim), name, rate, workers, host, pid).Scan(&gen); err != nil {
		return 0, fmt.Errorf("claim job %q: %w", name, err)
	}
	return gen, nil
}

// ReclaimJob takes the job again for a runner of generation gen that lost
// its lock's session and took the lock again, and returns its new
// generation; ErrFenced when another runner took the job meanwhile.
func (s *Store) ReclaimJob(ctx context.Context, q Querier, name string, gen int64) (int64, error) {
	var next int64
	err := q.QueryRow(ctx, s.stmts.Get(bfsql.JobReclaim), name, gen).Scan(&next)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("job %q, generation %d: %w", name, gen, ErrFenced)
	}
	if err != nil {
		return 0, fmt.Errorf("claim job %q again: %w", name, err)
	}
	return next, nil
}

// Requests is what an operator asked of a running job, read with each
// heartbeat.
type Requests struct {
	Rate  float64 // rows per second; 0 means no cap
	Pause bool
	// AutoRate says the rate is still --rate auto's to set: an operator's
	// SetRate ends that.
	AutoRate bool
}

// Heartbeat records that the runner of generation gen is alive and returns
// the operator's current requests; ErrFenced once a newer runner has taken
// the job.
func (s *Store) Heartbeat(ctx context.Context, q Querier, name string, gen int64) (Requests, error) {
	var r Requests
	err := q.QueryRow(ctx, s.stmts.Get(bfsql.JobHeartbeat), name, gen).Scan(&r.Rate, &r.Pause, &r.AutoRate)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, fmt.Errorf("heartbeat of job %q, generation %d: %w", name, gen, ErrFenced)
	}
	if err != nil {
		return r, fmt.Errorf("heartbeat of job %q: %w", name, err)
	}
	return r, nil
}

// SetRate changes a job's rate cap (0: none), fixed from then on even if
// it was --rate auto's; a running job picks it up at its next heartbeat,
// a stopped one when resumed. It returns the job's state.
func (s *Store) SetRate(ctx context.Context, q Querier, name string, rate float64) (string, error) {
	return s.setTuning(ctx, q, bfsql.JobSetRate, "rate", name, rate)
}

// SetThrottleRequest switches an operator's throttle of the job by hand on
// or off; a running job's throttle reads it within a second. It returns
// the job's state.
func (s *Store) SetThrottleRequest(ctx context.Context, q Querier, name string, on bool) (string, error) {
	return s.setTuning(ctx, q, bfsql.JobSetThrottleRequest, "throttle by hand", name, on)
}

// SetWorkers changes a job's worker count; a running job's runner resizes
// its pool to it at its next heartbeat (SyncWorkers), a stopped one starts
// with it when resumed. It returns the job's state.
func (s *Store) SetWorkers(ctx context.Context, q Querier, name string, workers int) (string, error) {
	return s.setTuning(ctx, q, bfsql.JobSetWorkers, "worker count", name, workers)
}

// setTuning runs an operator's change to one of a job's tunings, and
// returns the job's state.
func (s *Store) setTuning(ctx context.Context, q Querier, stmt bfsql.Name, what, name string, value any) (string, error) {
	var state string
	err := q.QueryRow(ctx, s.stmts.Get(stmt), name, value).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("job %q: %w", name, ErrJobNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("set the %s of job %q: %w", what, name, err)
	}
	return state, nil
}

// SyncWorkers stores the pool size of the runner of generation gen,
// unless an operator has set another count (SetWorkers) since the runner
// last saw the row hold seen: it returns the count the row holds after,
// size when stored, the operator's otherwise. ErrFenced once a newer
// runner has taken the job.
func (s *Store) SyncWorkers(ctx context.Context, q Querier, name string, gen int64, seen, size int) (int, error) {
	var stored *int
	if err := q.QueryRow(ctx, s.stmts.Get(bfsql.JobSyncWorkers), name, gen, seen, size).Scan(&stored); err != nil {
		return 0, fmt.Errorf("store the worker count of job %q: %w", name, err)
	}
	if stored == nil {
		return 0, fmt.Errorf("store the worker count of job %q, generation %d: %w", name, gen, ErrFenced)
	}
	return *stored, nil
}

// ThrottleRequested reads whether an operator throttles the job by hand;
// false for a job that has no row.
func (s *Store) ThrottleRequested(ctx context.Context, q Querier, name string) (bool, error) {
	var on bool
	if err := q.QueryRow(ctx, s.stmts.Get(bfsql.JobThrottleRequested), name).Scan(&on); err != nil {
		return false, fmt.Errorf("read the throttle by hand of job %q: %w", name, err)
	}
	return on, nil
}

// SetRateMode records, for the runner of generation gen, whether the job's
// rate is fixed (autoMax nil) or --rate auto's under the ceiling *autoMax
// (0: none).
func (s *Store) SetRateMode(ctx context.Context, q Querier, name string, gen int64, autoMax *float64) error {
	return s.runnerWrite(ctx, q, bfsql.JobSetRateMode, "record the rate mode of", name, gen, autoMax)
}

// RecordAutoRate records the rate --rate auto chose, so that status shows
// it; nothing once an operator has fixed the rate (SetRate).
func (s *Store) RecordAutoRate(ctx context.Context, q Querier, name string, gen int64, rate float64) error {
	_, err := q.Exec(ctx, s.stmts.Get(bfsql.JobRecordAutoRate), name, gen, rate)
	if err != nil {
		return fmt.Errorf("record the rate of job %q: %w", name, err)
	}
	return nil
}

// SetThrottled records what the runner of generation gen waits for:
// reason "" when it waits for nothing.
func (s *Store) SetThrottled(ctx context.Context, q Querier, name string, gen int64, reason string) error {
	var text *string
	if reason != "" {
		text = &reason
	}
	return s.runnerWrite(ctx, q, bfsql.JobSetThrottled, "record the throttle of", name, gen, reason != "", text)
}

// runnerWrite runs a write of the runner of generation gen to its job's
// row; ErrFenced, writing nothing, once a newer runner has the job.
func (s *Store) runnerWrite(ctx context.Context, q Querier, stmt bfsql.Name, what, name string, gen int64, args ...any) error {
	tag, err := q.Exec(ctx, s.stmts.Get(stmt), append([]any{name, gen}, args...)...)
	if err != nil {
		return fmt.Errorf("%s job %q: %w", what, name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s job %q as generation %d: %w", what, name, gen, ErrFenced)
	}
	return nil
}

// RequestPause asks a running job's runner to stop after its in-flight
// chunks and record the job as paused. It reports false when the job is
// not running.
func (s *Store) RequestPause(ctx context.Context, q Querier, name string) (bool, error) {
	tag, err := q.Exec(ctx, s.stmts.Get(bfsql.JobRequestPause), name)
	if err != nil {
		return false, fmt.Errorf("request a pause of job %q: %w", name, err)
	}
	return tag.RowsAffected() == 1, nil
}

// SetState records the new state and last error ("" clears it) of a job
// that the runner of generation gen still owns; ErrFenced, writing
// nothing, when a newer runner has taken it.
func (s *Store) SetState(ctx context.Context, q Querier, name string, gen int64, state, lastError string) error {
	var errText *string
	if lastError != "" {
		errText = &lastError
	}
	tag, err := q.Exec(ctx, s.stmts.Get(bfsql.JobSetState), name, gen, state, errText)
	if err != nil {
		return fmt.Errorf("set job %q to %s: %w", name, state, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set job %q to %s as generation %d: %w", name, state, gen, ErrFenced)
	}
	return nil
}

// Counters are a job's totals, summed over its committed chunks.
type Counters struct {
	ChunksDone   int64
	RowsRead     int64
	RowsFiltered int64
	RowsFailed   int64
	RowsInserted int64
	RowsSkipped  int64
	LastKey      []string // last key of the most recent chunk
	// The chunk records (a split chunk's pieces each count) by how their
	// rows were written; those that wrote none are in neither.
	ChunksDirect, ChunksStaged, ChunksIsolated int64
}

// Counters sums the job's chunk rows.
func (s *Store) Counters(ctx context.Context, q Querier, name string) (Counters, error) {
	var c Counters
	err := q.QueryRow(ctx, s.stmts.Get(bfsql.JobCounters), name).Scan(
		&c.ChunksDone, &c.RowsRead, &c.RowsFiltered, &c.RowsFailed, &c.RowsInserted, &c.RowsSkipped, &c.LastKey,
		&c.ChunksDirect, &c.ChunksStaged, &c.ChunksIsolated)
	if err != nil {
		return c, fmt.Errorf("sum counters of job %q: %w", name, err)
	}
	return c, nil
}

// Range is a committed chunk's key range (After, Last].
type Range struct {
	After []string
	Last  []string
	Seq   int64
	// SplitLast is, for a piece of a chunk split after timeouts, the last
	// key of the whole chunk; nil for a whole chunk.
	SplitLast []string
}

// Committed returns the key ranges of the job's committed chunks, every
// one, and the highest sequence id used. A resume reads ResumeState
// instead, which does not hold a range per chunk.
func (s *Store) Committed(ctx context.Context, q Querier, name string) ([]Range, int64, error) {
	out, err := s.ranges(ctx, q, bfsql.ChunkRanges, name)
	var maxSeq int64
	for _, r := range out {
		maxSeq = max(maxSeq, r.Seq)
	}
	return out, maxSeq, err
}

// ranges reads committed ranges with the named statement.
func (s *Store) ranges(ctx context.Context, q Querier, stmt bfsql.Name, name string) ([]Range, error) {
	rows, err := q.Query(ctx, s.stmts.Get(stmt), name)
	if err != nil {
		return nil, fmt.Errorf("read committed chunks of job %q: %w", name, err)
	}
	var out []Range
	var r Range
	_, err = pgx.ForEachRow(rows, []any{&r.Seq, &r.After, &r.Last, &r.SplitLast}, func() error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read committed chunks of job %q: %w", name, err)
	}
	return out, nil
}

// Bound is a key where the coverage of the committed chunks changes:
// Delta more chunks begin after Key than end at it (negative: fewer).
type Bound struct {
	Key   []string // nil: the start of the table
	Delta int64
}

// Resume is what a resume needs of the committed chunks: the bounds of
// the runs they chain into, every piece of the chunks that were split,
// and the highest sequence id used. However many chunks a job committed,
// it holds about two bounds for each gap between them.
type Resume struct {
	Bounds []Bound
	Split  []Range
	MaxSeq int64
}

// ResumeState reads what a resume needs of the job's committed chunks
// without reading every chunk: the destination sums their bounds. A
// runner reads it after ClaimJob, so that no commit of an earlier runner
// can follow.
func (s *Store) ResumeState(ctx context.Context, q Querier, name string) (Resume, error) {
	var res Resume
	rows, err := q.Query(ctx, s.stmts.Get(bfsql.ChunkBounds), name)
	if err != nil {
		return res, fmt.Errorf("read the bounds of job %q's committed chunks: %w", name, err)
	}
	var b Bound
	_, err = pgx.ForEachRow(rows, []any{&b.Key, &b.Delta}, func() error {
		res.Bounds = append(res.Bounds, b)
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("read the bounds of job %q's committed chunks: %w", name, err)
	}
	if res.Split, err = s.ranges(ctx, q, bfsql.ChunkSplitPieces, name); err != nil {
		return res, err
	}
	if err := q.QueryRow(ctx, s.stmts.Get(bfsql.ChunkMaxSeq), name).Scan(&res.MaxSeq); err != nil {
		return res, fmt.Errorf("read the last seq of job %q: %w", name, err)
	}
	return res, nil
}

func (s *Store) lockKey(job string) string { return "backfill:" + s.schema + ":" + job }

// TryLock takes the job's session advisory lock on conn, which must stay
// open for the runner's whole life: the lock dies with the session, so a
// killed runner never leaves a job locked.
func (s *Store) TryLock(ctx context.Context, conn Querier, job string) (bool, error) {
	var ok bool
	if err := conn.QueryRow(ctx, bfsql.Static(bfsql.TryLock), s.lockKey(job)).Scan(&ok); err != nil {
		return false, fmt.Errorf("take runner lock of job %q: %w", job, err)
	}
	return ok, nil
}

// Unlock releases the lock TryLock took on the same session.
func (s *Store) Unlock(ctx context.Context, conn Querier, job string) error {
	if _, err := conn.Exec(ctx, bfsql.Static(bfsql.Unlock), s.lockKey(job)); err != nil {
		return fmt.Errorf("release runner lock of job %q: %w", job, err)
	}
	return nil
}

// Locked reports whether some session holds the job's runner lock: a job
// whose row says running but whose lock nobody holds has lost its runner.
func (s *Store) Locked(ctx context.Context, q Querier, job string) (bool, error) {
	var held bool
	if err := q.QueryRow(ctx, bfsql.Static(bfsql.LockHeld), s.lockKey(job)).Scan(&held); err != nil {
		return false, fmt.Errorf("check runner lock of job %q: %w", job, err)
	}
	return held, nil
}

// LockHolder describes the session that holds the job's lock, for the
// message that refuses a second runner.
func (s *Store) LockHolder(ctx context.Context, q Querier, job string) string {
	var pid int32
	var addr, app string
	err := q.QueryRow(ctx, bfsql.Static(bfsql.LockHolder), s.lockKey(job)).Scan(&pid, &addr, &app)
	if err != nil {
		return "another session"
	}
	return fmt.Sprintf("database backend pid %d (client %s, application_name %q)", pid, addr, app)
}

// ChunkRecord is the checkpoint row of one chunk.
type ChunkRecord struct {
	Seq          int64
	After        []string
	First        []string // nil for a step of a filtered job with no matching row
	Last         []string
	RowsRead     int
	RowsFiltered int
	RowsFailed   int
	RowsWritten  int // rows offered to the INSERT; those not inserted were skipped on conflict
	// Generation is the committing runner's (ClaimJob): the fence refuses
	// the commit once it is superseded.
	Generation int64
	// SplitLast is, for a piece of a split chunk, the whole chunk's last key.
	SplitLast []string
	// Path is how the rows were written ("direct", "stage", "isolated"),
	// "" when none was.
	Path string
	// Partition is the partition the chunk belongs to, 0 for a job of one
	// runner; Generation is then the partition's token (ClaimPartition).
	Partition int
}

// ChunkParams is the number of parameters CommitChunkSQL reserves before the
// INSERT's own, if it has any: they start at $ChunkParams+1.
const ChunkParams = 13

// CommitChunkSQL wraps insert (an INSERT … ON CONFLICT DO NOTHING without a
// RETURNING clause) so that one statement writes the rows and the chunk row.
func (s *Store) CommitChunkSQL(insert string) string {
	return strings.Replace(s.stmts.Get(bfsql.CommitChunk), "{{insert}}", insert, 1)
}

// CommitChunkArgs returns the arguments of the statement.
func CommitChunkArgs(job string, c ChunkRecord) []any {
	return []any{job, c.Seq, c.After, c.First, c.Last, c.RowsRead, c.RowsFiltered, c.RowsFailed, c.RowsWritten, c.Generation, c.SplitLast, nullIfEmpty(c.Path), nullIfZero(c.Partition)}
}

// nullIfEmpty is s, or SQL NULL for "".
func nullIfEmpty(s string) *string { return nullIfZero(s) }

// nullIfZero is v, or SQL NULL for v's zero value.
func nullIfZero[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

// RecordChunkSQL records a chunk whose rows a transaction has written; its
// arguments are RecordChunkArgs.
func (s *Store) RecordChunkSQL() string { return s.stmts.Get(bfsql.RecordChunk) }

// RecordChunkArgs returns the arguments of RecordChunkSQL: the chunk, and of
// the rows offered (RowsWritten is not used) those inserted and skipped.
func RecordChunkArgs(job string, c ChunkRecord, inserted, skipped int) []any {
	return []any{job, c.Seq, c.After, c.First, c.Last, c.RowsRead, c.RowsFiltered, c.RowsFailed, inserted, skipped, c.Generation, c.SplitLast, nullIfEmpty(c.Path), nullIfZero(c.Partition)}
}

// ChunkAfterSQL reads where the committed chunk of job $1 that ends at key
// $2 begins.
func (s *Store) ChunkAfterSQL() string { return s.stmts.Get(bfsql.ChunkAfter) }

// RecordFailedRowsSQL records failed rows: job, the chunk's last key, then
// arrays of keys (JSON), SQLSTATEs, columns, messages and source rows (JSON).
func (s *Store) RecordFailedRowsSQL() string { return s.stmts.Get(bfsql.RecordFailedRows) }

// FailedGroup is the failed rows of one chunk.
type FailedGroup struct {
	ChunkLast []string
	Keys      [][]string
}

// FailedRows returns the job's failed rows grouped by chunk.
func (s *Store) FailedRows(ctx context.Context, q Querier, job string) ([]FailedGroup, error) {
	rows, err := q.Query(ctx, s.stmts.Get(bfsql.FailedRows), job)
	if err != nil {
		return nil, fmt.Errorf("read failed rows of job %q: %w", job, err)
	}
	defer rows.Close()
	var groups []FailedGroup
	for rows.Next() {
		var last, key []string
		if err := rows.Scan(&last, &key); err != nil {
			return nil, fmt.Errorf("read failed rows of job %q: %w", job, err)
		}
		if n := len(groups); n == 0 || !slices.Equal(groups[n-1].ChunkLast, last) {
			groups = append(groups, FailedGroup{ChunkLast: last})
		}
		groups[len(groups)-1].Keys = append(groups[len(groups)-1].Keys, key)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read failed rows of job %q: %w", job, err)
	}
	return groups, nil
}

// Retried is what retrying a chunk's failed rows did: the keys that still
// fail, and of the others, those inserted and those skipped on a conflict.
// The rest were not written at all and count as filtered.
type Retried struct {
	StillFailing [][]string
	// Inserted, Skipped and Filtered count the rows read again that the
	// destination took, already had, or the transform now skips. A row
	// not read again (deleted, or excluded by the job's where) is one a
	// clean run would not read: it leaves rows_read too.
	Inserted, Skipped, Filtered int
}

// ForgetFailedRows moves the rows of the chunk ending at chunkLast that no
// longer fail out of failed_rows and into the chunk's counts, as the runner
// of generation gen (fenced like a chunk commit). It runs in the
// transaction that wrote them.
func (s *Store) ForgetFailedRows(ctx context.Context, tx Querier, job string, gen int64, chunkLast []string, r Retried) error {
	stillFailing := r.StillFailing
	keys := make([]string, len(stillFailing))
	for i, k := range stillFailing {
		b, err := json.Marshal(k)
		if err != nil {
			return fmt.Errorf("encode key %v: %w", k, err)
		}
		keys[i] = string(b)
	}
	tag, err := tx.Exec(ctx, s.stmts.Get(bfsql.ForgetFailedRows), job, chunkLast, keys, r.Inserted, r.Skipped, gen, r.Filtered)
	if err != nil {
		return fmt.Errorf("update failed rows of job %q: %w", job, err)
	}
	if tag.RowsAffected() != 1 {
		// the rows just written would be counted nowhere
		return fmt.Errorf("update failed rows of job %q: no committed chunk ends at %v", job, chunkLast)
	}
	return nil
}

// RecentRate is the rows per second read over the last minute; 0 when no
// chunk finished in it.
func (s *Store) RecentRate(ctx context.Context, q Querier, name string) (float64, error) {
	var rows int64
	var seconds *float64
	if err := q.QueryRow(ctx, s.stmts.Get(bfsql.JobRecentRows), name).Scan(&rows, &seconds); err != nil {
		return 0, fmt.Errorf("measure the recent rate of job %q: %w", name, err)
	}
	if seconds == nil || *seconds <= 0 {
		return 0, nil
	}
	return float64(rows) / *seconds, nil
}

// ChunkTiming is a committed chunk and how long its write took, as the
// destination timed it (from its transaction's BEGIN to its checkpoint
// row).
type ChunkTiming struct {
	Seq          int64     `json:"seq"`
	First        []string  `json:"first_key"`
	Last         []string  `json:"last_key"`
	Rows         int       `json:"rows"`
	Path         string    `json:"write_path"` // "" when the chunk wrote no row
	WriteSeconds float64   `json:"write_seconds"`
	FinishedAt   time.Time `json:"finished_at"`
}

// SlowestChunks returns the n slowest of the job's last 1000 committed
// chunks, slowest first. Chunks committed before the state schema timed
// them (version 9) are not among them, and a state schema older than that,
// which only a runner migrates, has none.
func (s *Store) SlowestChunks(ctx context.Context, q Querier, job string, n int) ([]ChunkTiming, error) {
	rows, _ := q.Query(ctx, s.stmts.Get(bfsql.ChunkSlowest), job, n) // its error comes with the rows
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ChunkTiming])
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == undefinedColumn {
		return []ChunkTiming{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the slowest chunks of job %q: %w", job, err)
	}
	return out, nil
}

// FailedRow is a row that could not be written, with its error.
type FailedRow struct {
	Key      []string  `json:"key"`
	SQLState string    `json:"sqlstate"` // "" for a transform error
	Column   string    `json:"column"`   // "" when the error names none
	Message  string    `json:"message"`
	FailedAt time.Time `json:"failed_at"`
}

// FirstFailedRows returns the job's first n failed rows, in the order they
// failed.
func (s *Store) FirstFailedRows(ctx context.Context, q Querier, job string, n int) ([]FailedRow, error) {
	rows, _ := q.Query(ctx, s.stmts.Get(bfsql.FailedRowsFirst), job, n) // its error comes with the rows
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[FailedRow])
	if err != nil {
		return nil, fmt.Errorf("read the failed rows of job %q: %w", job, err)
	}
	return out, nil
}
