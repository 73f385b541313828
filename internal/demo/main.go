package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/backfill/backfill/internal/pgcluster"
)

const (
	srcDB      = "demo_src"
	dstDB      = "demo_dst"
	table      = "public.orders"
	job        = "demo"
	sourceRows = 200_000

	// startRate is slow enough that the first run can be interrupted
	// part-way: 200 chunks of 1000 rows take about five seconds.
	startRate = 40_000
	// interruptAt is how many committed chunks the first run gets before
	// SIGINT: a good part of the table, but not all of it.
	interruptAt     = 60
	interruptWithin = time.Minute
	pollEvery       = 100 * time.Millisecond

	// childGrace is how long an interrupted backfill may take to finish its
	// in-flight chunks before it is killed.
	childGrace     = 30 * time.Second
	cleanupTimeout = time.Minute

	exitInterrupted = 130 // backfill's code for "stopped by SIGINT, resumable"
	sqlUndefinedTab = "42P01"
)

// The same shape on both sides; the destination starts empty.
const createTable = `CREATE TABLE public.orders (
	id        bigint PRIMARY KEY,
	customer  text NOT NULL,
	note      text,
	amount    numeric(12,2),
	placed_at timestamptz NOT NULL,
	attrs     jsonb
)`

// Ids have gaps, as real ones do; every column but id, customer and
// placed_at is NULL now and then.
const fillSource = `INSERT INTO public.orders
SELECT 1000000 + g * 3,
       (ARRAY['Zoë Müller', 'José Núñez', 'Åsa Öberg', '李小龙', 'Ольга Петрова',
              'Chloé Dubois', 'محمد علي', 'Nguyễn Ngọc Anh', 'Søren Kierkegaard', 'Bob'])[1 + g % 10],
       CASE WHEN g % 17 <> 0 THEN
           'order #' || g || ' — ' || (ARRAY['ship ✈', 'gift 🎁', 'fragile ☂', 'rush ⚡'])[1 + g % 4]
       END,
       CASE WHEN g % 23 <> 0 THEN round((g * 7919 % 1000000) / 100.0, 2) END,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '37 seconds',
       CASE WHEN g % 29 <> 0 THEN jsonb_build_object(
           'sku', 'SKU-' || lpad((g % 5000)::text, 5, '0'),
           'qty', 1 + g % 9,
           'gift', g % 7 = 0,
           'tags', jsonb_build_array('demo', CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END))
       END
FROM generate_series(1, $1::bigint) AS g`

// fingerprint is order-independent: row hashes are sorted before they are
// hashed together, so it does not matter in what order backfill wrote them.
const fingerprint = `SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '')
FROM (SELECT md5(t::text) AS h FROM public.orders AS t) AS r`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	began := time.Now()
	err := run(ctx)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case interrupted:
		// err is mostly the echo of the cancellation; cleanup failures were
		// reported as they happened.
		fmt.Fprintf(os.Stderr, "\ndemo: %v: stopped early\n", context.Cause(ctx))
		os.Exit(exitInterrupted)
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		os.Exit(1)
	}
	heading("demo finished in %s", time.Since(began).Round(100*time.Millisecond))
}

func run(ctx context.Context) (err error) {
	// ctx may be cancelled by the time cleanup runs; cleanup runs regardless.
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	}

	tmp, err := os.MkdirTemp("", "backfill-demo-")
	if err != nil {
		return fmt.Errorf("create temporary directory: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil {
			err = errors.Join(err, cleanupFailed(fmt.Errorf("remove %s: %w", tmp, rerr)))
		}
	}()

	// Built first: a broken build should fail before a server is started.
	heading("building the backfill command")
	bin, err := build(ctx, tmp)
	if err != nil {
		return err
	}

	heading("starting a throwaway PostgreSQL cluster")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Logf: detail})
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer func() {
		heading("stopping the cluster and removing temporary files")
		sctx, cancel := cleanupCtx()
		defer cancel()
		if serr := cluster.Stop(sctx); serr != nil {
			err = errors.Join(err, cleanupFailed(fmt.Errorf("stop PostgreSQL: %w", serr)))
		}
	}()
	admin, err := connect(ctx, cluster.URL("postgres"))
	if err != nil {
		return err
	}
	defer admin.Close(context.WithoutCancel(ctx))
	var version string
	if err := admin.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		return fmt.Errorf("ask the server its version: %w", err)
	}
	detail("PostgreSQL %s on 127.0.0.1:%d", version, cluster.Port())

	heading("creating %s with %d rows in %s, and an empty %s in %s", table, sourceRows, srcDB, table, dstDB)
	for _, db := range []string{srcDB, dstDB} {
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
			return fmt.Errorf("create database %s: %w", db, err)
		}
	}
	src, err := connect(ctx, cluster.URL(srcDB))
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	dst, err := connect(ctx, cluster.URL(dstDB))
	if err != nil {
		return err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	filled := time.Now()
	for _, step := range []struct {
		conn *pgx.Conn
		what string
		sql  string
		args []any
	}{
		{src, "create the source table", createTable, nil},
		{src, "fill the source table", fillSource, []any{sourceRows}},
		{src, "analyze the source table", "ANALYZE public.orders", nil},
		{dst, "create the destination table", createTable, nil},
	} {
		if _, err := step.conn.Exec(ctx, step.sql, step.args...); err != nil {
			return fmt.Errorf("%s: %w", step.what, err)
		}
	}
	detail("done in %s", time.Since(filled).Round(time.Millisecond))

	srcURL, dstURL := cluster.URL(srcDB), cluster.URL(dstDB)

	heading("copying at %d rows/s; the demo interrupts it after %d chunks", startRate, interruptAt)
	err = interruptPartWay(ctx, dst, bin, "start", "--source", srcURL, "--dest", dstURL, "--job", job,
		"--from", table, "--to", table, "--rate", strconv.Itoa(startRate),
		"--progress-interval", "1s", "--log-format", "console")
	if err != nil {
		return err
	}

	heading("status of the interrupted job")
	if err := runBackfill(ctx, bin, 0, "status", "--dest", dstURL, "--job", job); err != nil {
		return err
	}

	heading("resuming from the checkpoint without a rate cap")
	err = runBackfill(ctx, bin, 0, "resume", "--source", srcURL, "--dest", dstURL, "--job", job,
		"--rate", "0", "--progress-interval", "1s", "--log-format", "console")
	if err != nil {
		return err
	}

	heading("status of the finished job")
	if err := runBackfill(ctx, bin, 0, "status", "--dest", dstURL, "--job", job); err != nil {
		return err
	}

	heading("checking in SQL, independently of backfill, that the destination equals the source")
	return compare(ctx, src, dst)
}

