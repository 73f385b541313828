package backfill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/checkpoint"
	bfsql "github.com/backfill/backfill/sql"
	"github.com/backfill/backfill/transform"
)

// JobStatus is one job as `backfill status` reports it. The JSON names are
// a stable interface: scripts read them.
type JobStatus struct {
	Job          string `json:"job"`
	State        string `json:"state"`
	From         string `json:"from"`
	To           string `json:"to"`
	RowsRead     int64  `json:"rows_read"`
	RowsInserted int64  `json:"rows_inserted"`
	RowsSkipped  int64  `json:"rows_skipped"`
	RowsFiltered int64  `json:"rows_filtered"`
	RowsFailed   int64  `json:"rows_failed"`
	ChunksDone   int64  `json:"chunks_done"`
	// The chunk records by how their rows were written: straight into the
	// destination by COPY, through the stage, or isolated row by row
	// around failing rows (a split chunk's pieces each count).
	ChunksDirect   int64   `json:"chunks_direct"`
	ChunksStaged   int64   `json:"chunks_staged"`
	ChunksIsolated int64   `json:"chunks_isolated"`
	RowsEstimated  int64   `json:"rows_estimated"`
	Percent        float64 `json:"percent"`
	Rate           float64 `json:"rate"` // the cap in rows per second; 0 means none
	// RateAuto says --rate auto sets Rate (the rate it chose last), under
	// the ceiling RateAutoMax (0: none).
	RateAuto    bool    `json:"rate_auto"`
	RateAutoMax float64 `json:"rate_auto_max"`
	// Throttled says a running job waits for production, and
	// ThrottleReason why ("replica lag 12.3 s > 10 s on replica 1").
	Throttled      bool   `json:"throttled"`
	ThrottleReason string `json:"throttle_reason"`
	// RowsPerSec is the rate achieved over the last minute and ETASeconds
	// the time left at that rate, for a running job (else 0 and null).
	RowsPerSec  float64    `json:"rows_per_sec"`
	ETASeconds  *float64   `json:"eta_seconds"`
	Workers     int        `json:"workers"`
	StartedAt   time.Time  `json:"started_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	HeartbeatAt *time.Time `json:"heartbeat_at"`
	Runner      string     `json:"runner"`
	LastKey     []string   `json:"last_key"`
	LastError   *string    `json:"last_error"`
	// Runners are, for a partitioned job (Job.Partitions), the runners
	// holding a live lease; Partitions its partitions, when Status is
	// asked for the one job.
	Runners    []RunnerStatus    `json:"runners,omitempty"`
	Partitions []PartitionStatus `json:"partitions,omitempty"`
	// AsOf is the destination's clock when the status was read: the
	// ages of UpdatedAt and HeartbeatAt are measured from it, not from
	// the reader's clock.
	AsOf time.Time `json:"as_of"`
}

// RunnerStatus is one runner of a partitioned job.
type RunnerStatus struct {
	Runner     string  `json:"runner"` // host:pid:nonce, as its leases name it
	Host       string  `json:"host"`
	PID        int     `json:"pid"`
	Partitions []int   `json:"partitions"`
	RowsPerSec float64 `json:"rows_per_sec"` // over the last minute
	// HeartbeatAgeSeconds is how long ago it last renewed a lease.
	HeartbeatAgeSeconds float64 `json:"heartbeat_age_seconds"`
}

// PartitionStatus is one partition of a partitioned job: the keys it
// covers, (after_key, last_key] (null: the table's start, the job's end).
type PartitionStatus struct {
	ID            int      `json:"id"`
	AfterKey      []string `json:"after_key"`
	LastKey       []string `json:"last_key"`
	State         string   `json:"state"` // pending or done
	RowsEstimated int64    `json:"rows_estimated"`
	RowsRead      int64    `json:"rows_read"`
	Percent       float64  `json:"percent"`
	Owner         string   `json:"owner,omitempty"` // the runner holding a live lease
	Token         int64    `json:"token"`
}

// JobDetail is one job as `backfill status --job` shows it: its status,
// what it copies, and what its chunks have been doing.
type JobDetail struct {
	JobStatus
	Key       []string            `json:"key"`
	Where     string              `json:"where,omitempty"`
	Columns   []transform.Mapping `json:"columns,omitempty"` // none: the same-named columns
	SkipIf    string              `json:"skip_if,omitempty"`
	ChunkSize int                 `json:"chunk_size"` // 0: sized by time
	Follow    bool                `json:"follow"`
	// SlowestChunks are the DetailChunks slowest of the last 1000
	// committed chunks, slowest first, timed by the destination.
	SlowestChunks []ChunkTiming `json:"slowest_chunks"`
	// FailedRows are the first DetailFailedRows failed rows (of RowsFailed
	// in all), in the order they failed.
	FailedRows []FailedRow `json:"failed_rows"`
}

// ChunkTiming is a committed chunk and how long its write took.
type ChunkTiming = checkpoint.ChunkTiming

// FailedRow is a row the destination refused or the transform could not
// make, with its error.
type FailedRow = checkpoint.FailedRow

// How many chunks and failed rows StatusDetail shows.
const (
	DetailChunks     = 5
	DetailFailedRows = 5
)

// A job's states, as JobStatus and VerifyReport say them.
const (
	StateRunning     = checkpoint.StateRunning
	StatePaused      = checkpoint.StatePaused
	StateInterrupted = checkpoint.StateInterrupted
	StateFailed      = checkpoint.StateFailed
	StateDone        = checkpoint.StateDone
)

// Status reads the target's job, or every job when t.Job is "", from the
// destination's state schema. A job whose state
// says running but whose heartbeat is stale has lost its runner and is
// reported as interrupted, and so is one whose runner lock nobody holds (the
// runner died with its session). It writes nothing.
func Status(ctx context.Context, t Target) ([]JobStatus, error) {
	var out []JobStatus
	err := readStatus(ctx, t, func(r statusReader, jobs []checkpoint.Job) error {
		out = make([]JobStatus, 0, len(jobs))
		for _, cj := range jobs {
			s, err := r.status(cj)
			if err != nil {
				return err
			}
			out = append(out, s)
		}
		return nil
	})
	return out, err
}

// StatusDetail reads the target's job as Status does, with what it copies,
// its slowest recent chunks and its first failed rows. It writes nothing.
func StatusDetail(ctx context.Context, t Target) (JobDetail, error) {
	var d JobDetail
	if t.Job == "" {
		return d, kind(ErrInvalidJob, errors.New("Job.Name: missing: StatusDetail reads one job"))
	}
	err := readStatus(ctx, t, func(r statusReader, jobs []checkpoint.Job) error {
		var err error
		if d.JobStatus, err = r.status(jobs[0]); err != nil {
			return err
		}
		spec, _ := storedSpec(&jobs[0]) // an unreadable spec only blanks what it says
		d.Key, d.Where, d.Columns, d.SkipIf, d.ChunkSize, d.Follow = spec.Key, spec.Where, spec.Columns, spec.SkipIf, spec.ChunkSize, spec.Follow
		if d.SlowestChunks, err = r.store.SlowestChunks(ctx, r.conn, t.Job, DetailChunks); err != nil {
			return err
		}
		d.FailedRows, err = r.store.FirstFailedRows(ctx, r.conn, t.Job, DetailFailedRows)
		return err
	})
	return d, err
}

// statusReader reads jobs' status on one connection, at one instant of the
// destination's clock.
type statusReader struct {
	ctx   context.Context
	conn  *pgx.Conn
	store *checkpoint.Store
	now   time.Time
	one   bool // the target names one job, whose partitions are shown
}

// readStatus connects to the target's state schema and calls read with the
// target's job, or every job when t.Job is "".
func readStatus(ctx context.Context, t Target, read func(statusReader, []checkpoint.Job) error) error {
	t = t.withDefaults()
	conn, store, err := openState(ctx, t, "status")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	r := statusReader{ctx: ctx, conn: conn, store: store, one: t.Job != ""}
	// heartbeats are judged by the clock that wrote them, the
	// destination's, so skew with this machine cannot make a live runner
	// look dead
	if err := conn.QueryRow(ctx, bfsql.Static(bfsql.ServerNow)).Scan(&r.now); err != nil {
		return fmt.Errorf("read the destination's clock: %w", err)
	}
	var jobs []checkpoint.Job
	if t.Job != "" {
		one, err := store.Job(ctx, conn, t.Job)
		if err != nil {
			return err
		}
		jobs = []checkpoint.Job{*one}
	} else if jobs, err = store.Jobs(ctx, conn); err != nil {
		return err
	}
	return read(r, jobs)
}

// status is one job's status.
func (r statusReader) status(cj checkpoint.Job) (JobStatus, error) {
	ctx, conn, store, now := r.ctx, r.conn, r.store, r.now
	c, err := store.Counters(ctx, conn, cj.Name)
	if err != nil {
		return JobStatus{}, err
	}
	spec, _ := storedSpec(&cj) // an unreadable spec only blanks From and To
	s := JobStatus{
		Job: cj.Name, State: cj.State, From: spec.From, To: spec.To,
		RowsRead: c.RowsRead, RowsInserted: c.RowsInserted, RowsSkipped: c.RowsSkipped,
		RowsFiltered: c.RowsFiltered, RowsFailed: c.RowsFailed, ChunksDone: c.ChunksDone,
		ChunksDirect: c.ChunksDirect, ChunksStaged: c.ChunksStaged, ChunksIsolated: c.ChunksIsolated,
		RowsEstimated: cj.RowsEstimated, Rate: cj.Rate, Workers: cj.Workers,
		StartedAt: cj.StartedAt, UpdatedAt: cj.UpdatedAt, FinishedAt: cj.FinishedAt,
		HeartbeatAt: cj.HeartbeatAt, LastKey: c.LastKey, LastError: cj.LastError, AsOf: now,
	}
	if s.LastKey == nil {
		s.LastKey = []string{}
	}
	if cj.RunnerHost != nil && cj.RunnerPID != nil {
		s.Runner = fmt.Sprintf("%s:%d", *cj.RunnerHost, *cj.RunnerPID)
	}
	s.Percent = percentDone(s.State == checkpoint.StateDone, s.RowsRead, s.RowsEstimated)
	held := false
	if spec.Partitions > 1 {
		parts, err := store.Partitions(ctx, conn, cj.Name)
		if err != nil {
			return s, err
		}
		s.Runners, s.Partitions = runnersOf(parts, now), partitionStatuses(parts)
		held = len(s.Runners) > 0
		if !r.one {
			s.Partitions = nil
		}
	} else if s.State == checkpoint.StateRunning {
		if held, err = store.Locked(ctx, conn, cj.Name); err != nil {
			return s, err
		}
	}
	if s.State == checkpoint.StateRunning {
		stale := cj.HeartbeatAt == nil || now.Sub(*cj.HeartbeatAt) > StaleHeartbeat
		if !held || stale {
			s.State = checkpoint.StateInterrupted // the runner is gone
		} else if s.RowsPerSec, err = store.RecentRate(ctx, conn, cj.Name); err != nil {
			return s, err
		} else if s.RowsPerSec > 0 && s.RowsEstimated > s.RowsRead {
			eta := float64(s.RowsEstimated-s.RowsRead) / s.RowsPerSec
			s.ETASeconds = &eta
		}
	}
	if s.State == checkpoint.StateRunning && cj.Throttled && cj.ThrottleReason != nil {
		s.Throttled, s.ThrottleReason = true, *cj.ThrottleReason
	}
	if cj.AutoRateMax != nil {
		s.RateAuto, s.RateAutoMax = true, *cj.AutoRateMax
	}
	return s, nil
}

// runnersOf are the runners holding live leases among parts.
func runnersOf(parts []checkpoint.Partition, now time.Time) []RunnerStatus {
	var out []RunnerStatus
	at := map[string]int{}
	for _, p := range parts {
		if !p.LeaseLive || p.Owner == "" {
			continue
		}
		i, ok := at[p.Owner]
		if !ok {
			r := RunnerStatus{Runner: p.Owner}
			if host, rest, found := strings.Cut(p.Owner, ":"); found {
				pid, _, _ := strings.Cut(rest, ":")
				r.Host, r.PID = host, atoiOr0(pid)
			}
			i, at[p.Owner] = len(out), len(out)
			out = append(out, r)
		}
		r := &out[i]
		r.Partitions = append(r.Partitions, p.ID)
		r.RowsPerSec += float64(p.RecentRows) / 60
		if p.RenewedAt != nil {
			age := now.Sub(*p.RenewedAt).Seconds()
			if len(r.Partitions) == 1 || age < r.HeartbeatAgeSeconds {
				r.HeartbeatAgeSeconds = max(0, age)
			}
		}
	}
	return out
}

// partitionStatuses reports a job's partitions.
func partitionStatuses(parts []checkpoint.Partition) []PartitionStatus {
	out := make([]PartitionStatus, len(parts))
	for i, p := range parts {
		ps := PartitionStatus{ID: p.ID, AfterKey: p.After, LastKey: p.Last, State: p.State, RowsEstimated: p.RowsEstimated,
			RowsRead: p.RowsRead, Token: p.Token}
		if p.LeaseLive {
			ps.Owner = p.Owner
		}
		ps.Percent = percentDone(p.State == checkpoint.StateDone, p.RowsRead, p.RowsEstimated)
		out[i] = ps
	}
	return out
}

// percentDone is read of estimated rows in percent, to a tenth: 100 once
// done, at most 99.9 before (the estimate is the planner's).
func percentDone(done bool, read, estimated int64) float64 {
	switch {
	case done:
		return 100
	case estimated > 0:
		return min(99.9, float64(int64(1000*float64(read)/float64(estimated)))/10)
	}
	return 0
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
