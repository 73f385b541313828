package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/internal/pgtest"
)

// Issue 12's acceptance: a running job waits for what production feels,
// says why, and goes on (or pauses) as the signal says.

// throttledJob is a job running in the background, and what the tests
// read of it.
type throttledJob struct {
	t    *testing.T
	ctx  context.Context
	db   string
	name string
	*background
}

func startThrottled(t *testing.T, db, name string, extra ...string) *throttledJob {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	args := append([]string{"start", "--source", db, "--job", name, "--from", "src", "--to", "dst", "--chunk-size", "1000",
		"--log-format", "json"}, extra...)
	return &throttledJob{t: t, ctx: ctx, db: db, name: name, background: startBackground(ctx, t, args...)}
}

// rows are the rows the job has committed; -1 while it cannot be read.
func (j *throttledJob) rows() int64 {
	return pollInt(j.ctx, j.db, fmt.Sprintf("SELECT coalesce(sum(rows_read), 0) FROM backfill.chunks WHERE job = '%s'", j.name))
}

func (j *throttledJob) waitFor(what string, cond func() bool) {
	j.t.Helper()
	waitUntil(j.t, j.done, j.stderr, what, cond)
}

// throttledWith waits until status says the job waits, with a reason
// holding each of parts, and returns the status.
func (j *throttledJob) throttledWith(parts ...string) backfill.JobStatus {
	j.t.Helper()
	var s backfill.JobStatus
	j.waitFor("status to say throttled: "+strings.Join(parts, ", "), func() bool {
		// the job's row may not be there yet
		r := cli(j.t, "status", "--dest", j.db, "--job", j.name, "--json")
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &s) != nil || !s.Throttled {
			return false
		}
		for _, p := range parts {
			if !strings.Contains(s.ThrottleReason, p) {
				return false
			}
		}
		return true
	})
	return s
}

// holds checks that no chunk commits from after until the end of for.
func (j *throttledJob) holds(after time.Time, hold time.Duration) {
	j.t.Helper()
	time.Sleep(time.Until(after.Add(hold)))
	last := j.lastCommit()
	if last.After(after) {
		j.t.Fatalf("a chunk committed at %s, after the commits should have stopped (%s):\n%s",
			last.Format(time.StampMilli), after.Format(time.StampMilli), j.stderr)
	}
}

// lastCommit is when the job's newest chunk committed, by the server's
// clock.
func (j *throttledJob) lastCommit() time.Time {
	j.t.Helper()
	var at time.Time
	q := "SELECT coalesce(max(finished_at), '-infinity') FROM backfill.chunks WHERE job = $1"
	if err := connect(j.t, j.db).QueryRow(context.Background(), q, j.name).Scan(&at); err != nil {
		j.t.Fatal(err)
	}
	return at
}

// serverNow is the server's clock, which stamps the chunks.
func serverNow(t *testing.T, db string) time.Time {
	t.Helper()
	var now time.Time
	if err := connect(t, db).QueryRow(context.Background(), "SELECT clock_timestamp()").Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now
}

// finishesExact waits for the job to exit 0 and checks the copy.
func (j *throttledJob) finishesExact(rows int64) {
	j.t.Helper()
	if code := j.exitCode(); code != 0 {
		j.t.Fatalf("exit %d:\n%s", code, j.stderr)
	}
	j.exact(rows)
}

func (j *throttledJob) exact(rows int64) {
	j.t.Helper()
	assertSameRows(j.t, j.db, "src", j.db, "dst")
	s := status(j.t, j.db, j.name)
	if s.State != "done" || s.RowsRead != rows || s.RowsInserted != rows || s.ChunksDone != rows/1000 || s.Throttled || s.ThrottleReason != "" {
		j.t.Fatalf("after the job: %+v", s)
	}
}

