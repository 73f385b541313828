package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backfill/backfill/checkpoint"
)

// createPartitions creates job j with n partitions cut at 100, 200, ….
func createPartitions(t *testing.T, store *checkpoint.Store, q checkpoint.Querier, n int) {
	t.Helper()
	parts := make([]checkpoint.Partition, n)
	for i := range parts {
		if i > 0 {
			parts[i].After = []string{fmt.Sprint(100 * i)}
		}
		if i < n-1 {
			parts[i].Last = []string{fmt.Sprint(100 * (i + 1))}
		}
	}
	if err := store.CreatePartitions(t.Context(), q, "j", parts); err != nil {
		t.Fatal(err)
	}
}

// recordIn records a chunk of partition l ending at last, in q.
func recordIn(q checkpoint.Querier, store *checkpoint.Store, l *checkpoint.Lease, seq int64, last string) error {
	rec := checkpoint.ChunkRecord{Seq: seq, First: []string{last}, Last: []string{last}, Generation: l.Token, Partition: l.Partition.ID}
	_, err := q.Exec(context.Background(), store.RecordChunkSQL(), checkpoint.RecordChunkArgs("j", rec, 0, 0)...)
	return err
}

// claimedPartition creates job j with one partition and claims it as
// runner a for a second.
func claimedPartition(t *testing.T) (*pgxpool.Pool, *checkpoint.Store, *checkpoint.Lease) {
	t.Helper()
	pool, store := newStore(t, "")
	createJob(t, pool, store, "j")
	createPartitions(t, store, pool, 1)
	a, err := store.ClaimPartition(t.Context(), pool, "j", "a", time.Second)
	if err != nil || a == nil {
		t.Fatalf("claim: %v, %v", a, err)
	}
	return pool, store, a
}

// TestRunnersClaimEachPartitionOnce: runners claiming at the same time
// take every partition exactly once, and none when all are held.
func TestRunnersClaimEachPartitionOnce(t *testing.T) {
	pool, store := newStore(t, "")
	createJob(t, pool, store, "j")
	createPartitions(t, store, pool, 6)
	var mu sync.Mutex
	var claimed []int
	var wg sync.WaitGroup
	for r := range 3 {
		wg.Go(func() {
			for {
				l, err := store.ClaimPartition(t.Context(), pool, "j", fmt.Sprint("runner-", r), time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if l == nil {
					return
				}
				mu.Lock()
				claimed = append(claimed, l.Partition.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(claimed)
	if !slices.Equal(claimed, []int{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("claimed %v, want each of 1…6 once", claimed)
	}
	parts, err := store.Partitions(t.Context(), pool, "j")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if p.Owner == "" || !p.LeaseLive || p.Token != 1 {
			t.Errorf("partition %d: owner %q, live %v, token %d after one claim", p.ID, p.Owner, p.LeaseLive, p.Token)
		}
	}
	if !slices.Equal(parts[1].After, []string{"100"}) || !slices.Equal(parts[1].Last, []string{"200"}) || parts[0].After != nil || parts[5].Last != nil {
		t.Errorf("bounds: %+v", parts)
	}
}

// TestLeaseFencesItsRunner: a runner's commits under a lease fail once it
// has expired, whether or not another runner claimed the partition since;
// its renewal and finish fail too; the new holder commits.
func TestLeaseFencesItsRunner(t *testing.T) {
	pool, store, a := claimedPartition(t)
	ctx := t.Context()
	if err := recordIn(pool, store, a, 1, "10"); err != nil {
		t.Fatalf("commit under a live lease: %v", err)
	}
	if l, err := store.ClaimPartition(ctx, pool, "j", "b", time.Second); err != nil || l != nil {
		t.Fatalf("a held partition was claimed: %v, %v", l, err)
	}
	time.Sleep(1200 * time.Millisecond) // a is stopped past its lease
	if err := recordIn(pool, store, a, 2, "20"); !store.IsFenced(err) {
		t.Fatalf("commit under an expired lease: %v, want fenced", err)
	}
	if _, err := store.RenewLease(ctx, pool, a, time.Second); !errors.Is(err, checkpoint.ErrLeaseLost) {
		t.Fatalf("renewal of an expired lease: %v", err)
	}
	b, err := store.ClaimPartition(ctx, pool, "j", "b", time.Minute)
	if err != nil || b == nil || b.Token != a.Token+1 {
		t.Fatalf("claim after expiry: %+v, %v", b, err)
	}
	if err := recordIn(pool, store, b, 2, "20"); err != nil {
		t.Fatalf("the new holder's commit: %v", err)
	}
	if err := recordIn(pool, store, a, 3, "30"); !store.IsFenced(err) {
		t.Fatalf("the old holder's commit after a new claim: %v, want fenced", err)
	}
	if err := store.FinishPartition(ctx, pool, a); !errors.Is(err, checkpoint.ErrLeaseLost) {
		t.Fatalf("finish by the old holder: %v", err)
	}
	if st, err := store.RenewLease(ctx, pool, b, time.Minute); err != nil || st.Split || st.Live != 1 || st.Rate != 1000 {
		t.Fatalf("renewal of a live lease: %+v, %v", st, err)
	}
	if err := store.FinishPartition(ctx, pool, b); err != nil {
		t.Fatal(err)
	}
	if l, err := store.ClaimPartition(ctx, pool, "j", "c", time.Minute); err != nil || l != nil {
		t.Fatalf("a done partition was claimed: %v, %v", l, err)
	}
}

// TestNoClaimWhileACommitIsInFlight: a commit that passed the fence before
// its lease expired holds the partition: a claim after the expiry skips it
// until the commit ends, and then the claimer sees the chunk.
func TestNoClaimWhileACommitIsInFlight(t *testing.T) {
	pool, store, a := claimedPartition(t)
	ctx := t.Context()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if err := recordIn(tx, store, a, 1, "10"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // the lease expires with the commit in flight
	if l, err := store.ClaimPartition(ctx, pool, "j", "b", time.Minute); err != nil || l != nil {
		t.Fatalf("claimed %+v (%v) while the old holder's commit was in flight", l, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the commit that passed the fence in time: %v", err)
	}
	b, err := store.ClaimPartition(ctx, pool, "j", "b", time.Minute)
	if err != nil || b == nil {
		t.Fatalf("no claim after the commit: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM backfill.chunks WHERE job = 'j' AND partition = $1", b.Partition.ID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the claimer sees %d chunks (%v), want the one committed in flight", n, err)
	}
}
