package throttle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/internal/pgcluster"
	"github.com/backfill/backfill/internal/pgtest"
)

// The tests here run one at a time, never in parallel: a standby replicates
// the whole cluster, so one test's paused standby is every test's lagging
// one in pg_stat_replication, and the load tests count every session of the
// cluster.
func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	stateSchema = "backfill"
	jobName     = "copy_orders"
	// ourApp is the application_name of the job's own sessions.
	ourApp = "backfill:" + jobName
)

// dial returns a read-only Connect to url with the job's application_name.
func dial(t *testing.T, url string, timeout time.Duration, access Access) Connect {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = ourApp
	return Dialer(cfg, timeout, access)
}

// destination is a test database with the state schema and the job's row.
type destination struct {
	url  string
	pool *pgxpool.Pool
}

func newDestination(t *testing.T) destination {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store, err := checkpoint.New(stateSchema)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateJob(t.Context(), pool, checkpoint.NewJob{Name: jobName, Spec: []byte(`{}`), Rate: 1000, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	return destination{url: url, pool: pool}
}

func (d destination) database(t *testing.T) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(d.url)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Database
}

// heartbeat starts the job's heartbeat on d until the test ends.
func heartbeat(t *testing.T, d destination) *Heartbeat {
	t.Helper()
	hb, err := NewHeartbeat(HeartbeatConfig{
		Connect: dial(t, d.url, 0, ReadWrite),
		Schema:  stateSchema,
		Job:     jobName,
		OnError: func(err error) { t.Logf("heartbeat: %v", err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.Beat(t.Context()); err != nil {
		t.Fatal(err)
	}
	runInBackground(t, hb.Run)
	return hb
}

// change is one OnChange the test heard, and when.
type change struct {
	at     time.Time
	status Status
}

// running is a Throttler running until the test ends, with what it said.
type running struct {
	*Throttler
	mu      sync.Mutex
	changes []change
	notes   []string
}

func runThrottler(t *testing.T, cfg Config) *running {
	t.Helper()
	r := &running{}
	cfg.OnChange = func(s Status) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.changes = append(r.changes, change{at: time.Now(), status: s})
		t.Logf("throttle: %v %s", s.Throttled, s.Reason)
	}
	cfg.OnNote = func(sig, note string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.notes = append(r.notes, sig+": "+note)
	}
	th, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Throttler = th
	runInBackground(t, th.Run)
	return r
}

// await waits up to limit for the throttle to be throttled (or not) and
// returns how long that took and the reason then.
func (r *running) await(t *testing.T, throttled bool, limit time.Duration) (time.Duration, string) {
	t.Helper()
	began := time.Now()
	for {
		got, reason, _ := r.State()
		if got == throttled {
			return time.Since(began), reason
		}
		if time.Since(began) > limit {
			t.Fatalf("not throttled=%v within %v; state: %v %q", throttled, limit, got, reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expect waits for the throttle to be throttled (or not) after what the
// test did, logs how long that took, fails the test past within, and
// returns the reason.
func (r *running) expect(t *testing.T, throttled bool, within time.Duration, after string) string {
	t.Helper()
	took, reason := r.await(t, throttled, within+10*time.Second)
	t.Logf("%s: throttled %v after %v (%s)", after, throttled, took.Round(time.Millisecond), reason)
	if took > within {
		t.Errorf("%s: throttled %v only after %v; want within %v", after, throttled, took, within)
	}
	return reason
}

func runInBackground(t *testing.T, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("background run: %v", err)
		}
	})
}

func TestReplicaLagFollowsPausedReplay(t *testing.T) {
	dest := newDestination(t)
	standby := pgtest.NewStandby(t)
	hb := heartbeat(t, dest)
	onStandby := standby.URL(dest.database(t))
	exact, err := NewReplicaLag(ReplicaConfig{
		Where: "replica 1", Connect: dial(t, onStandby, 0, ReadOnly),
		Schema: stateSchema, Job: jobName, MaxLag: time.Second, Heartbeat: hb,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Without this process's history, as pt-heartbeat measures: up to a
	// beat's interval more, so a limit of 2 s does not flap at rest.
	ptHeartbeat, err := NewReplicaLag(ReplicaConfig{
		Where: "replica 1", Connect: dial(t, onStandby, 0, ReadOnly),
		Schema: stateSchema, Job: jobName, MaxLag: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ptHeartbeat.Close(context.Background())
	th := runThrottler(t, Config{Signals: []Signal{exact}})
	th.expect(t, false, 5*time.Second, "start")

	awaitHeartbeatOn(t, onStandby) // the steady state: it has replayed a beat
	reason, paused := pauseReplay(t, standby, th)
	if !strings.HasPrefix(reason, "replica lag ") || !strings.HasSuffix(reason, " > 1 s on replica 1") {
		t.Errorf("reason %q; want replica lag … > 1 s on replica 1", reason)
	}
	for time.Since(paused) < 3500*time.Millisecond {
		time.Sleep(50 * time.Millisecond)
	}
	r, err := ptHeartbeat.Check(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pt-heartbeat measure %v after the pause: %s", time.Since(paused).Round(time.Millisecond), r.Text)
	if !r.Throttle {
		t.Errorf("pt-heartbeat measure 3.5 s into a pause: %q; want past 2 s", r.Text)
	}

	resumeReplay(t, standby, th, 3*time.Second)
	if r, err := ptHeartbeat.Check(t.Context()); err != nil || r.Throttle {
		t.Errorf("pt-heartbeat measure after resume: %+v, %v; want under 2 s", r, err)
	}
}

// pauseReplay pauses the standby's replay and expects th, with a limit of
// 1 s, to throttle within 4 s: the standby first lacks a beat within a
// beat's interval (1 s) of the pause, its lag passes the limit a second
// later, and a poll each second sees that within another.
func pauseReplay(t *testing.T, standby *pgcluster.Standby, th *running) (reason string, paused time.Time) {
	t.Helper()
	paused = time.Now()
	if err := standby.PauseReplay(t.Context()); err != nil {
		t.Fatal(err)
	}
	return th.expect(t, true, 4*time.Second, "replay paused"), paused
}

// resumeReplay resumes the standby's replay and expects th to release
// within the given time.
func resumeReplay(t *testing.T, standby *pgcluster.Standby, th *running, within time.Duration) {
	t.Helper()
	if err := standby.ResumeReplay(t.Context()); err != nil {
		t.Fatal(err)
	}
	th.expect(t, false, within, "replay resumed")
}

// awaitHeartbeatOn waits until the standby at url shows the job's heartbeat.
func awaitHeartbeatOn(t *testing.T, url string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var beats int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM backfill.heartbeat WHERE job = $1", jobName).Scan(&beats); err != nil {
			t.Fatal(err)
		}
		if beats == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat on the standby after 10 s")
		}
	}
}

func TestUnreachableReplicaFailsClosed(t *testing.T) {
	dest := newDestination(t)
	standby := pgtest.NewStandby(t)
	hb := heartbeat(t, dest)
	lag, err := NewReplicaLag(ReplicaConfig{
		Where: "replica 1", Connect: dial(t, standby.URL(dest.database(t)), 0, ReadOnly),
		Schema: stateSchema, Job: jobName, MaxLag: 10 * time.Second, Heartbeat: hb,
	})
	if err != nil {
		t.Fatal(err)
	}
	th := runThrottler(t, Config{Signals: []Signal{lag}})
	th.expect(t, false, 5*time.Second, "start")

	if err := standby.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	// 3 tries a second apart, and the standby's shutdown
	reason := th.expect(t, true, 5*time.Second, "standby stopped")
	if !strings.HasPrefix(reason, "replica lag on replica 1 unreachable (3 tries in a row): ") {
		t.Errorf("reason %q; want replica 1 unreachable after 3 tries", reason)
	}
}

func TestStandbysOfThePrimary(t *testing.T) {
	dest := newDestination(t)
	standby := pgtest.NewStandby(t)
	heartbeat(t, dest) // the WAL the paused standby falls behind on
	standbys, err := NewStandbys(StandbysConfig{
		Where: "destination", Connect: dial(t, dest.url, 0, ReadOnly), MaxLag: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	th := runThrottler(t, Config{Signals: []Signal{standbys}})
	th.expect(t, false, 5*time.Second, "start")

	reason, _ := pauseReplay(t, standby, th)
	if want := fmt.Sprintf(" > 1 s on standby %s (127.0.0.1) of destination", standby.Name()); !strings.HasPrefix(reason, "replica lag ") || !strings.HasSuffix(reason, want) {
		t.Errorf("reason %q; want replica lag …%s", reason, want)
	}
	// The standby reports its replay position when WAL next arrives: a
	// beat later, at most.
	resumeReplay(t, standby, th, 4*time.Second)

	// A role that may not read the standbys' positions says so and does
	// not throttle.
	plain, err := NewStandbys(StandbysConfig{Where: "destination", Connect: Dialer(plainRole(t, dest.url), 0, ReadOnly)})
	if err != nil {
		t.Fatal(err)
	}
	if r := checkOnce(t, plain); r.Throttle || !strings.Contains(r.Note, " may not read the replay positions of the standbys of destination") {
		t.Errorf("reading as a plain role: %+v; want a note, no throttle", r)
	}
}

// plainRole creates a login role without privileges, dropped when the
// test ends, and returns a configuration to connect to url as it.
func plainRole(t *testing.T, url string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	role := pgx.Identifier{"plain_" + cfg.Database}.Sanitize()
	if _, err := admin.Exec(t.Context(), "CREATE ROLE "+role+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin, err := pgx.ConnectConfig(context.Background(), cfg)
		if err != nil {
			t.Errorf("drop role %s: %v", role, err)
			return
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(context.Background(), "DROP ROLE "+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	plain := cfg.Copy()
	plain.User = "plain_" + cfg.Database
	plain.RuntimeParams["application_name"] = ourApp
	return plain
}

// checkOnce reads sig once, failing the test on an error, and closes it.
func checkOnce(t *testing.T, sig Signal) Reading {
	t.Helper()
	defer sig.Close(context.Background())
	r, err := sig.Check(t.Context())
	if err != nil {
		t.Fatalf("%s: %v", sig.Name(), err)
	}
	return r
}

// holdSessions keeps n sessions of application appName busy in pg_sleep
// until the test ends, and returns their backend pids once all are active.
func holdSessions(t *testing.T, url, appName string, n int) []uint32 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var pids []uint32
	for range n {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["application_name"] = appName
		conn, err := pgx.ConnectConfig(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, conn.PgConn().PID())
		wg.Go(func() {
			defer conn.Close(context.Background())
			_, _ = conn.Exec(ctx, "SELECT pg_sleep(60)") // cut by cancel
		})
	}
	admin, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for deadline := time.Now().Add(10 * time.Second); ; {
		var active int
		if err := admin.QueryRow(t.Context(), "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY ($1) AND state = 'active'", pids).Scan(&active); err != nil {
			t.Fatal(err)
		}
		if active == n {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d held sessions active after 10 s", active, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLoadCountsOtherActiveSessions(t *testing.T) {
	url := pgtest.NewDatabase(t)
	load := func(max, critical int, own []uint32) Reading {
		t.Helper()
		l, err := NewLoad(LoadConfig{
			Where: "destination", Connect: dial(t, url, 0, ReadOnly), ApplicationName: ourApp,
			OwnPIDs: func() []uint32 { return own }, Max: max, Critical: critical,
		})
		if err != nil {
			t.Fatal(err)
		}
		return checkOnce(t, l)
	}
	if r := load(2, 4, nil); r.Throttle || r.Text != "load 0 active sessions <= 2 on destination" {
		t.Fatalf("idle server: %+v", r)
	}

	holdSessions(t, url, ourApp, 2) // the job's own: never load
	mine := holdSessions(t, url, "backfill worker renamed", 1)
	holdSessions(t, url, "production", 3)

	for _, c := range []struct {
		name          string
		max, critical int
		want          Reading
	}{
		{"under max", 3, 0, Reading{Text: "load 3 active sessions <= 3 on destination"}},
		{"over max", 2, 4, Reading{Throttle: true, Text: "load 3 active sessions > 2 on destination"}},
		{"over critical", 1, 2, Reading{Throttle: true, Critical: true, Text: "critical load 3 active sessions > 2 on destination"}},
		{"critical alone", 0, 2, Reading{Throttle: true, Critical: true, Text: "critical load 3 active sessions > 2 on destination"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r := load(c.max, c.critical, mine); r != c.want {
				t.Fatalf("reading %+v; want %+v", r, c.want)
			}
		})
	}
	if r := load(3, 0, nil); !r.Throttle {
		t.Errorf("a session of the job's that OwnPIDs does not list counts: %+v; want 4 > 3", r)
	}
	plain, err := NewLoad(LoadConfig{Where: "destination", Connect: Dialer(plainRole(t, url), 0, ReadOnly), ApplicationName: ourApp, Max: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r := checkOnce(t, plain); r.Throttle || !strings.Contains(r.Note, " may not see what other roles' sessions on destination are doing") {
		t.Errorf("a role that cannot see other roles' sessions: %+v; want a note, no load", r)
	}

	// Through a Throttler, the critical outcome.
	l, err := NewLoad(LoadConfig{
		Where: "destination", Connect: dial(t, url, 0, ReadOnly), ApplicationName: ourApp,
		OwnPIDs: func() []uint32 { return mine }, Max: 1, Critical: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	th := runThrottler(t, Config{Signals: []Signal{l}})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if throttled, reason, critical := th.State(); critical {
			t.Logf("critical: %v %s", throttled, reason)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never critical")
		}
	}
}

func TestThrottleQuery(t *testing.T) {
	dest := newDestination(t)
	ctx := t.Context()
	query := func(sql string) (*Query, error) {
		q, err := NewQuery(QueryConfig{Where: "destination", Connect: dial(t, dest.url, 0, ReadOnly), SQL: sql})
		if err == nil {
			t.Cleanup(func() { _ = q.Close(context.Background()) })
		}
		return q, err
	}
	for _, c := range []struct {
		sql      string
		throttle bool
		text     string
	}{
		{"SELECT true", true, "throttle query returned true on destination"},
		{"SELECT false", false, "throttle query returned false on destination"},
		{"SELECT 3", true, "throttle query returned 3 on destination"},
		{"SELECT 0", false, "throttle query returned 0 on destination"},
		{"SELECT 0.5::numeric, 'ignored'", true, "throttle query returned 0.5 on destination"},
		{"SELECT 0::float8", false, "throttle query returned 0 on destination"},
		{"SELECT NULL::boolean", false, "throttle query returned no value on destination"},
		{"SELECT true WHERE false", false, "throttle query returned no value on destination"},
		{"SELECT count(*) > 0 FROM pg_stat_activity", true, "throttle query returned true on destination"},
	} {
		q, err := query(c.sql)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Validate(ctx); err != nil {
			t.Errorf("%s: Validate: %v", c.sql, err)
			continue
		}
		r, err := q.Check(ctx)
		if err != nil || r.Throttle != c.throttle || r.Text != c.text {
			t.Errorf("%s: %+v, %v; want throttle %v, %q", c.sql, r, err, c.throttle, c.text)
		}
	}
	for sql, want := range map[string]string{
		"SELECT 'yes'":            "its first column is string: want a boolean or a number",
		"SELECT * FROM no_such":   `relation "no_such" does not exist`,
		"CREATE TABLE written ()": "read-only transaction",
		"SELEC 1":                 "syntax error",
	} {
		q, err := query(sql)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Validate(ctx); err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "throttle query on destination: ") {
			t.Errorf("Validate(%s) = %v; want an error with %q", sql, err, want)
		}
	}

	// Run by a Throttler each second, the query throttles and releases
	// within 2 s of the answer changing.
	if _, err := dest.pool.Exec(ctx, "CREATE TABLE hold (on_hold boolean NOT NULL); INSERT INTO hold VALUES (false)"); err != nil {
		t.Fatal(err)
	}
	q, err := query("SELECT on_hold FROM hold")
	if err != nil {
		t.Fatal(err)
	}
	th := runThrottler(t, Config{Signals: []Signal{q}})
	th.expect(t, false, 5*time.Second, "start")
	for _, hold := range []bool{true, false} {
		if _, err := dest.pool.Exec(ctx, "UPDATE hold SET on_hold = $1", hold); err != nil {
			t.Fatal(err)
		}
		th.expect(t, hold, 2*time.Second, fmt.Sprintf("on_hold = %v", hold))
	}
}

func TestProbeLatency(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := t.Context()
	probe := func(sql string, limit, timeout time.Duration) *Probe {
		t.Helper()
		p, err := NewProbe(ProbeConfig{Where: "source", Connect: dial(t, url, timeout, ReadOnly), Query: sql, MaxLatency: limit})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close(context.Background()) })
		return p
	}

	fast := probe("", 100*time.Millisecond, 0)
	baseline, err := fast.Baseline(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SELECT 1 baseline: %v", baseline)
	if baseline <= 0 || baseline > 50*time.Millisecond {
		t.Errorf("baseline of SELECT 1 = %v; want a few milliseconds at most", baseline)
	}
	if r, err := fast.Check(ctx); err != nil || r.Throttle {
		t.Errorf("SELECT 1 against 100 ms: %+v, %v", r, err)
	}

	slow := probe("SELECT pg_sleep(0.2)", 100*time.Millisecond, 0)
	r, err := slow.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pg_sleep(0.2): %s", r.Text)
	if !r.Throttle || !strings.HasPrefix(r.Text, "probe latency 2") || !strings.HasSuffix(r.Text, " ms > 100 ms on source") {
		t.Errorf("pg_sleep(0.2) against 100 ms: %+v; want throttled at about 200 ms", r)
	}
	if l := slow.Latency(); l < 200*time.Millisecond || l > time.Second {
		t.Errorf("Latency() = %v; want about 200 ms", l)
	}

	// A probe cut by its timeout took that long: a reading, not an error.
	stuck := probe("SELECT pg_sleep(10)", 100*time.Millisecond, 300*time.Millisecond)
	began := time.Now()
	r, err = stuck.Check(ctx)
	t.Logf("pg_sleep(10) with a 300 ms timeout: %s after %v", r.Text, time.Since(began).Round(time.Millisecond))
	if err != nil || !r.Throttle || stuck.Latency() < 300*time.Millisecond {
		t.Errorf("a probe past its timeout: %+v, %v", r, err)
	}
	if r, err := stuck.Check(ctx); err != nil || !r.Throttle {
		t.Errorf("the next probe after a timeout: %+v, %v; want a reading on the same session", r, err)
	}

	// One slow probe after the baseline is one of several in the window,
	// not the median: it does not throttle; a server that stays slow does.
	slowFrom := time.Now().Add(time.Second)
	late := probe(fmt.Sprintf("SELECT pg_sleep(CASE WHEN clock_timestamp() > '%s' THEN 0.2 ELSE 0 END)", slowFrom.UTC().Format("2006-01-02 15:04:05.000000Z07:00")),
		100*time.Millisecond, 0)
	if _, err := late.Baseline(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if time.Now().After(slowFrom) {
		t.Fatalf("the baseline took past %s; the test needs it within a second", slowFrom)
	}
	time.Sleep(time.Until(slowFrom))
	for i := 1; i <= 3; i++ {
		r, err := late.Check(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := i == 3; r.Throttle != want {
			t.Errorf("slow probe %d after a baseline of 5: %+v; want throttled %v", i, r, want)
		}
	}

	bad := probe("SELECT * FROM no_such", 0, 0)
	if _, err := bad.Check(ctx); err == nil || !strings.Contains(err.Error(), "no_such") {
		t.Errorf("a probe that fails: %v; want its error", err)
	}
}

// TestAutoRateFollowsAProbe: on an idle server the rate rises; a session
// that holds a lock the probe needs (production contending) pushes the
// probe's latency past the limit, and the rate is halved.
func TestAutoRateFollowsAProbe(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := t.Context()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE TABLE accounts (id int PRIMARY KEY); INSERT INTO accounts SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	const interval = 200 * time.Millisecond
	limit := 50 * time.Millisecond
	probe, err := NewProbe(ProbeConfig{
		Where: "source", Connect: dial(t, url, 500*time.Millisecond, ReadOnly),
		Query: "SELECT count(*) FROM accounts", MaxLatency: limit,
	})
	if err != nil {
		t.Fatal(err)
	}
	baseline, err := probe.Baseline(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	th := runThrottler(t, Config{Signals: []Signal{probe}, Interval: interval})
	th.expect(t, false, 5*time.Second, "start")
	auto, err := NewAutoRate(AutoConfig{Baseline: baseline, Limit: limit, Cooldown: 3 * interval})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var changes []RateChange
	runInBackground(t, func(ctx context.Context) error {
		return auto.Run(ctx, interval, Observer(th.Throttler, probe, nil), func(c RateChange) {
			mu.Lock()
			defer mu.Unlock()
			changes = append(changes, c)
			t.Logf("rate %.0f → %.0f: %s", c.From, c.To, c.Why)
		})
	})
	seen := func(part string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range changes {
			if strings.Contains(c.Why, part) {
				return true
			}
		}
		return false
	}
	awaitChange := func(part string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !seen(part); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no rate change %q within 10 s", part)
			}
		}
	}
	t.Logf("baseline %v, limit %v", baseline, limit)
	awaitChange("doubled")

	lock, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(context.Background())
	if _, err := lock.Exec(ctx, "LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	awaitChange("halved: probe latency")
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	awaitChange("raised")
}

func TestHeartbeat(t *testing.T) {
	dest := newDestination(t)
	ctx := t.Context()
	hb := heartbeat(t, dest)
	read := func() time.Time {
		var at time.Time
		if err := dest.pool.QueryRow(ctx, "SELECT at FROM backfill.heartbeat WHERE job = $1", jobName).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	first := read()
	if err := hb.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if second := read(); !second.After(first) {
		t.Errorf("heartbeat %v after a beat, was %v", second, first)
	}

	orphan, err := NewHeartbeat(HeartbeatConfig{Connect: dial(t, dest.url, 0, ReadWrite), Schema: stateSchema, Job: "no_such_job"})
	if err != nil {
		t.Fatal(err)
	}
	defer orphan.Close(context.Background())
	if err := orphan.Beat(ctx); err == nil || !strings.Contains(err.Error(), "write the heartbeat of job no_such_job") {
		t.Errorf("beat of a job without a row: %v; want a foreign key error", err)
	}
}

func TestDialerSessions(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := t.Context()
	for _, c := range []struct {
		access   Access
		readOnly string
	}{{ReadOnly, "on"}, {ReadWrite, "off"}} {
		conn, err := dial(t, url, 1500*time.Millisecond, c.access)(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var app, readOnly, timeout string
		err = conn.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('default_transaction_read_only'), current_setting('statement_timeout')").Scan(&app, &readOnly, &timeout)
		_ = conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if app != ourApp || readOnly != c.readOnly || timeout != "1500ms" {
			t.Errorf("access %v: application_name %q, read-only %q, statement_timeout %q; want %q, %q, 1500ms", c.access, app, readOnly, timeout, ourApp, c.readOnly)
		}
	}
	if _, err := dial(t, "postgres://nobody@127.0.0.1:1/x?sslmode=disable", time.Second, ReadOnly)(ctx); err == nil || !strings.Contains(err.Error(), "connect to 127.0.0.1:1") {
		t.Errorf("connect to a closed port: %v", err)
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Logf("closed port timed out rather than refused: %v", err)
	}
}

// TestReplicaLagOnAPrimary: a --replica that is no standby says so, once;
// one without the state schema is not a standby of the destination.
func TestReplicaLagOnAPrimary(t *testing.T) {
	dest := newDestination(t)
	ctx := t.Context()
	heartbeat(t, dest)
	for _, c := range []struct {
		url, note, err string
	}{
		{dest.url, "replica 1 is not a standby (pg_is_in_recovery() is false)", ""},
		{pgtest.NewDatabase(t), "", "which has no state schema backfill: is it a standby of the destination?"},
	} {
		lag, err := NewReplicaLag(ReplicaConfig{Where: "replica 1", Connect: dial(t, c.url, 0, ReadOnly), Schema: stateSchema, Job: jobName})
		if err != nil {
			t.Fatal(err)
		}
		r, err := lag.Check(ctx)
		_ = lag.Close(ctx)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("replica without the state schema: %+v, %v; want an error with %q", r, err, c.err)
			}
			continue
		}
		if err != nil || r.Throttle || !strings.HasPrefix(r.Note, c.note) {
			t.Errorf("the destination as its own replica: %+v, %v; want a note %q", r, err, c.note)
		}
	}
}