// TestReplicaLagThrottles: with a standby's replay paused, commits stop
// within 3 s of its lag passing --max-replica-lag and status names the
// replica; replay resumed, the job goes on and ends exact.
func TestReplicaLagThrottles(t *testing.T) {
	db := itemsDatabase(t, 60_000)
	standby := pgtest.NewStandby(t)
	dbname := queryString(t, db, "SELECT current_database()")
	const maxLag = 2 * time.Second
	j := startThrottled(t, db, "lagged", "--rate", "5000", "--replica", standby.URL(dbname), "--max-replica-lag", maxLag.String())
	j.waitFor("5,000 rows", func() bool { return j.rows() >= 5000 })

	if err := standby.PauseReplay(t.Context()); err != nil {
		t.Fatal(err)
	}
	paused := serverNow(t, db)
	s := j.throttledWith("replica lag", "> 2 s on replica 1")
	t.Logf("status while replay is paused: %s", s.ThrottleReason)
	// the lag passes its limit maxLag after the pause at the latest
	j.holds(paused.Add(maxLag+3*time.Second), 2*time.Second)
	if s := status(t, db, "lagged"); s.RowsRead >= 60_000 || s.State != "running" {
		t.Fatalf("the job did not wait: %+v", s)
	}

	if err := standby.ResumeReplay(t.Context()); err != nil {
		t.Fatal(err)
	}
	j.finishesExact(60_000)
	for _, want := range []string{"throttled: waiting before each commit", "replica lag", "throttle released"} {
		if !strings.Contains(j.stderr.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, j.stderr)
		}
	}
}

// TestUnreachableReplicaFailsClosed: a --replica nobody can reach stops
// every commit, and the job says why.
func TestUnreachableReplicaFailsClosed(t *testing.T) {
	db := itemsDatabase(t, 5_000)
	nowhere := fmt.Sprintf("postgres://backfill@127.0.0.1:%d/postgres?connect_timeout=1", closedPort(t))
	j := startThrottled(t, db, "blind", "--rate", "0", "--replica", nowhere)
	s := j.throttledWith("replica lag on replica 1 unreachable")
	t.Logf("status: %s", s.ThrottleReason)
	time.Sleep(3 * time.Second)
	if n := j.rows(); n != 0 {
		t.Fatalf("%d rows committed with the only replica unreachable:\n%s", n, j.stderr)
	}
	if !strings.Contains(j.stderr.String(), "unreachable") {
		t.Errorf("the log does not say the replica is unreachable:\n%s", j.stderr)
	}
	_ = j.cmd.Process.Signal(syscall.SIGINT)
	if code := j.exitCode(); code != 130 {
		t.Fatalf("interrupted while waiting: exit %d\n%s", code, j.stderr)
	}
	if s := status(t, db, "blind"); s.Throttled || s.ThrottleReason != "" {
		t.Errorf("an interrupted job is not throttled: %+v", s)
	}
}

// closedPort is a local TCP port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// sessions holds n sessions active on db (each in pg_sleep) until the
// returned release.
func holdActiveSessions(t *testing.T, db string, n int) (release func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range n {
		conn := connect(t, db)
		wg.Go(func() { _, _ = conn.Exec(ctx, "SELECT pg_sleep(120)") })
	}
	deadline := time.Now().Add(10 * time.Second)
	for pollInt(ctx, db, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)' AND state = 'active'") < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions not active within 10 s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(release)
	return release
}

// TestActiveSessionsThrottleThenPause: sessions held active past
// --max-active-sessions throttle the job, which continues once they end;
// past --critical-active-sessions the job pauses (exit 130), and resume
// finishes it exact.
func TestActiveSessionsThrottleThenPause(t *testing.T) {
	db := itemsDatabase(t, 40_000)
	j := startThrottled(t, db, "loaded", "--rate", "4000", "--max-active-sessions", "2", "--critical-active-sessions", "4")
	j.waitFor("the first chunks", func() bool { return j.rows() >= 2000 })

	release := holdActiveSessions(t, db, 3)
	held := serverNow(t, db)
	// the count is the server's: a session of another package's test on
	// the same cluster may be active too, so 3 is the least it may say
	s := j.throttledWith("load ", " active sessions > 2 on source and destination")
	t.Logf("status: %s", s.ThrottleReason)
	var active int
	if _, err := fmt.Sscanf(s.ThrottleReason, "load %d active sessions", &active); err != nil || active < 3 {
		t.Fatalf("throttle reason %q: want at least the 3 sessions held (%v)", s.ThrottleReason, err)
	}
	j.holds(held.Add(3*time.Second), 2*time.Second)
	release()
	before := j.rows()
	j.waitFor("commits again", func() bool { return j.rows() > before })

	release = holdActiveSessions(t, db, 5)
	select {
	case <-j.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("the job did not pause within 15 s of the critical load:\n%s", j.stderr)
	}
	release()
	// at least the 5 sessions held: see the throttle's count above
	var criticalCount int
	if m := regexp.MustCompile(`critical load (\d+) active sessions > 4`).FindStringSubmatch(j.stderr.String()); m != nil {
		criticalCount, _ = strconv.Atoi(m[1])
	}
	if code := j.cmd.ProcessState.ExitCode(); code != 130 || criticalCount < 5 {
		t.Fatalf("critical load: exit %d, want the 5 sessions held or more named\n%s", code, j.stderr)
	}
	if s := status(t, db, "loaded"); s.State != "paused" || s.RowsRead >= 40_000 {
		t.Fatalf("after the critical load: %+v", s)
	}
	mustSucceed(t, "resume", "--source", db, "--job", "loaded", "--rate", "0", "--max-active-sessions", "2", "--critical-active-sessions", "4")
	j.exact(40_000)
}

