package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	bfsql "github.com/backfill/backfill/sql"
)

// ErrLeaseLost is returned (wrapped) for a write under a partition's lease
// that has expired or that another runner has claimed since: the write did
// not happen.
var ErrLeaseLost = errors.New("the partition's lease is lost")

// Partition is one contiguous key range (After, Last] of a job spread over
// several runners.
type Partition struct {
	ID            int
	After, Last   []string // nil: the start of the table, the job's end
	RowsEstimated int64
	State         string // "pending" or "done"
	Owner         string // the runner holding its lease, "" for none
	Token         int64  // raised by every claim
	LeaseUntil    *time.Time
	LeaseLive     bool // by the database's clock
}

// Lease is a runner's hold on a partition: the partition's token fences
// every chunk it commits.
type Lease struct {
	Job       string
	Partition Partition
	Token     int64
}

// CreatePartitions records a new job's partitions, in key order, ids from
// 1; in the transaction that creates the job, so none is missing.
func (s *Store) CreatePartitions(ctx context.Context, q Querier, job string, parts []Partition) error {
	for i, p := range parts {
		if _, err := q.Exec(ctx, s.stmts.Get(bfsql.PartitionCreate), job, i+1, p.After, p.Last, p.RowsEstimated); err != nil {
			return fmt.Errorf("create partition %d of %d of job %q: %w", i+1, len(parts), job, err)
		}
	}
	return nil
}

// ClaimPartition takes a pending partition whose lease is free or has
// expired for owner, for lease, and raises its token: every commit under
// an earlier token fails from then on. A partition with a commit in flight
// is passed over until it ends, so the claimer's read of the checkpoint
// includes it. nil when no partition is free.
func (s *Store) ClaimPartition(ctx context.Context, q Querier, job, owner string, lease time.Duration) (*Lease, error) {
	var l Lease
	p := &l.Partition
	err := q.QueryRow(ctx, s.stmts.Get(bfsql.PartitionClaim), job, owner, lease).Scan(&p.ID, &p.After, &p.Last, &p.Token, &p.RowsEstimated)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim a partition of job %q: %w", job, err)
	}
	p.State, p.Owner, l.Job, l.Token = "pending", owner, job, p.Token
	return &l, nil
}

// RenewLease extends a lease that has not expired by lease from now, and
// reports whether another runner asked for the partition to be split;
// ErrLeaseLost once it has expired or the partition was claimed again.
func (s *Store) RenewLease(ctx context.Context, q Querier, l *Lease, lease time.Duration) (split bool, err error) {
	err = q.QueryRow(ctx, s.stmts.Get(bfsql.PartitionRenew), l.Job, l.Partition.ID, l.Token, lease).Scan(&split)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("renew the lease of job %q partition %d (token %d): %w", l.Job, l.Partition.ID, l.Token, ErrLeaseLost)
	}
	if err != nil {
		return false, fmt.Errorf("renew the lease of job %q partition %d: %w", l.Job, l.Partition.ID, err)
	}
	return split, nil
}

// ReleaseLease gives a partition up for another runner to claim at once.
func (s *Store) ReleaseLease(ctx context.Context, q Querier, l *Lease) error {
	if _, err := q.Exec(ctx, s.stmts.Get(bfsql.PartitionRelease), l.Job, l.Partition.ID, l.Token); err != nil {
		return fmt.Errorf("release job %q partition %d: %w", l.Job, l.Partition.ID, err)
	}
	return nil
}

// FinishPartition records the partition read to its end, under a lease
// still held; ErrLeaseLost otherwise.
func (s *Store) FinishPartition(ctx context.Context, q Querier, l *Lease) error {
	tag, err := q.Exec(ctx, s.stmts.Get(bfsql.PartitionDone), l.Job, l.Partition.ID, l.Token)
	if err != nil {
		return fmt.Errorf("finish job %q partition %d: %w", l.Job, l.Partition.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("finish job %q partition %d (token %d): %w", l.Job, l.Partition.ID, l.Token, ErrLeaseLost)
	}
	return nil
}

// Partitions lists a job's partitions by id.
func (s *Store) Partitions(ctx context.Context, q Querier, job string) ([]Partition, error) {
	rows, err := q.Query(ctx, s.stmts.Get(bfsql.PartitionList), job)
	if err != nil {
		return nil, fmt.Errorf("list the partitions of job %q: %w", job, err)
	}
	parts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Partition, error) {
		var p Partition
		var owner *string
		var live *bool
		err := r.Scan(&p.ID, &p.After, &p.Last, &p.RowsEstimated, &p.State, &owner, &p.Token, &p.LeaseUntil, &live)
		if owner != nil {
			p.Owner = *owner
		}
		p.LeaseLive = live != nil && *live
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("list the partitions of job %q: %w", job, err)
	}
	return parts, nil
}
