package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/internal/pgtest"
	bfsql "github.com/backfill/backfill/sql"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newPool returns a pool on a fresh database of t's own.
func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newStore returns a pool on a fresh database and a migrated store in it.
func newStore(t *testing.T, schema string) (*pgxpool.Pool, *checkpoint.Store) {
	t.Helper()
	pool := newPool(t)
	store, err := checkpoint.New(schema)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return pool, store
}

// createJob creates a job and returns its first runner's generation.
func createJob(t *testing.T, pool *pgxpool.Pool, store *checkpoint.Store, name string) int64 {
	t.Helper()
	gen, err := store.CreateJob(t.Context(), pool, checkpoint.NewJob{Name: name, Spec: []byte(`{}`), Rate: 1000, Workers: 2, UpperKey: []string{"100"}})
	if err != nil {
		t.Fatal(err)
	}
	return gen
}

func versions(t *testing.T, q checkpoint.Querier, schema string) []int {
	t.Helper()
	rows, err := q.Query(t.Context(), "SELECT version FROM "+pgx.Identifier{schema, "schema_version"}.Sanitize()+" ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func allVersions(t *testing.T, schema string) []int {
	t.Helper()
	stmts, err := bfsql.For(pgx.Identifier{schema}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	var want []int
	for _, m := range stmts.Migrations() {
		want = append(want, m.Version)
	}
	return want
}

// TestMigrateRunsEachMigrationOnce: runners starting together on a new
// destination must not race to create the schema, and a later start must
// not apply anything again.
func TestMigrateRunsEachMigrationOnce(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	store, err := checkpoint.New(`Odd "state"`)
	if err != nil {
		t.Fatal(err)
	}
	exists, err := store.Exists(ctx, pool)
	if err != nil || exists {
		t.Fatalf("Exists before any migration = %v, %v; want false", exists, err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = store.Migrate(ctx, pool) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent migrations: %v", err)
	}
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrating a current schema: %v", err)
	}
	if got, want := versions(t, pool, `Odd "state"`), allVersions(t, `Odd "state"`); !slices.Equal(got, want) {
		t.Fatalf("schema_version holds %v; want each of %v once", got, want)
	}
	if exists, err := store.Exists(ctx, pool); err != nil || !exists {
		t.Fatalf("Exists after migration = %v, %v; want true", exists, err)
	}
}

// TestMigrateUpgradesAnOlderSchema: a destination that an older release
// left at version 1 keeps its jobs and gains what later versions add.
func TestMigrateUpgradesAnOlderSchema(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	stmts, err := bfsql.For(`"backfill"`)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []bfsql.Name{bfsql.CreateSchema, bfsql.CreateVersionTable, bfsql.Migration1} {
		if _, err := pool.Exec(ctx, stmts.Get(name)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := pool.Exec(ctx, stmts.Get(bfsql.SetVersion), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO backfill.jobs (name, spec, state, rate, workers) VALUES ('old', '{}', 'interrupted', 500, 4)`); err != nil {
		t.Fatal(err)
	}

	store, err := checkpoint.New("")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if got, want := versions(t, pool, "backfill"), allVersions(t, "backfill"); !slices.Equal(got, want) {
		t.Fatalf("schema_version holds %v after the upgrade; want %v", got, want)
	}
	job, err := store.Job(ctx, pool, "old")
	if err != nil {
		t.Fatal(err)
	}
	if job.State != checkpoint.StateInterrupted || job.Rate != 500 || job.Workers != 4 {
		t.Fatalf("job after the upgrade: %+v", job)
	}
	// The heartbeat reads pause_requested, which migration 2 added; a job
	// from before migration 3 is generation 0 until a runner claims it.
	req, err := store.Heartbeat(ctx, pool, "old", 0)
	if err != nil {
		t.Fatal(err)
	}
	if req.Pause || req.Rate != 500 {
		t.Fatalf("heartbeat after the upgrade: %+v", req)
	}
}

// TestRunnerLock: one session per job holds the lock; it is per job and
// per state schema, and it dies with its session, so a killed runner never
// leaves a job locked.
func TestRunnerLock(t *testing.T) {
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	connect := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	a, b := connect(), connect()
	store, err := checkpoint.New("")
	if err != nil {
		t.Fatal(err)
	}
	other, err := checkpoint.New("other_state")
	if err != nil {
		t.Fatal(err)
	}
	try := func(s *checkpoint.Store, c *pgx.Conn, job string) bool {
		t.Helper()
		ok, err := s.TryLock(ctx, c, job)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	if !try(store, a, "j1") {
		t.Fatal("first lock of j1 refused")
	}
	if try(store, b, "j1") {
		t.Fatal("a second session took j1's lock")
	}
	if !try(store, b, "j2") {
		t.Fatal("j2's lock refused while only j1 is held")
	}
	if !try(other, b, "j1") {
		t.Fatal("j1 in another state schema refused: locks must be per schema")
	}
	if held, err := store.Locked(ctx, b, "j1"); err != nil || !held {
		t.Fatalf("Locked(j1) = %v, %v; want true", held, err)
	}
	var pidA int32
	if err := a.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pidA); err != nil {
		t.Fatal(err)
	}
	if holder := store.LockHolder(ctx, b, "j1"); !strings.Contains(holder, fmt.Sprintf("pid %d", pidA)) {
		t.Fatalf("LockHolder = %q; want it to name pid %d", holder, pidA)
	}

	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// the server ends the session a moment after the client closes it
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var alive bool
		if err := b.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", pidA).Scan(&alive); err != nil {
			t.Fatal(err)
		}
		if !alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %d still alive 10 s after it was closed", pidA)
		}
	}
	if !try(store, b, "j1") {
		t.Fatal("j1's lock still held after its session ended")
	}
	if err := store.Unlock(ctx, b, "j1"); err != nil {
		t.Fatal(err)
	}
	if held, err := store.Locked(ctx, b, "j1"); err != nil || held {
		t.Fatalf("Locked(j1) after Unlock = %v, %v; want false", held, err)
	}
}

// TestChunkCommitIsExactlyOnce: the rows and the chunk row commit in one
// statement; committing the same range again fails as a whole, leaving
// both the rows and the counters as the first commit left them.
func TestChunkCommitIsExactlyOnce(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, "")
	gen := createJob(t, pool, store, "j")
	if _, err := pool.Exec(ctx, "CREATE TABLE dst (id int PRIMARY KEY); INSERT INTO dst VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	insert := fmt.Sprintf("INSERT INTO dst (id) SELECT unnest($%d::int[]) ON CONFLICT DO NOTHING", checkpoint.ChunkParams+1)
	commit := func(rec checkpoint.ChunkRecord, ids []int32) (int, error) {
		var inserted int
		err := pool.QueryRow(ctx, store.CommitChunkSQL(insert), append(checkpoint.CommitChunkArgs("j", rec), ids)...).Scan(&inserted)
		return inserted, err
	}

	first := checkpoint.ChunkRecord{Seq: 1, First: []string{"1"}, Last: []string{"3"}, RowsRead: 3, RowsWritten: 3, Generation: gen}
	inserted, err := commit(first, []int32{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if inserted != 2 {
		t.Fatalf("inserted %d rows; want 2 (id 2 was already there)", inserted)
	}
	// A retry of the same range, even one carrying a row the first did not.
	_, err = commit(first, []int32{1, 2, 3, 4})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" || pgErr.TableName != "chunks" {
		t.Fatalf("second commit of the same range: %v; want a unique violation on chunks", err)
	}
	var rowsInDst int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM dst").Scan(&rowsInDst); err != nil {
		t.Fatal(err)
	}
	if rowsInDst != 3 {
		t.Fatalf("dst holds %d rows; the refused commit must have written none", rowsInDst)
	}

	second := checkpoint.ChunkRecord{Seq: 2, After: []string{"3"}, First: []string{"5"}, Last: []string{"6"}, RowsRead: 4, RowsFiltered: 1, RowsFailed: 1, RowsWritten: 2, Generation: gen}
	if _, err := commit(second, []int32{5, 6}); err != nil {
		t.Fatal(err)
	}
	got, err := store.Counters(ctx, pool, "j")
	if err != nil {
		t.Fatal(err)
	}
	want := checkpoint.Counters{ChunksDone: 2, RowsRead: 7, RowsFiltered: 1, RowsFailed: 1, RowsInserted: 4, RowsSkipped: 1, LastKey: []string{"6"}}
	if !equalCounters(got, want) {
		t.Fatalf("counters %+v; want %+v", got, want)
	}
	ranges, maxSeq, err := store.Committed(ctx, pool, "j")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ranges, func(x, y checkpoint.Range) int { return strings.Compare(x.Last[0], y.Last[0]) })
	if maxSeq != 2 || len(ranges) != 2 || ranges[0].After != nil || !slices.Equal(ranges[1].After, []string{"3"}) || !slices.Equal(ranges[1].Last, []string{"6"}) {
		t.Fatalf("committed ranges %+v, max seq %d", ranges, maxSeq)
	}
}

func equalCounters(a, b checkpoint.Counters) bool {
	return a.ChunksDone == b.ChunksDone && a.RowsRead == b.RowsRead && a.RowsFiltered == b.RowsFiltered &&
		a.RowsFailed == b.RowsFailed && a.RowsInserted == b.RowsInserted && a.RowsSkipped == b.RowsSkipped &&
		slices.Equal(a.LastKey, b.LastKey)
}

// TestFailedRowsMoveIntoTheCountersWhenTheyNoLongerFail follows a chunk
// with two failed rows through resume --retry-failed, where one of them
// now succeeds.
func TestFailedRowsMoveIntoTheCountersWhenTheyNoLongerFail(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, "")
	gen := createJob(t, pool, store, "j")
	last := []string{"10"}
	rec := checkpoint.ChunkRecord{Seq: 1, First: []string{"1"}, Last: last, RowsRead: 10, RowsFailed: 2, Generation: gen}
	if _, err := pool.Exec(ctx, store.RecordChunkSQL(), checkpoint.RecordChunkArgs("j", rec, 8, 0)...); err != nil {
		t.Fatal(err)
	}
	_, err := pool.Exec(ctx, store.RecordFailedRowsSQL(), "j", last,
		[]string{`["4"]`, `["7"]`}, []string{"23514", "23503"}, []string{"", ""},
		[]string{"check violated", "fk violated"}, []string{`{"id": 4}`, `{"id": 7}`})
	if err != nil {
		t.Fatal(err)
	}
	groups, err := store.FailedRows(ctx, pool, "j")
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 || !slices.Equal(groups[0].ChunkLast, last) || len(groups[0].Keys) != 2 {
		t.Fatalf("failed rows %+v; want one chunk with two keys", groups)
	}

	// Key 4 now succeeds and is inserted; key 7 still fails.
	if err := store.ForgetFailedRows(ctx, pool, "j", gen, last, checkpoint.Retried{StillFailing: [][]string{{"7"}}, Inserted: 1}); err != nil {
		t.Fatal(err)
	}
	c, err := store.Counters(ctx, pool, "j")
	if err != nil {
		t.Fatal(err)
	}
	if c.RowsFailed != 1 || c.RowsInserted != 9 || c.RowsSkipped != 0 || c.RowsRead != 10 {
		t.Fatalf("counters after one row succeeded: %+v", c)
	}
	groups, err = store.FailedRows(ctx, pool, "j")
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 || len(groups[0].Keys) != 1 || !slices.Equal(groups[0].Keys[0], []string{"7"}) {
		t.Fatalf("failed rows after one succeeded: %+v; want only key 7", groups)
	}
}

// TestOperatorRequestsReachTheHeartbeat: set --rate and pause are rows
// another terminal writes and the runner's heartbeat reads.
func TestOperatorRequestsReachTheHeartbeat(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, "")
	gen := createJob(t, pool, store, "j")

	state, err := store.SetRate(ctx, pool, "j", 250)
	if err != nil || state != checkpoint.StateRunning {
		t.Fatalf("SetRate = %q, %v", state, err)
	}
	if ok, err := store.RequestPause(ctx, pool, "j"); err != nil || !ok {
		t.Fatalf("RequestPause of a running job = %v, %v; want true", ok, err)
	}
	req, err := store.Heartbeat(ctx, pool, "j", gen)
	if err != nil {
		t.Fatal(err)
	}
	if req != (checkpoint.Requests{Rate: 250, Pause: true}) {
		t.Fatalf("heartbeat read %+v", req)
	}

	if err := store.SetState(ctx, pool, "j", gen, checkpoint.StatePaused, ""); err != nil {
		t.Fatal(err)
	}
	job, err := store.Job(ctx, pool, "j")
	if err != nil {
		t.Fatal(err)
	}
	if job.State != checkpoint.StatePaused || job.HeartbeatAt != nil || job.FinishedAt != nil {
		t.Fatalf("paused job: state %s, heartbeat %v, finished %v", job.State, job.HeartbeatAt, job.FinishedAt)
	}
	if ok, err := store.RequestPause(ctx, pool, "j"); err != nil || ok {
		t.Fatalf("RequestPause of a paused job = %v, %v; want false", ok, err)
	}
	if gen, err = store.ClaimJob(ctx, pool, "j", 0, 3, "host", 42); err != nil {
		t.Fatal(err)
	}
	if req, err := store.Heartbeat(ctx, pool, "j", gen); err != nil || req.Pause {
		t.Fatalf("heartbeat after a new claim = %+v, %v; the old pause request must be gone", req, err)
	}
	if err := store.SetState(ctx, pool, "j", gen, checkpoint.StateDone, ""); err != nil {
		t.Fatal(err)
	}
	if job, err := store.Job(ctx, pool, "j"); err != nil || job.FinishedAt == nil {
		t.Fatalf("done job has no finished_at: %+v, %v", job, err)
	}

	if _, err := store.SetRate(ctx, pool, "nope", 1); !errors.Is(err, checkpoint.ErrJobNotFound) {
		t.Fatalf("SetRate of an unknown job: %v; want ErrJobNotFound", err)
	}
	if _, err := store.Job(ctx, pool, "nope"); !errors.Is(err, checkpoint.ErrJobNotFound) {
		t.Fatalf("Job of an unknown job: %v; want ErrJobNotFound", err)
	}
}

// TestWorkerCountBetweenOperatorAndRunner: set --workers writes the
// job's worker count; the runner stores its own pool size only while the
// row holds what it last saw there, so an operator's count is never
// overwritten before the runner has read it.
func TestWorkerCountBetweenOperatorAndRunner(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, "")
	gen := createJob(t, pool, store, "j")
	workers := func() int {
		job, err := store.Job(ctx, pool, "j")
		if err != nil {
			t.Fatal(err)
		}
		return job.Workers
	}
	seen := workers()

	// the runner's own change (autoscale) is stored
	if got, err := store.SyncWorkers(ctx, pool, "j", gen, seen, seen+1); err != nil || got != seen+1 || workers() != seen+1 {
		t.Fatalf("runner's size stored: %d, %v; row %d; want %d", got, err, workers(), seen+1)
	}
	seen++
	// nothing to store: the row's count comes back
	if got, err := store.SyncWorkers(ctx, pool, "j", gen, seen, seen); err != nil || got != seen {
		t.Fatalf("nothing changed: %d, %v; want %d", got, err, seen)
	}

	state, err := store.SetWorkers(ctx, pool, "j", 12)
	if err != nil || state != checkpoint.StateRunning {
		t.Fatalf("SetWorkers = %q, %v", state, err)
	}
	// the runner changed its size meanwhile: the operator's count wins
	if got, err := store.SyncWorkers(ctx, pool, "j", gen, seen, seen+1); err != nil || got != 12 || workers() != 12 {
		t.Fatalf("operator's count against the runner's: %d, %v; row %d; want 12", got, err, workers())
	}

	if _, err := store.SyncWorkers(ctx, pool, "j", gen-1, 12, 3); !errors.Is(err, checkpoint.ErrFenced) || workers() != 12 {
		t.Fatalf("a superseded runner's size: %v, row %d; want ErrFenced and the row unchanged", err, workers())
	}
	if _, err := store.SetWorkers(ctx, pool, "nope", 1); !errors.Is(err, checkpoint.ErrJobNotFound) {
		t.Fatalf("SetWorkers of an unknown job: %v; want ErrJobNotFound", err)
	}
}

// TestReadingWritesNothing: status and resume look for jobs on
// destinations that may never have run one; looking must not create the
// state schema.
func TestReadingWritesNothing(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	store, err := checkpoint.New("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Job(ctx, pool, "j"); !errors.Is(err, checkpoint.ErrJobNotFound) {
		t.Fatalf("Job without a state schema: %v; want ErrJobNotFound", err)
	}
	jobs, err := store.Jobs(ctx, pool)
	if err != nil || len(jobs) != 0 {
		t.Fatalf("Jobs without a state schema = %v, %v; want none", jobs, err)
	}
	var schemas int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = 'backfill'").Scan(&schemas); err != nil {
		t.Fatal(err)
	}
	if schemas != 0 {
		t.Fatal("reading created the state schema")
	}
}

// fenceFixture is a job, a destination table dst (id int PRIMARY KEY) and
// a commit of keys through CommitChunkSQL as the runner of a generation.
type fenceFixture struct {
	pool  *pgxpool.Pool
	store *checkpoint.Store
}

func newFenceFixture(t *testing.T) (*fenceFixture, int64) {
	t.Helper()
	pool, store := newStore(t, "")
	gen := createJob(t, pool, store, "j")
	if _, err := pool.Exec(t.Context(), "CREATE TABLE dst (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	return &fenceFixture{pool: pool, store: store}, gen
}

// commit writes ids as chunk seq, ending at its last id, on q.
func (f *fenceFixture) commit(ctx context.Context, q checkpoint.Querier, gen, seq int64, ids ...int32) error {
	insert := fmt.Sprintf("INSERT INTO dst (id) SELECT unnest($%d::int[]) ON CONFLICT DO NOTHING", checkpoint.ChunkParams+1)
	last := []string{fmt.Sprint(ids[len(ids)-1])}
	rec := checkpoint.ChunkRecord{Seq: seq, First: []string{fmt.Sprint(ids[0])}, Last: last, RowsRead: len(ids), RowsWritten: len(ids), Generation: gen}
	var inserted int
	return q.QueryRow(ctx, f.store.CommitChunkSQL(insert), append(checkpoint.CommitChunkArgs("j", rec), ids)...).Scan(&inserted)
}

// written returns the rows in dst and the chunk rows of job j.
func (f *fenceFixture) written(t *testing.T) (rows, chunks int) {
	t.Helper()
	if err := f.pool.QueryRow(t.Context(), "SELECT (SELECT count(*) FROM dst), (SELECT count(*) FROM backfill.chunks WHERE job = 'j')").Scan(&rows, &chunks); err != nil {
		t.Fatal(err)
	}
	return rows, chunks
}

// waitForLockWait waits until backend pid waits for a lock.
func waitForLockWait(t *testing.T, q checkpoint.Querier, pid uint32) {
	t.Helper()
	for range 500 {
		var waiting bool
		if err := q.QueryRow(t.Context(), "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1", int32(pid)).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("backend %d never waited for a lock", pid)
}

// TestSupersededGenerationCannotWrite: once a new runner has claimed the
// job, every write of the runner before it fails as fenced and writes
// nothing: a chunk commit (neither its rows nor its chunk row), a chunk
// recorded inside a transaction, the counters of retried failed rows, the
// heartbeat, the job's final state, and taking the job again.
func TestSupersededGenerationCannotWrite(t *testing.T) {
	ctx := t.Context()
	f, old := newFenceFixture(t)
	gen, err := f.store.ClaimJob(ctx, f.pool, "j", 0, 2, "host", 2)
	if err != nil {
		t.Fatal(err)
	}
	if gen <= old {
		t.Fatalf("claim took generation %d after %d; want a higher one", gen, old)
	}
	fenced := func(what string, err error) {
		t.Helper()
		if !f.store.IsFenced(err) {
			t.Fatalf("%s as superseded generation %d: %v; want it fenced", what, old, err)
		}
	}
	fenced("commit", f.commit(ctx, f.pool, old, 1, 1, 2, 3))
	if rows, chunks := f.written(t); rows != 0 || chunks != 0 {
		t.Fatalf("the fenced commit wrote %d rows and %d chunk rows; want none", rows, chunks)
	}

	// the isolating path: rows written in a transaction, then the chunk row
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO dst VALUES (4), (5)"); err != nil {
		t.Fatal(err)
	}
	rec := checkpoint.ChunkRecord{Seq: 2, First: []string{"4"}, Last: []string{"5"}, RowsRead: 2, Generation: old}
	_, err = tx.Exec(ctx, f.store.RecordChunkSQL(), checkpoint.RecordChunkArgs("j", rec, 2, 0)...)
	fenced("record-chunk", err)
	_ = tx.Rollback(ctx)
	if rows, chunks := f.written(t); rows != 0 || chunks != 0 {
		t.Fatalf("the fenced transaction left %d rows and %d chunk rows; want none", rows, chunks)
	}

	// retried failed rows: a chunk of the new generation with a failed row
	rec = checkpoint.ChunkRecord{Seq: 3, First: []string{"7"}, Last: []string{"8"}, RowsRead: 2, RowsFailed: 1, Generation: gen}
	if _, err := f.pool.Exec(ctx, f.store.RecordChunkSQL(), checkpoint.RecordChunkArgs("j", rec, 1, 0)...); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, f.store.RecordFailedRowsSQL(), "j", rec.Last, []string{`["8"]`}, []string{"23514"}, []string{""}, []string{"check"}, []string{`{}`}); err != nil {
		t.Fatal(err)
	}
	fenced("forget failed rows", f.store.ForgetFailedRows(ctx, f.pool, "j", old, rec.Last, checkpoint.Retried{Inserted: 1}))
	if c, err := f.store.Counters(ctx, f.pool, "j"); err != nil || c.RowsFailed != 1 || c.RowsInserted != 1 {
		t.Fatalf("counters after a fenced retry of failed rows: %+v, %v; want them unchanged", c, err)
	}

	if _, err := f.store.Heartbeat(ctx, f.pool, "j", old); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("heartbeat as superseded generation: %v; want ErrFenced", err)
	}
	if err := f.store.SetState(ctx, f.pool, "j", old, checkpoint.StateDone, ""); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("final state as superseded generation: %v; want ErrFenced", err)
	}
	if job, err := f.store.Job(ctx, f.pool, "j"); err != nil || job.State != checkpoint.StateRunning {
		t.Fatalf("job after a fenced final state: %+v, %v; want it running still", job, err)
	}
	if _, err := f.store.ReclaimJob(ctx, f.pool, "j", old); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("taking the job again as superseded generation: %v; want ErrFenced", err)
	}
	if _, err := f.store.Heartbeat(ctx, f.pool, "j", gen); err != nil {
		t.Fatalf("heartbeat of the current generation: %v", err)
	}
	if next, err := f.store.ReclaimJob(ctx, f.pool, "j", gen); err != nil || next != gen+1 {
		t.Fatalf("taking the job again as its current generation %d: %d, %v; want %d", gen, next, err, gen+1)
	}
}

// TestTakeoverWithACommitInFlight: a commit of the old generation that is
// in flight when a new runner claims the job either finishes first, and
// the claim waits for it so that the new runner sees it among the
// committed chunks and its seq as taken; or comes second, waits for the
// claim, and fails writing nothing.
func TestTakeoverWithACommitInFlight(t *testing.T) {
	ctx := t.Context()
	f, gen := newFenceFixture(t)
	acquire := func() *pgxpool.Conn {
		c, err := f.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Release)
		return c
	}

	// 1. The commit has written its chunk row, not yet committed.
	oldRunner, newRunner := acquire(), acquire()
	tx, err := oldRunner.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.commit(ctx, tx, gen, 7, 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	claimed := make(chan int64, 1)
	claimErr := make(chan error, 1)
	go func() {
		g, err := f.store.ClaimJob(ctx, newRunner, "j", 0, 2, "host", 2)
		claimed <- g
		claimErr <- err
	}()
	waitForLockWait(t, f.pool, newRunner.Conn().PgConn().PID())
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	next := <-claimed
	if err := <-claimErr; err != nil {
		t.Fatal(err)
	}
	ranges, maxSeq, err := f.store.Committed(ctx, newRunner, "j")
	if err != nil {
		t.Fatal(err)
	}
	if len(ranges) != 1 || maxSeq != 7 {
		t.Fatalf("after the claim, the new runner reads %d committed ranges and max seq %d; want the chunk in flight, seq 7", len(ranges), maxSeq)
	}

	// 2. The claim has raised the generation, not yet committed.
	claim, err := newRunner.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newest, err := f.store.ClaimJob(ctx, claim, "j", 0, 2, "host", 3)
	if err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func() { committed <- f.commit(ctx, oldRunner, next, 8, 4, 5, 6) }()
	waitForLockWait(t, f.pool, oldRunner.Conn().PgConn().PID())
	if err := claim.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-committed; !f.store.IsFenced(err) {
		t.Fatalf("commit of generation %d that waited for the claim of %d: %v; want it fenced", next, newest, err)
	}
	if rows, chunks := f.written(t); rows != 3 || chunks != 1 {
		t.Fatalf("dst holds %d rows, the checkpoint %d chunks; want only the first commit's 3 rows and 1 chunk", rows, chunks)
	}
}

// TestFenceHoldsUnderReplicaRole: session_replication_role = replica, which
// bulk loads set in the connection string to skip the destination's FK and
// user triggers, disables ordinary triggers, the fence among them. A
// superseded generation's commit must still be refused, with nothing written.
func TestFenceHoldsUnderReplicaRole(t *testing.T) {
	ctx := t.Context()
	f, old := newFenceFixture(t)
	if _, err := f.store.ClaimJob(ctx, f.pool, "j", 0, 2, "host", 2); err != nil {
		t.Fatal(err)
	}
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		t.Fatal(err)
	}
	if err := f.commit(ctx, conn, old, 1, 1, 2, 3); !f.store.IsFenced(err) {
		t.Errorf("commit as superseded generation %d under session_replication_role = replica: %v; want it fenced", old, err)
	}
	if _, err := conn.Exec(ctx, "RESET session_replication_role"); err != nil {
		t.Fatal(err)
	}
	if rows, chunks := f.written(t); rows != 0 || chunks != 0 {
		t.Fatalf("the superseded commit wrote %d rows and %d chunk rows; want none", rows, chunks)
	}
}

// TestFenceNamesAnOlderBinary: a runner of a release before the fence (it
// writes chunk rows without a generation) goes on running while a newer
// binary migrates the state schema for another job. Its commits must still
// be refused, but saying what happened, not that a newer runner took its
// job: nobody did.
func TestFenceNamesAnOlderBinary(t *testing.T) {
	ctx := t.Context()
	f, _ := newFenceFixture(t)
	_, err := f.pool.Exec(ctx, `INSERT INTO backfill.chunks (job, seq, after_key, first_key, last_key, rows_read, rows_filtered, rows_failed, rows_inserted, rows_skipped)
		VALUES ('j', 1, NULL, '{1}', '{3}', 3, 0, 0, 3, 0)`)
	if !f.store.IsFenced(err) {
		t.Fatalf("a chunk row without a generation: %v; want it fenced", err)
	}
	if msg := err.Error(); strings.Contains(msg, "newer runner") || !strings.Contains(msg, "older") {
		t.Fatalf("a chunk row without a generation is refused with %q; want it to name an older backfill, not a newer runner", msg)
	}
}

// The destination times each chunk's write, from its transaction's BEGIN
// to its checkpoint row; status shows the slowest recent ones and the
// first failed rows with their errors.
func TestSlowestChunksAndFirstFailedRows(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, "state")
	gen := createJob(t, pool, store, "j")
	for seq, sleep := range []float64{0.05, 0.3, 0, 0.15} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT pg_sleep($1)", sleep); err != nil {
			t.Fatal(err)
		}
		first, last := []string{fmt.Sprint(10*seq + 1)}, []string{fmt.Sprint(10*seq + 10)}
		rec := checkpoint.ChunkRecord{Seq: int64(seq + 1), First: first, Last: last, RowsRead: 10, RowsWritten: 10, Generation: gen, Path: "stage"}
		if seq > 0 {
			rec.After = []string{fmt.Sprint(10 * seq)}
		}
		if _, err := tx.Exec(ctx, store.RecordChunkSQL(), checkpoint.RecordChunkArgs("j", rec, 10, 0)...); err != nil {
			t.Fatal(err)
		}
		if seq == 1 {
			_, err := tx.Exec(ctx, store.RecordFailedRowsSQL(), "j", last, []string{`["12"]`, `["11"]`}, []*string{ptr("23514"), nil},
				[]*string{ptr("n"), nil}, []string{"violates check constraint", "transform: division by zero"}, []string{`{}`, `{}`})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	slow, err := store.SlowestChunks(ctx, pool, "j", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(slow) != 3 || slow[0].Seq != 2 || slow[1].Seq != 4 || slow[2].Seq != 1 ||
		slow[0].WriteSeconds < 0.3 || slow[1].WriteSeconds < 0.15 || slow[0].Rows != 10 || slow[0].Path != "stage" ||
		!slices.Equal(slow[0].First, []string{"11"}) || !slices.Equal(slow[0].Last, []string{"20"}) {
		t.Fatalf("slowest chunks: %+v", slow)
	}
	failed, err := store.FirstFailedRows(ctx, pool, "j", 5)
	if err != nil {
		t.Fatal(err)
	}
	// in the order they failed, which is the order they were recorded
	if len(failed) != 2 || !slices.Equal(failed[0].Key, []string{"12"}) || failed[0].SQLState != "23514" || failed[0].Column != "n" ||
		failed[1].SQLState != "" || failed[1].Column != "" || failed[1].Message != "transform: division by zero" {
		t.Fatalf("failed rows: %+v", failed)
	}

	// a state schema older than the timings, which status does not
	// migrate, has none to show
	if _, err := pool.Exec(ctx, "ALTER TABLE state.chunks DROP COLUMN write_seconds"); err != nil {
		t.Fatal(err)
	}
	if slow, err := store.SlowestChunks(ctx, pool, "j", 3); err != nil || len(slow) != 0 {
		t.Fatalf("slowest chunks of a schema without timings: %v, %v", slow, err)
	}
}

func ptr[T any](v T) *T { return &v }