// TestThrottleQueryAndByHand: a --throttle-query that turns true, and
// `backfill set --throttle on` from another terminal, each stop the
// commits within 2 s and let them go within 2 s of turning off. A
// --throttle-query that does not run is refused before anything is
// written.
func TestThrottleQueryAndByHand(t *testing.T) {
	db := itemsDatabase(t, 60_000)
	r := cli(t, "start", "--source", db, "--job", "badquery", "--from", "src", "--to", "dst", "--throttle-query", "SELECT hold FROM no_such_gate")
	if r.code != 1 || !strings.Contains(r.stderr, "no_such_gate") || !strings.Contains(r.stderr, "--throttle-query does not run") {
		t.Fatalf("a throttle query that fails: %s", r)
	}
	if schemaExists(t, db, "backfill") {
		t.Fatal("the refused start wrote its state schema")
	}

	sql(t, db, "CREATE TABLE gate (hold boolean NOT NULL)", "INSERT INTO gate VALUES (false)")
	addr := freeAddr(t)
	j := startThrottled(t, db, "gated", "--rate", "5000", "--throttle-query", "SELECT hold FROM gate", "--metrics-addr", addr,
		"--progress-interval", "1s")
	j.waitFor("the first chunks", func() bool { return j.rows() >= 2000 })

	stopsAndGoes := func(what string, hold, release func(), reason, kind string) {
		t.Helper()
		hold()
		at := serverNow(t, db)
		j.holds(at.Add(2*time.Second), 2*time.Second)
		if s := status(t, db, "gated"); !s.Throttled || !strings.Contains(s.ThrottleReason, reason) {
			t.Fatalf("%s: status %+v", what, s)
		}
		if m := scrapeMetrics(t, addr); m.value("backfill_throttled", "reason", kind) != 1 || m.value("backfill_throttled_seconds_total") <= 0 {
			t.Errorf("%s: backfill_throttled{reason=%q} %v, backfill_throttled_seconds_total %v", what, kind,
				m.value("backfill_throttled", "reason", kind), m.value("backfill_throttled_seconds_total"))
		}
		release()
		released := serverNow(t, db)
		j.waitFor(what+": commits again", func() bool { return j.lastCommit().After(released) })
		if took := j.lastCommit().Sub(released); took > 2*time.Second {
			t.Errorf("%s: the first commit after the release came %v after it", what, took)
		}
		if v := scrapeMetrics(t, addr).value("backfill_throttled", "reason", kind); v != 0 {
			t.Errorf("%s: backfill_throttled{reason=%q} = %v after the release", what, kind, v)
		}
	}
	stopsAndGoes("the throttle query",
		func() { sql(t, db, "UPDATE gate SET hold = true") }, func() { sql(t, db, "UPDATE gate SET hold = false") },
		"throttle query returned true on destination", "throttle_query")
	stopsAndGoes("set --throttle",
		func() { mustSucceed(t, "set", "--dest", db, "--job", "gated", "--throttle", "on") },
		func() { mustSucceed(t, "set", "--dest", db, "--job", "gated", "--throttle", "off") },
		"throttled by hand", "manual")
	j.finishesExact(60_000)
	var progressSaid bool
	for line := range strings.SplitSeq(j.stderr.String(), "\n") {
		progressSaid = progressSaid || strings.Contains(line, `"throttled":true`) && strings.Contains(line, `"throttle_reason":"throttled by hand`) &&
			strings.Contains(line, "progress")
	}
	if !progressSaid {
		t.Errorf("no progress line says the job is throttled by hand:\n%s", j.stderr)
	}
}