// build compiles ./cmd/backfill of the module the demo is run from.
func build(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root with `go env GOMOD`: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the backfill module: run the demo from its checkout (make demo)")
	}
	bin := filepath.Join(dir, "backfill")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/backfill")
	cmd.Dir = filepath.Dir(gomod)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	detail("$ go build -o %s ./cmd/backfill  (in %s)", bin, cmd.Dir)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build ./cmd/backfill in %s: %w", cmd.Dir, err)
	}
	return bin, nil
}

// backfill prepares a run of the command with its output on ours; ending
// ctx interrupts it as Ctrl-C would. It gets its own process group so that a
// Ctrl-C reaches it once, through ctx, and not also straight from the
// terminal: a second SIGINT would kill it at once.
func backfill(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = childGrace
	detail("$ backfill %s", strings.Join(args, " "))
	return cmd
}

func runBackfill(ctx context.Context, bin string, want int, args ...string) error {
	return checkExit(backfill(ctx, bin, args...).Run(), want, "backfill "+args[0])
}

// interruptPartWay runs backfill until dst holds interruptAt committed
// chunks of the job, then interrupts it and expects it to stop cleanly.
func interruptPartWay(ctx context.Context, dst *pgx.Conn, bin string, args ...string) error {
	// Every SIGINT the child gets goes through cmd.Cancel, which runs at most
	// once: a Ctrl-C racing our own interrupt must not deliver a second one.
	cctx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	cmd := backfill(cctx, bin, args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run backfill start: %w", err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()

	chunks, err := waitForChunks(ctx, dst, exited)
	if err != nil {
		// Whatever went wrong, the child must be gone before the cluster is.
		interrupt()
		<-exited
		if waitErr != nil {
			err = fmt.Errorf("%w (backfill start: %v)", err, waitErr)
		}
		return err
	}
	detail("%d chunks committed; sending SIGINT to backfill (pid %d)", chunks, cmd.Process.Pid)
	interrupt()
	<-exited
	if err := checkExit(waitErr, exitInterrupted, "interrupted backfill start"); err != nil {
		return err
	}
	detail("backfill exited with code %d: interrupted, every committed chunk kept", exitInterrupted)
	return nil
}

func waitForChunks(ctx context.Context, dst *pgx.Conn, exited <-chan struct{}) (int64, error) {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	deadline := time.NewTimer(interruptWithin)
	defer deadline.Stop()
	var n int64
	for {
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-exited:
			return n, fmt.Errorf("backfill start ended after %d chunks, before the demo could interrupt it", n)
		case <-deadline.C:
			return n, fmt.Errorf("backfill start committed only %d of the %d chunks wanted within %s", n, interruptAt, interruptWithin)
		case <-tick.C:
		}
		err := dst.QueryRow(ctx, "SELECT count(*) FROM backfill.chunks WHERE job = $1", job).Scan(&n)
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == sqlUndefinedTab:
			// backfill has not created its state schema yet.
		case err != nil:
			return n, fmt.Errorf("count the job's committed chunks: %w", err)
		case n >= interruptAt:
			return n, nil
		}
	}
}

// checkExit compares a finished command's exit code with the one wanted.
func checkExit(err error, want int, what string) error {
	got := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		got = exitErr.ExitCode() // -1 when a signal killed it
	case err != nil:
		return fmt.Errorf("%s: %w", what, err)
	}
	if got != want {
		return fmt.Errorf("%s exited with code %d, want %d", what, got, want)
	}
	return nil
}

func compare(ctx context.Context, src, dst *pgx.Conn) error {
	type fp struct {
		rows int64
		md5  string
	}
	var prints [2]fp
	for i, side := range []struct {
		name string
		conn *pgx.Conn
	}{{"source", src}, {"destination", dst}} {
		if err := side.conn.QueryRow(ctx, fingerprint).Scan(&prints[i].rows, &prints[i].md5); err != nil {
			return fmt.Errorf("fingerprint the %s table: %w", side.name, err)
		}
		detail("%-12s %d rows, md5 %s", side.name+":", prints[i].rows, prints[i].md5)
	}
	if prints[0] != prints[1] {
		return fmt.Errorf("destination does not match source: %d rows (md5 %s) against %d (md5 %s)",
			prints[1].rows, prints[1].md5, prints[0].rows, prints[0].md5)
	}
	fmt.Printf("\ndestination matches source: %d rows\n", prints[0].rows)
	return nil
}

func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return conn, nil
}

// cleanupFailed reports err at once, under whatever heading is showing, so
// that a Ctrl-C cannot hide it, and returns it for the exit status.
func cleanupFailed(err error) error {
	detail("CLEANUP FAILED: %v", err)
	return err
}

func heading(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func detail(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }
