package backfill

import (
	"context"
	"fmt"
	"time"

	"github.com/backfill/backfill/checkpoint"
	bfsql "github.com/backfill/backfill/sql"
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
}

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
	t = t.withDefaults()
	conn, store, err := openState(ctx, t, "status")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// heartbeats are judged by the clock that wrote them, the
	// destination's, so skew with this machine cannot make a live runner
	// look dead
	var now time.Time
	if err := conn.QueryRow(ctx, bfsql.Static(bfsql.ServerNow)).Scan(&now); err != nil {
		return nil, fmt.Errorf("read the destination's clock: %w", err)
	}
	var jobs []checkpoint.Job
	if t.Job != "" {
		one, err := store.Job(ctx, conn, t.Job)
		if err != nil {
			return nil, err
		}
		jobs = []checkpoint.Job{*one}
	} else if jobs, err = store.Jobs(ctx, conn); err != nil {
		return nil, err
	}
	out := make([]JobStatus, 0, len(jobs))
	for _, cj := range jobs {
		c, err := store.Counters(ctx, conn, cj.Name)
		if err != nil {
			return nil, err
		}
		spec, _ := storedSpec(&cj) // an unreadable spec only blanks From and To
		s := JobStatus{
			Job: cj.Name, State: cj.State, From: spec.From, To: spec.To,
			RowsRead: c.RowsRead, RowsInserted: c.RowsInserted, RowsSkipped: c.RowsSkipped,
			RowsFiltered: c.RowsFiltered, RowsFailed: c.RowsFailed, ChunksDone: c.ChunksDone,
			ChunksDirect: c.ChunksDirect, ChunksStaged: c.ChunksStaged, ChunksIsolated: c.ChunksIsolated,
			RowsEstimated: cj.RowsEstimated, Rate: cj.Rate, Workers: cj.Workers,
			StartedAt: cj.StartedAt, UpdatedAt: cj.UpdatedAt, FinishedAt: cj.FinishedAt,
			HeartbeatAt: cj.HeartbeatAt, LastKey: c.LastKey, LastError: cj.LastError,
		}
		if s.LastKey == nil {
			s.LastKey = []string{}
		}
		if cj.RunnerHost != nil && cj.RunnerPID != nil {
			s.Runner = fmt.Sprintf("%s:%d", *cj.RunnerHost, *cj.RunnerPID)
		}
		switch {
		case s.State == checkpoint.StateDone:
			s.Percent = 100
		case s.RowsEstimated > 0:
			s.Percent = min(99.9, float64(int64(1000*float64(s.RowsRead)/float64(s.RowsEstimated)))/10)
		}
		if s.State == checkpoint.StateRunning {
			held, err := store.Locked(ctx, conn, cj.Name)
			if err != nil {
				return nil, err
			}
			stale := cj.HeartbeatAt == nil || now.Sub(*cj.HeartbeatAt) > StaleHeartbeat
			if !held || stale {
				s.State = checkpoint.StateInterrupted // the runner is gone
			} else if s.RowsPerSec, err = store.RecentRate(ctx, conn, cj.Name); err != nil {
				return nil, err
			} else if s.RowsPerSec > 0 && s.RowsEstimated > s.RowsRead {
				eta := float64(s.RowsEstimated-s.RowsRead) / s.RowsPerSec
				s.ETASeconds = &eta
			}
		}
		out = append(out, s)
	}
	return out, nil
}