// TestAutoRate: --rate auto raises its rate on an idle server, and halves
// it when the probe's latency passes --max-probe-latency, here because a
// session holds a lock the probe's read waits for; status shows the rate
// it chose.
func TestAutoRate(t *testing.T) {
	db := itemsDatabase(t, 120_000)
	sql(t, db, "CREATE TABLE accounts (id int PRIMARY KEY)", "INSERT INTO accounts SELECT generate_series(1, 100)")
	j := startThrottled(t, db, "auto", "--rate", "auto:8000", "--max-probe-latency", "200ms",
		"--probe-query", "SELECT count(*) FROM accounts", "--statement-timeout", "1s")
	logSays := func(part string) bool { return strings.Contains(j.stderr.String(), part) }
	j.waitFor("the rate raised", func() bool { return logSays("doubled: probe latency") })
	j.waitFor("status showing a raised rate", func() bool {
		s := status(t, db, "auto")
		return s.RateAuto && s.RateAutoMax == 8000 && s.Rate > 1000
	})

	lock, err := connect(t, db).Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(context.Background())
	if _, err := lock.Exec(context.Background(), "LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	j.waitFor("the rate halved", func() bool { return logSays("halved: probe latency") })
	if err := lock.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	j.finishesExact(120_000)
	var changes []string
	for line := range strings.SplitSeq(j.stderr.String(), "\n") {
		var ev struct{ Message, Why string }
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Message == "rate changed by --rate auto" {
			changes = append(changes, ev.Why)
		}
	}
	t.Logf("rate changes:\n%s", strings.Join(changes, "\n"))
}

// TestAutoRateSizesThePool: --rate auto starts with one worker and adds
// one when the rate it allows is not reached on an idle server, while the
// job's row keeps --workers as the most it may use; an operator's set
// --workers takes the pool over, and the job still ends exact.
func TestAutoRateSizesThePool(t *testing.T) {
	// enough rows that the job is still running when the operator steps
	// in: on an idle machine --rate auto copied 400,000 in about 3 s
	const rows = 1_200_000
	db := itemsDatabase(t, rows)
	j := startThrottled(t, db, "sized", "--rate", "auto", "--workers", "4")
	// logged reports whether a log line with message msg carries every
	// field of want (JSON numbers decode as float64).
	logged := func(msg string, want map[string]any) bool {
		for _, line := range logLinesWith(j.stderr.String(), msg) {
			if fieldsMatch(line, want) {
				return true
			}
		}
		return false
	}
	j.waitFor("--rate auto to start with one worker of 4", func() bool {
		return len(findLogLines(j.stderr.String(), map[string]any{"workers": 1.0, "max_workers": 4.0})) > 0
	})
	j.waitFor("a worker added", func() bool {
		for _, line := range logLinesWith(j.stderr.String(), "workers changed by --rate auto") {
			if fieldsMatch(line, map[string]any{"from_workers": 1.0, "to_workers": 2.0}) && strings.HasPrefix(fmt.Sprint(line["why"]), "worker added: ") {
				return true
			}
		}
		return false
	})
	if s := status(t, db, "sized"); s.Workers != 4 {
		t.Errorf("status says %d workers while --rate auto sizes the pool; want the ceiling, 4", s.Workers)
	}
	// held by hand, so that the job is still running when the operator
	// sets its workers
	mustSucceed(t, "set", "--dest", db, "--job", "sized", "--throttle", "on")
	mustSucceed(t, "set", "--dest", db, "--job", "sized", "--workers", "3")
	j.waitFor("the operator's count to end the sizing", func() bool {
		return logged("workers set by request: --rate auto sets only the rate from now on", map[string]any{"workers": 3.0}) &&
			logged("workers changed by request", map[string]any{"to": 3.0})
	})
	mustSucceed(t, "set", "--dest", db, "--job", "sized", "--throttle", "off")
	j.finishesExact(rows)
	if s := status(t, db, "sized"); s.Workers != 3 {
		t.Errorf("status says %d workers after set --workers 3", s.Workers)
	}
	log := j.stderr.String()
	after := log[strings.Index(log, "workers set by request"):]
	if n := len(logLinesWith(after, "workers changed by --rate auto")) + len(logLinesWith(after, "rate and workers changed by --rate auto")); n > 0 {
		t.Errorf("--rate auto resized the pool %d times after the operator set it:\n%s", n, after)
	}
}

// TestAutoRateSizesChunksByTime: without --chunk-size, --rate auto keeps
// chunks sized by time, each at most a tenth of a second of the rate it
// set, rather than the fixed 1,000 rows of a rate an operator sets; the
// job still ends exact.
func TestAutoRateSizesChunksByTime(t *testing.T) {
	const rows = 300_000
	db := itemsDatabase(t, rows)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	j := &throttledJob{t: t, ctx: ctx, db: db, name: "timed", background: startBackground(ctx, t, "start", "--source", db, "--job", "timed",
		"--from", "src", "--to", "dst", "--rate", "auto", "--log-format", "json")}
	if code := j.exitCode(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, j.stderr)
	}
	assertSameRows(t, db, "src", db, "dst")
	chunks := queryInt(t, db, "SELECT count(*) FROM backfill.chunks WHERE job = 'timed' AND rows_read > 0")
	if s := status(t, db, "timed"); s.State != "done" || s.RowsRead != rows || s.RowsInserted != rows || s.ChunksDone != chunks {
		t.Fatalf("after the job (%d chunks recorded): %+v", chunks, s)
	}
	largest := queryInt(t, db, "SELECT max(rows_read) FROM backfill.chunks WHERE job = 'timed'")
	grown := 0
	for _, line := range logLinesWith(j.stderr.String(), "chunk size changed") {
		if to, _ := line["to"].(float64); to > 1000 {
			grown++
		}
	}
	if largest <= 1000 || grown == 0 {
		t.Fatalf("the largest chunk had %d rows and %d lines said the size grew past 1,000; want chunks sized by time:\n%s", largest, grown, j.stderr)
	}
	t.Logf("largest chunk %d rows", largest)
}

