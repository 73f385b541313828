package integration_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// partitionOf is the partition runner holds a live lease on, 0 for none.
func partitionOf(ctx context.Context, db, job string, runner *background) int64 {
	return pollInt(ctx, db, fmt.Sprintf(`SELECT coalesce(min(id), 0) FROM backfill.partitions
		WHERE job = '%s' AND owner LIKE '%%:%d:%%' AND lease_until > now()`, job, runner.cmd.Process.Pid))
}

// assertCopiedOnce checks a partitioned job's end: the destination equals
// the source, the counters are those of one clean run over the source,
// every partition is done, and no two committed chunks overlap.
func assertCopiedOnce(t *testing.T, db, job string) {
	t.Helper()
	assertSameRows(t, db, "src", db, "dst")
	rows := queryInt(t, db, "SELECT count(*) FROM src")
	st := status(t, db, job)
	clean := counters{RowsRead: rows, RowsInserted: rows}
	got := countersOf(st)
	got.ChunksDone = 0 // partitions cut chunks at their bounds
	if got != clean || st.State != "done" {
		t.Errorf("state %s, counters %+v, want done and %+v", st.State, got, clean)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM backfill.partitions WHERE job = $1 AND state <> 'done'", job); n != 0 {
		t.Errorf("%d partitions not done", n)
	}
	assertNoOverlapAndUniqueSeqs(t, db, job)
}

// TestThreeRunnersOneKilled: three runner processes share a job of six
// partitions; one is SIGKILLed in the middle of a partition. The others
// take its partition over once its lease expires, and the job ends exact:
// every row once, the counters of one clean run, no overlapping chunks.
func TestThreeRunnersOneKilled(t *testing.T) {
	const lease = 3 * time.Second
	db := itemsDatabase(t, 500_000)
	ctx := t.Context()
	common := []string{"--source", db, "--dest", db, "--job", "p", "--workers", "2", "--lease-timeout", lease.String(), "--log-format", "json"}
	first := startBackground(ctx, t, append([]string{"start", "--from", "src", "--to", "dst", "--partitions", "6", "--rate", "60000"}, common...)...)
	waitUntil(t, first.done, first.stderr, "the partitions exist", func() bool {
		return pollInt(ctx, db, "SELECT count(*) FROM backfill.partitions WHERE job = 'p'") == 6
	})
	runners := []*background{first, startBackground(ctx, t, append([]string{"join"}, common...)...),
		startBackground(ctx, t, append([]string{"join"}, common...)...)}
	victim := runners[1]
	var held int64
	waitUntil(t, victim.done, victim.stderr, "the second runner is inside a partition", func() bool {
		held = partitionOf(ctx, db, "p", victim)
		return held > 0 && pollInt(ctx, db, fmt.Sprintf("SELECT count(*) FROM backfill.chunks WHERE job = 'p' AND partition = %d", held)) >= 5
	})
	waitUntil(t, first.done, first.stderr, "status lists the three runners", func() bool {
		return len(status(t, db, "p").Runners) == 3
	})
	st := status(t, db, "p")
	if st.State != "running" || len(st.Partitions) < 6 {
		t.Fatalf("status of the running job: state %s, %d partitions, want running and 6 or more", st.State, len(st.Partitions))
	}
	for _, r := range st.Runners {
		if r.PID == 0 || r.Host == "" || len(r.Partitions) != 1 || r.HeartbeatAgeSeconds > lease.Seconds() {
			t.Errorf("runner %+v: want its host, pid, one partition and a fresh heartbeat", r)
		}
	}
	token := queryInt(t, db, "SELECT token FROM backfill.partitions WHERE job = 'p' AND id = $1", held)
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-victim.done
	var takenOver time.Duration
	waitUntil(t, first.done, first.stderr, "another runner takes the killed runner's partition", func() bool {
		state := queryString(t, db, "SELECT state || ':' || token FROM backfill.partitions WHERE job = 'p' AND id = $1", held)
		if state != fmt.Sprintf("pending:%d", token) {
			takenOver = time.Since(killed)
			return true
		}
		return false
	})
	// the lease runs out at most one lease after the kill; a runner with
	// nothing to do claims within a beat of that
	if limit := lease + 2*time.Second; takenOver > limit {
		t.Errorf("partition %d taken over %s after the kill, want within %s", held, takenOver.Round(time.Millisecond), limit)
	}
	for _, r := range []*background{runners[0], runners[2]} {
		if code := r.exitCode(); code != 0 {
			t.Fatalf("runner exited %d:\n%s", code, r.stderr)
		}
	}
	t.Logf("partition %d taken over %s after its runner was killed", held, takenOver.Round(time.Millisecond))
	assertCopiedOnce(t, db, "p")
}

