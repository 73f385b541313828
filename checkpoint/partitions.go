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
	LeaseLive     bool       // by the database's clock
	RenewedAt     *time.Time // when the lease was last taken or renewed
	// RowsRead counts the rows the partition's chunks read, in all and
	// over the last minute.
	RowsRead, RecentRows int64
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

// LeaseState is what a renewal of a lease reads for its runner.
type LeaseState struct {
	// Split is whether an idle runner asked for the partition to be split.
	Split bool
	// Rate is the job's rate cap across all its runners (0: none), and
	// Pause whether an operator asked it to pause.
	Rate  float64
	Pause bool
	// Live is how many leases of the job are live, this one included.
	Live int
}

// RenewLease extends a lease that has not expired by lease from now and
// reads the job's requests; ErrLeaseLost once it has expired or the
// partition was claimed again.
func (s *Store) RenewLease(ctx context.Context, q Querier, l *Lease, lease time.Duration) (LeaseState, error) {
	var st LeaseState
	err := q.QueryRow(ctx, s.stmts.Get(bfsql.PartitionRenew), l.Job, l.Partition.ID, l.Token, lease).Scan(&st.Split, &st.Rate, &st.Pause, &st.Live)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("renew the lease of job %q partition %d (token %d): %w", l.Job, l.Partition.ID, l.Token, ErrLeaseLost)
	}
	if err != nil {
		return st, fmt.Errorf("renew the lease of job %q partition %d: %w", l.Job, l.Partition.ID, err)
	}
	return st, nil
}

// SplitPartition ends the lease's partition at key at and makes the rest,
// up to its old end, a new pending partition, whose id it returns;
// ErrLeaseLost when the lease is no longer live. rows are the estimated
// rows of the partition as cut and of the new one.
func (s *Store) SplitPartition(ctx context.Context, q Querier, l *Lease, at []string, keep, handOver int64) (int, error) {
	var id int
	err := q.QueryRow(ctx, s.stmts.Get(bfsql.PartitionSplit), l.Job, l.Partition.ID, l.Token, at, l.Partition.Last, handOver, keep).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("split job %q partition %d (token %d): %w", l.Job, l.Partition.ID, l.Token, ErrLeaseLost)
	}
	if err != nil {
		return 0, fmt.Errorf("split job %q partition %d at %v: %w", l.Job, l.Partition.ID, at, err)
	}
	l.Partition.Last, l.Partition.RowsEstimated = at, keep
	return id, nil
}

// RequestSplit asks the holder of the partition with the most rows left
// to split it, if that is at least minRows; it returns the partition's id,
// 0 when none qualifies.
func (s *Store) RequestSplit(ctx context.Context, q Querier, job string, minRows int64) (int, error) {
	var id int
	err := q.QueryRow(ctx, s.stmts.Get(bfsql.PartitionRequestSplit), job, minRows).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("ask for a split of a partition of job %q: %w", job, err)
	}
	return id, nil
}

// PartitionSeqs is how many seqs each partition's chunks may take: the
// chunks of partition n are numbered from n × PartitionSeqs + 1.
const PartitionSeqs = 1 << 40

// PartitionNextSeq is the seq the next chunk of a partition takes.
func (s *Store) PartitionNextSeq(ctx context.Context, q Querier, job string, partition int) (int64, error) {
	base := int64(partition) * PartitionSeqs
	var last int64
	if err := q.QueryRow(ctx, s.stmts.Get(bfsql.ChunkMaxSeqIn), job, base, base+PartitionSeqs).Scan(&last); err != nil {
		return 0, fmt.Errorf("read the last seq of job %q partition %d: %w", job, partition, err)
	}
	return last + 1, nil
}

// RunPartitioned records a partitioned job as running at rate (rows per
// second, 0 for no cap, shared by all its runners), for a runner that
// joins it.
func (s *Store) RunPartitioned(ctx context.Context, q Querier, job string, rate float64) error {
	if _, err := q.Exec(ctx, s.stmts.Get(bfsql.JobRunPartitioned), job, rate); err != nil {
		return fmt.Errorf("record job %q running: %w", job, err)
	}
	return nil
}

// SetStatePartitioned records how a partitioned job's run ended, if this
// runner is the one to: done only once no partition is left to read,
// another state only when no other runner holds a live lease. It reports
// whether it recorded it.
func (s *Store) SetStatePartitioned(ctx context.Context, q Querier, job, state, lastError string) (bool, error) {
	tag, err := q.Exec(ctx, s.stmts.Get(bfsql.JobSetStatePartitioned), job, state, nullIfEmpty(lastError))
	if err != nil {
		return false, fmt.Errorf("set job %q to %s: %w", job, state, err)
	}
	return tag.RowsAffected() == 1, nil
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
		err := r.Scan(&p.ID, &p.After, &p.Last, &p.RowsEstimated, &p.State, &owner, &p.Token, &p.LeaseUntil, &live,
			&p.RenewedAt, &p.RowsRead, &p.RecentRows)
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

// Requests reads a job's rate cap and pause request without a heartbeat:
// for a runner of a partitioned job between partitions.
func (s *Store) Requests(ctx context.Context, q Querier, job string) (Requests, error) {
	var r Requests
	if err := q.QueryRow(ctx, s.stmts.Get(bfsql.JobRequests), job).Scan(&r.Rate, &r.Pause); err != nil {
		return r, fmt.Errorf("read the requests of job %q: %w", job, err)
	}
	return r, nil
}