// fieldsMatch reports whether the decoded log line has every field of want.
func fieldsMatch(line, want map[string]any) bool {
	for k, v := range want {
		if line[k] != v {
			return false
		}
	}
	return true
}

// findLogLines are the decoded JSON log lines, whatever their message,
// that carry every field of want.
func findLogLines(log string, want map[string]any) []map[string]any {
	var out []map[string]any
	for line := range strings.Lines(log) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && fieldsMatch(m, want) {
			out = append(out, m)
		}
	}
	return out
}

// TestDryRunReadsEachThrottleSignal: dry-run reads every signal once and
// says what it read, a replica it cannot reach included.
func TestDryRunReadsEachThrottleSignal(t *testing.T) {
	db := itemsDatabase(t, 100)
	nowhere := fmt.Sprintf("postgres://backfill@127.0.0.1:%d/postgres?connect_timeout=1", closedPort(t))
	r := cli(t, "dry-run", "--source", db, "--job", "rehearsed", "--from", "src", "--to", "dst", "--json",
		"--replica", nowhere, "--max-active-sessions", "50", "--max-probe-latency", "1s", "--throttle-query", "SELECT false")
	if r.code != 0 {
		t.Fatalf("dry-run: %s", r)
	}
	var rep backfill.DryRunReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	got := map[string]backfill.DryRunSignal{}
	for _, s := range rep.Throttle {
		got[s.Kind] = s
	}
	if s := got["replica_lag"]; !s.Throttled || !strings.Contains(s.Error, "connect") {
		t.Errorf("an unreachable replica: %+v", s)
	}
	if s := got["load"]; s.Throttled || !strings.HasSuffix(s.Reading, "<= 50 on source and destination") {
		t.Errorf("load: %+v", s)
	}
	if s := got["probe_latency"]; s.Throttled || !strings.Contains(s.Reading, "<= 1 s on source and destination") {
		t.Errorf("probe: %+v", s)
	}
	if s := got["throttle_query"]; s.Throttled || s.Reading != "throttle query returned false on destination" {
		t.Errorf("throttle query: %+v", s)
	}
	text := mustSucceed(t, "dry-run", "--source", db, "--job", "rehearsed", "--from", "src", "--to", "dst", "--max-active-sessions", "50").stdout
	if !strings.Contains(text, "active sessions <= 50 on source and destination") || !strings.Contains(text, "standby of destination") {
		t.Errorf("dry-run's text does not list the signals:\n%s", text)
	}
}