// TestStoppedRunnerLosesItsLease: a runner stopped (SIGSTOP) past its
// lease's timeout cannot commit a chunk once it goes on (SIGCONT): it exits
// saying it lost its lease, and a runner that joins then finishes the job
// exact.
func TestStoppedRunnerLosesItsLease(t *testing.T) {
	const lease = 2 * time.Second
	db := itemsDatabase(t, 100_000)
	ctx := t.Context()
	common := []string{"--source", db, "--dest", db, "--job", "p", "--workers", "2", "--lease-timeout", lease.String(), "--log-format", "json"}
	runner := startBackground(ctx, t, append([]string{"start", "--from", "src", "--to", "dst", "--partitions", "2", "--rate", "5000"}, common...)...)
	var held int64
	waitUntil(t, runner.done, runner.stderr, "the runner commits chunks of a partition", func() bool {
		held = partitionOf(ctx, db, "p", runner)
		return held > 0 && pollInt(ctx, db, "SELECT count(*) FROM backfill.chunks WHERE job = 'p'") >= 3
	})
	token := queryInt(t, db, "SELECT token FROM backfill.partitions WHERE job = 'p' AND id = $1", held)
	if err := runner.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(lease + time.Second)
	resumedAt := queryString(t, db, "SELECT clock_timestamp()::text")
	if err := runner.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-runner.done:
	case <-time.After(time.Minute):
		t.Fatalf("the stopped runner did not exit within a minute of going on:\n%s", runner.stderr)
	}
	if code := runner.cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(runner.stderr.String(), "lost the lease") {
		t.Fatalf("the runner exited %d, want a failure saying it lost its lease:\n%s", code, runner.stderr)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM backfill.chunks WHERE job = 'p' AND partition = $1 AND generation = $2
		AND finished_at > $3::timestamptz`, held, token, resumedAt); n != 0 {
		t.Fatalf("the runner committed %d chunks under its expired lease after going on", n)
	}
	mustSucceed(t, append([]string{"join", "--rate", "0"}, common...)...)
	assertCopiedOnce(t, db, "p")
}

// TestIdleRunnerSplitsTheLargestPartition: a runner that finds no free
// partition gets the unread half of the one another runner is reading:
// the holder cuts its read, a new partition takes the rest, the idle
// runner claims it, and the job ends exact.
func TestIdleRunnerSplitsTheLargestPartition(t *testing.T) {
	db := itemsDatabase(t, 200_000)
	ctx := t.Context()
	common := []string{"--source", db, "--dest", db, "--job", "p", "--workers", "2", "--lease-timeout", "3s", "--log-format", "json"}
	first := startBackground(ctx, t, append([]string{"start", "--from", "src", "--to", "dst", "--partitions", "2", "--rate", "40000"}, common...)...)
	waitUntil(t, first.done, first.stderr, "the first runner is inside partition 1", func() bool {
		return partitionOf(ctx, db, "p", first) == 1 && pollInt(ctx, db, "SELECT count(*) FROM backfill.chunks WHERE job = 'p'") >= 10
	})
	second := startBackground(ctx, t, append([]string{"join"}, common...)...)
	for _, r := range []*background{first, second} {
		if code := r.exitCode(); code != 0 {
			t.Fatalf("runner exited %d:\n%s", code, r.stderr)
		}
	}
	parts := queryInt(t, db, "SELECT count(*) FROM backfill.partitions WHERE job = 'p'")
	logs := first.stderr.String() + second.stderr.String()
	if parts < 3 || !strings.Contains(logs, "partition split: another runner takes the rest") {
		t.Fatalf("%d partitions after the run, want a split of one:\n%s", parts, logs)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM backfill.chunks WHERE job = 'p' AND partition > 2"); n == 0 {
		t.Errorf("no chunk was committed in the partitions split off")
	}
	assertCopiedOnce(t, db, "p")
}

// TestPauseStopsEveryRunner: pause reaches both runners of a partitioned
// job; each exits as paused (130), the job is paused, and a resume
// finishes it exact.
func TestPauseStopsEveryRunner(t *testing.T) {
	db := itemsDatabase(t, 100_000)
	ctx := t.Context()
	common := []string{"--source", db, "--dest", db, "--job", "p", "--workers", "2", "--log-format", "json"}
	first := startBackground(ctx, t, append([]string{"start", "--from", "src", "--to", "dst", "--partitions", "4", "--rate", "5000"}, common...)...)
	waitUntil(t, first.done, first.stderr, "the partitions exist", func() bool {
		return pollInt(ctx, db, "SELECT count(*) FROM backfill.partitions WHERE job = 'p'") == 4
	})
	second := startBackground(ctx, t, append([]string{"join"}, common...)...)
	waitUntil(t, second.done, second.stderr, "both runners hold a partition", func() bool {
		return partitionOf(ctx, db, "p", first) > 0 && partitionOf(ctx, db, "p", second) > 0
	})
	mustSucceed(t, "pause", "--dest", db, "--job", "p")
	for _, r := range []*background{first, second} {
		if code := r.exitCode(); code != 130 {
			t.Fatalf("runner exited %d after the pause, want 130:\n%s", code, r.stderr)
		}
	}
	if st := status(t, db, "p"); st.State != "paused" || len(st.Runners) != 0 {
		t.Fatalf("after the pause: state %s, %d runners, want paused and none", st.State, len(st.Runners))
	}
	mustSucceed(t, append([]string{"resume", "--rate", "0"}, common...)...)
	assertCopiedOnce(t, db, "p")
}

// TestSetRateReachesEveryRunner: set --rate on a partitioned job changes
// the share of each of its runners within a few seconds, and the job ends
// exact.
func TestSetRateReachesEveryRunner(t *testing.T) {
	db := itemsDatabase(t, 60_000)
	ctx := t.Context()
	common := []string{"--source", db, "--dest", db, "--job", "p", "--workers", "2", "--log-format", "json"}
	first := startBackground(ctx, t, append([]string{"start", "--from", "src", "--to", "dst", "--partitions", "4", "--rate", "2000"}, common...)...)
	waitUntil(t, first.done, first.stderr, "the partitions exist", func() bool {
		return pollInt(ctx, db, "SELECT count(*) FROM backfill.partitions WHERE job = 'p'") == 4
	})
	second := startBackground(ctx, t, append([]string{"join"}, common...)...)
	waitUntil(t, second.done, second.stderr, "both runners share the cap", func() bool {
		return strings.Contains(first.stderr.String(), `"rate":1000,"job_rate":2000`) &&
			strings.Contains(second.stderr.String(), `"rate":1000,"job_rate":2000`)
	})
	mustSucceed(t, "set", "--dest", db, "--job", "p", "--rate", "40000")
	set := time.Now()
	for _, r := range []*background{first, second} {
		waitUntil(t, r.done, r.stderr, "the runner takes its share of the new cap", func() bool {
			return strings.Contains(r.stderr.String(), `"job_rate":40000`)
		})
	}
	if took := time.Since(set); took > 3*time.Second {
		t.Errorf("the runners took %s to take their shares of the new rate", took.Round(time.Millisecond))
	}
	for _, r := range []*background{first, second} {
		if code := r.exitCode(); code != 0 {
			t.Fatalf("runner exited %d:\n%s", code, r.stderr)
		}
	}
	assertCopiedOnce(t, db, "p")
}
