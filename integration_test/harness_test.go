package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/backfill once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "backfill-bin-")
		if err != nil {
			buildErr = err
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		binPath = filepath.Join(dir, "backfill")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/backfill")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// result is one finished invocation of the binary.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// command prepares an invocation with logs in JSON and a clean environment
// (no BACKFILL_* or PG* variables leaking in from the machine).
func command(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BACKFILL_") && !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

// cli runs the binary to completion (at most two minutes).
func cli(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := command(ctx, t, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run backfill %v: %v", args, err)
	}
	return r
}

// mustSucceed runs the binary and fails the test unless it exits 0.
func mustSucceed(t *testing.T, args ...string) result {
	t.Helper()
	r := cli(t, args...)
	if r.code != 0 {
		t.Fatalf("backfill %s: %s", strings.Join(args, " "), r)
	}
	return r
}

func connect(t *testing.T, url string) *pgx.Conn { return connectWith(t, url, nil) }

// connectWith connects with the given session settings beside the
// database's defaults.
func connectWith(t *testing.T, url string, settings map[string]string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(cfg.RuntimeParams, settings)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// sql runs statements and fails the test on error.
func sql(t *testing.T, url string, statements ...string) {
	t.Helper()
	conn := connect(t, url)
	for _, s := range statements {
		if _, err := conn.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func queryInt(t *testing.T, url, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := connect(t, url).QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func queryString(t *testing.T, url, q string, args ...any) string {
	t.Helper()
	var s string
	if err := connect(t, url).QueryRow(context.Background(), q, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

func queryBool(t *testing.T, url, q string, args ...any) bool {
	t.Helper()
	var b bool
	if err := connect(t, url).QueryRow(context.Background(), q, args...).Scan(&b); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return b
}

// fingerprint is an order-independent digest of a table's rows: the count
// and the sum of a 60-bit slice of each row's md5, over the text of every
// column. Equal fingerprints mean equal rows and values, NULLs included.
type fingerprint struct {
	Rows int64
	Sum  string
}

func tableFingerprint(t *testing.T, url, table string) fingerprint {
	t.Helper()
	var f fingerprint
	q := fmt.Sprintf(`SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint::numeric), 0)::text FROM %s t`, table)
	if err := connect(t, url).QueryRow(context.Background(), q).Scan(&f.Rows, &f.Sum); err != nil {
		t.Fatalf("fingerprint %s: %v", table, err)
	}
	return f
}

func assertSameRows(t *testing.T, srcURL, srcTable, dstURL, dstTable string) fingerprint {
	t.Helper()
	src, dst := tableFingerprint(t, srcURL, srcTable), tableFingerprint(t, dstURL, dstTable)
	if src != dst {
		t.Fatalf("destination %s differs from source %s: source %+v, destination %+v", dstTable, srcTable, src, dst)
	}
	return src
}

func status(t *testing.T, dest, job string, extra ...string) backfill.JobStatus {
	t.Helper()
	args := append([]string{"status", "--dest", dest, "--job", job, "--json"}, extra...)
	r := mustSucceed(t, args...)
	var s backfill.JobStatus
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("decode status --json: %v\n%s", err, r.stdout)
	}
	return s
}

// counters are the figures that must equal one clean run's.
type counters struct {
	RowsRead, RowsInserted, RowsSkipped, RowsFiltered, RowsFailed, ChunksDone int64
}

func countersOf(s backfill.JobStatus) counters {
	return counters{s.RowsRead, s.RowsInserted, s.RowsSkipped, s.RowsFiltered, s.RowsFailed, s.ChunksDone}
}

func schemaExists(t *testing.T, url, schema string) bool {
	return queryBool(t, url, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema)
}

// background is a backfill process running beside the test.
type background struct {
	cmd    *exec.Cmd
	done   chan error // receives the process's end, once
	stderr *lockedBuffer
}

// startBackground starts the binary; the process is killed when the test
// ends, if it is still running.
func startBackground(ctx context.Context, t *testing.T, args ...string) *background {
	t.Helper()
	b := &background{cmd: command(ctx, t, args...), done: make(chan error, 1), stderr: &lockedBuffer{}}
	b.cmd.Stderr = b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start backfill: %v", err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	t.Cleanup(func() { _ = b.cmd.Process.Kill() })
	return b
}

// exitCode waits for the process and returns its exit code (-1 when a
// signal killed it).
func (b *background) exitCode() int {
	<-b.done
	return b.cmd.ProcessState.ExitCode()
}

// lockedBuffer collects a process's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// pollInt runs a query on a connection of its own, for polling while the
// server may be restarting: any error reads as -1.
func pollInt(ctx context.Context, url, q string) int64 {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return -1
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
		return -1
	}
	return n
}

// waitUntil polls cond until it holds. It fails the test when the process
// behind done exits first (showing its output) or after a minute.
func waitUntil(t *testing.T, done <-chan error, output fmt.Stringer, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("backfill exited (%v) before %s:\n%s", err, what, output)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %s within a minute:\n%s", what, output)
		}
	}
}
