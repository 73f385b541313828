package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill"
)

// profileBenchmark is the in-process copy of bench_test.go that the
// profile group runs under -cpuprofile: the engine has no profiling flag,
// and needs none.
const profileBenchmark = "BenchmarkCrossDatabaseCopy"

// profileCategories are the parts of the client's CPU profile the summary
// names, as pprof -focus regexps over the call stacks. They overlap (GC and
// system calls happen inside the others): each is a share of the total.
var profileCategories = []struct{ label, focus string }{
	{"read: paginator page query and row decoding", `paginator\.\(\*Paginator\)\.readRows`},
	{"within read: decoding values (pgx Rows.Values)", `pgx/v5\.\(\*baseRows\)\.Values`},
	{"transform (worker.transform)", `worker\.\(\*worker\)\.transform$`},
	{"write: chunk statement, argument encoding, reply", `worker\.\(\*worker\)\.writeFast`},
	{"within write: encoding parameters (pgx/pgtype Encode)", `pgtype\..*Encode|encodeExtendedParamValue|\(\*ExtendedQueryBuilder\)`},
	{"checkpoint, heartbeat, progress (control connection)", `checkpoint\.|progress\.|backfill\.\(\*runner\)\.(heartbeat|progress)`},
	{"garbage collection (background marking)", `runtime\.gcBgMarkWorker`},
	{"memory allocation (mallocgc)", `runtime\.mallocgc`},
	{"system calls (network reads and writes)", `syscall\.Syscall|syscall\.RawSyscall|internal/runtime/syscall`},
}

// profileGroup copies the table across databases in-process under pprof,
// with pg_stat_statements on, and reports where the client's CPU goes, the
// server's busiest statements and the CPU split between client and server.
//
// pg_stat_statements needs a restart to load, so this group runs last and
// leaves it loaded; the other groups measure without it.
func (b *bench) profileGroup(ctx context.Context) error {
	dir, err := filepath.Abs(b.cfg.profileDir)
	if err != nil {
		return fmt.Errorf("profile directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	testBin, cpuProfile, blockProfile := filepath.Join(dir, "backfill.test"), filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "block.pprof")
	perfData := filepath.Join(dir, "server.perf.data")
	progress("  building the in-process benchmark")
	bctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	if _, err := runChild(newChild(bctx, b.cfg.goTool, "test", "-c", "-o", testBin, "github.com/backfill/backfill")); err != nil {
		return err
	}
	if err := b.loadStatStatements(ctx); err != nil {
		return err
	}
	if err := b.reset(ctx, crossDest, nil, 0); err != nil {
		return err
	}
	if err := b.quiesce(ctx); err != nil {
		return err
	}
	if err := b.exec(ctx, "postgres", "SELECT pg_stat_statements_reset()"); err != nil {
		return err
	}
	cpu0 := b.serverCPU()
	rctx, rcancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer rcancel()
	c := newChild(rctx, testBin, "-test.run", "^$", "-test.bench", "^"+profileBenchmark+"$", "-test.benchtime", "1x",
		"-test.benchmem", "-test.cpuprofile", cpuProfile,
		// one sampled event per 100 µs spent blocked: cheap, and every
		// wait longer than that is recorded
		"-test.blockprofile", blockProfile, "-test.blockprofilerate", "100000")
	c.cmd.Dir = dir // the test binary writes its profiles relative to here
	c.cmd.Env = append(os.Environ(),
		"BACKFILL_TEST_DATABASE_URL="+b.url("postgres"), // the harness uses this cluster, starts none of its own
		"BACKFILL_BENCH_SOURCE="+b.url(srcTable.db), "BACKFILL_BENCH_DEST="+b.url(crossDest.db))
	var stdout tail
	stdout.max = 16 << 10
	c.cmd.Stdout = &stdout
	perf, perfErr := b.startPerf(rctx, perfData)
	began := time.Now()
	u, err := runChild(c)
	u.wall = time.Since(began)
	if perf != nil {
		perfErr = stopPerf(perf)
	}
	if err != nil {
		return fmt.Errorf("%w\n%s", err, stdout.String())
	}
	if err := b.quiesce(ctx); err != nil {
		return err
	}
	u.server = -1
	if cpu1 := b.serverCPU(); cpu0 >= 0 && cpu1 >= 0 {
		u.server = cpu1 - cpu0
	}
	if got, err := b.count(ctx, crossDest); err != nil {
		return err
	} else if got != b.cfg.rows {
		return fmt.Errorf("after the profiled run the destination holds %d rows, want %d", got, b.cfg.rows)
	}

	rows := float64(b.cfg.rows)
	b.section(fmt.Sprintf("Profile: %s rows across databases, backfill.Run in-process (%s)", thousands(b.cfg.rows), profileBenchmark),
		fmt.Sprintf("CPU profile in `%s` (`go tool pprof %s %s`). The process's wall time includes the test binary's "+
			"start-up; the benchmark's own line follows.", cpuProfile, testBin, cpuProfile))
	fmt.Fprintf(b.out, "```\n%s\n```\n\n", benchLines(stdout.String()))
	fmt.Fprintf(b.out, "| | wall s | CPU s | CPU µs/row | share of %d cores over the wall time |\n|---|--:|--:|--:|--:|\n", runtime.NumCPU())
	fmt.Fprintf(b.out, "| client (test process) | %.2f | %.2f | %.2f | %.0f%% |\n", u.wall.Seconds(), u.cpu.Seconds(),
		float64(u.cpu.Microseconds())/rows, 100*u.cpu.Seconds()/u.wall.Seconds()/float64(runtime.NumCPU()))
	if u.server >= 0 {
		fmt.Fprintf(b.out, "| server (all postgres processes) | %.2f | %.2f | %.2f | %.0f%% |\n", u.wall.Seconds(), u.server.Seconds(),
			float64(u.server.Microseconds())/rows, 100*u.server.Seconds()/u.wall.Seconds()/float64(runtime.NumCPU()))
	}
	fmt.Fprintln(b.out)
	if err := b.pprofSummary(ctx, testBin, cpuProfile); err != nil {
		return err
	}
	runTime, err := benchTime(stdout.String())
	if err != nil {
		return err
	}
	if err := b.waitSummary(ctx, testBin, blockProfile, runTime); err != nil {
		return err
	}
	if err := b.statementSummary(ctx); err != nil {
		return err
	}
	b.perfSummary(ctx, "the copy's backends", perfData, perfErr)
	if perfErr == nil {
		singleData := filepath.Join(dir, "single.perf.data")
		b.perfSummary(ctx, "the single INSERT … SELECT, for comparison", singleData, b.perfSingle(ctx, singleData))
	}
	return nil
}

// perfSingle samples the server while the single statement copies the
// table within the source database, on a connection opened after perf
// attached (perf follows only backends forked from then on).
func (b *bench) perfSingle(ctx context.Context, out string) error {
	if err := b.reset(ctx, sameDest, nil, 0); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	perf, err := b.startPerf(ctx, out)
	if err != nil {
		return err
	}
	err = b.singleOnFreshSession(ctx)
	if perr := stopPerf(perf); err == nil {
		err = perr
	}
	return err
}

func (b *bench) singleOnFreshSession(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, b.url(sameDest.db))
	if err != nil {
		return fmt.Errorf("connect for the single statement: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, singleStatement); err != nil {
		return fmt.Errorf("%s: %w", singleStatement, err)
	}
	return nil
}

// startPerf samples the server's CPU by function while the profiled copy
// runs: perf attached to the postmaster follows the backends it forks from
// then on (the copy's sessions), not the server's other processes. Without
// perf, or when it cannot attach, it returns why, for the report.
func (b *bench) startPerf(ctx context.Context, out string) (*child, error) {
	if b.cfg.perf == "" {
		return nil, errors.New("perf not installed (apt-get install linux-perf)")
	}
	pid, err := b.postmasterPID()
	if err != nil {
		return nil, err
	}
	c := newChild(ctx, b.cfg.perf, "record", "-F", "499", "-g", "-p", strconv.Itoa(pid), "-o", out)
	if err := c.cmd.Start(); err != nil {
		return nil, c.failed(err)
	}
	// perf says nothing when it has attached; a backend forked before
	// then would not be followed.
	t := time.NewTimer(perfAttach)
	defer t.Stop()
	select {
	case <-ctx.Done():
		c.kill()
		_ = c.cmd.Wait()
		return nil, ctx.Err()
	case <-t.C:
	}
	return c, nil
}

// perfAttach is how long perf is given to attach to the postmaster.
const perfAttach = time.Second

// stopPerf asks perf to finish writing its samples, as Ctrl-C would.
func stopPerf(c *child) error {
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		c.kill()
	}
	if err := c.cmd.Wait(); err != nil {
		if code, _ := exitCode(err); code != 0 && code != exitInterrupted && code != -1 {
			return c.failed(err)
		}
	}
	return nil
}

// perfSummary prints the server's hottest functions, by their own time and
// with their callees. Static functions of a stripped postgres show as
// addresses and are left out; their time still counts in their callers'.
func (b *bench) perfSummary(ctx context.Context, what, data string, perfErr error) {
	if perfErr != nil {
		fmt.Fprintf(b.out, "Server CPU by function, %s: not measured: %v.\n\n", what, perfErr)
		return
	}
	report := func(children string, limit int) (string, error) {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		c := newChild(pctx, b.cfg.perf, "report", "-i", data, children, "--sort", "sym", "--stdio", "-g", "none", "--percent-limit", "0.5")
		out, err := c.cmd.Output()
		if err != nil {
			return "", c.failed(err)
		}
		var keep []string
		for _, line := range strings.Split(string(out), "\n") {
			if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") || strings.Contains(t, "] 0x") {
				continue
			}
			if keep = append(keep, line); len(keep) == limit {
				break
			}
		}
		return strings.Join(keep, "\n"), nil
	}
	self, err := report("--no-children", 25)
	if err == nil {
		var inclusive string
		if inclusive, err = report("--children", 40); err == nil {
			fmt.Fprintf(b.out, "Server CPU by function, %s (perf record -F 499 -g; `perf report -i %s`):\n\n"+
				"Own time, top 25 at 0.5%% or more:\n\n```\n%s\n```\n\nWith callees (children, self), top 40:\n\n```\n%s\n```\n\n", what, data, self, inclusive)
			return
		}
	}
	fmt.Fprintf(b.out, "Server CPU by function, %s: perf report failed: %v.\n\n", what, err)
}

// loadStatStatements restarts the server with pg_stat_statements loaded
// and creates its view.
func (b *bench) loadStatStatements(ctx context.Context) error {
	if err := b.exec(ctx, "postgres", "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"); err != nil {
		return err
	}
	progress("  restarting the server with pg_stat_statements")
	if err := b.cluster.Restart(ctx); err != nil {
		return err
	}
	if err := b.reconnect(ctx); err != nil {
		return err
	}
	return b.exec(ctx, "postgres", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
}

// pprofTop runs go tool pprof -top with extra flags over a profile.
func (b *bench) pprofTop(ctx context.Context, testBin, profile string, extra ...string) (string, error) {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c := newChild(pctx, b.cfg.goTool, append(append([]string{"tool", "pprof", "-top"}, extra...), testBin, profile)...)
	out, err := c.cmd.Output()
	if err != nil {
		return "", c.failed(err)
	}
	return string(out), nil
}

// allNodes makes pprof show every node of the stacks a filter keeps, so
// that the flat times it adds up are the filter's whole total.
var allNodes = []string{"-nodecount", "1000000", "-nodefraction", "0", "-edgefraction", "0"}

func (b *bench) pprofSummary(ctx context.Context, testBin, profile string) error {
	top := func(extra ...string) (string, error) { return b.pprofTop(ctx, testBin, profile, extra...) }
	fmt.Fprintf(b.out, "| client CPU (pprof, overlapping) | share of samples |\n|---|--:|\n")
	for _, cat := range profileCategories {
		out, err := top(append([]string{"-focus", cat.focus}, allNodes...)...)
		if err != nil {
			return err
		}
		fmt.Fprintf(b.out, "| %s | %s |\n", escapeCell(cat.label), focusShare(out))
	}
	out, err := top("-cum", "-nodecount", "30")
	if err != nil {
		return err
	}
	fmt.Fprintf(b.out, "\nTop 30 by cumulative time:\n\n```\n%s\n```\n\n", pprofBody(out))
	return nil
}

// waitSummary reads the block profile for the two waits of the pipeline
// that say which side is the bottleneck: workers waiting on the queue for
// a chunk (the reader is behind) and the reader waiting for room in it
// (the writers are behind). Waits inside a chunk's write or a page's read
// are network waits, which a block profile does not see.
func (b *bench) waitSummary(ctx context.Context, testBin, profile string, run time.Duration) error {
	waits := []struct {
		label, focus, ignore string
		goroutines           int
	}{
		{"workers waiting on the queue for a chunk", `worker\.\(\*Pool\)\.Run\.func`, `worker\.\(\*worker\)\.commit`, backfill.DefaultWorkers},
		{"reader waiting for room in the queue", `paginator\.\(\*Paginator\)\.Run$`, `readWithRetry|orderRuns`, 1},
	}
	fmt.Fprintf(b.out, "Waiting (block profile; backfill.Run took %.2f s):\n\n| wait | goroutine-s | share of those goroutines' time |\n|---|--:|--:|\n", run.Seconds())
	for _, w := range waits {
		out, err := b.pprofTop(ctx, testBin, profile, append([]string{"-unit", "ms", "-focus", w.focus, "-ignore", w.ignore}, allNodes...)...)
		if err != nil {
			return err
		}
		sec := focusSeconds(out)
		fmt.Fprintf(b.out, "| %s (%d) | %.2f | %.0f%% |\n", w.label, w.goroutines, sec, 100*sec/run.Seconds()/float64(w.goroutines))
	}
	fmt.Fprintln(b.out)
	return nil
}

// showingMS matches pprof's total line under -unit ms.
var showingMS = regexp.MustCompile(`Showing nodes accounting for ([0-9.]+)ms`)

// focusSeconds reads the focused total of pprof -top -unit ms as seconds;
// a focus nothing matched prints no total.
func focusSeconds(top string) float64 {
	m := showingMS.FindStringSubmatch(top)
	if m == nil {
		return 0
	}
	ms, _ := strconv.ParseFloat(m[1], 64) // the regexp admits only digits and dots
	return ms / 1000
}

// benchNsPerOp matches a benchmark line's time per op.
var benchNsPerOp = regexp.MustCompile(`(?m)^` + profileBenchmark + `\S*\s+1\s+([0-9]+) ns/op`)

// benchTime reads how long the profiled benchmark's one op, backfill.Run,
// took.
func benchTime(out string) (time.Duration, error) {
	m := benchNsPerOp.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no result line of %s in the test binary's output:\n%s", profileBenchmark, out)
	}
	ns, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s's time: %w", profileBenchmark, err)
	}
	return time.Duration(ns), nil
}

// showing matches pprof's "Showing nodes accounting for 1.2s, 30.5% of 4s
// total" line; with -focus, the percentage is the focused stacks' share.
var showing = regexp.MustCompile(`Showing nodes accounting for [^,]+, ([0-9.]+%) of ([^ ]+) total`)

// focusShare reads the share pprof -top -focus reports; a focus nothing
// matched prints no such line.
func focusShare(top string) string {
	if m := showing.FindStringSubmatch(top); m != nil {
		return m[1]
	}
	return "0%"
}

func (b *bench) statementSummary(ctx context.Context) error {
	rows, err := b.conns["postgres"].Query(ctx, `SELECT calls, total_exec_time, total_exec_time / calls, rows,
       100 * total_exec_time / nullif(sum(total_exec_time) OVER (), 0),
       left(regexp_replace(query, '\s+', ' ', 'g'), 140)
FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10`)
	if err != nil {
		return fmt.Errorf("read pg_stat_statements: %w", err)
	}
	defer rows.Close()
	fmt.Fprintf(b.out, "Server: the 10 statements with the most execution time (pg_stat_statements; time inside the executor, "+
		"not parse, network or commit):\n\n| calls | total ms | mean ms | share | rows | statement |\n|--:|--:|--:|--:|--:|---|\n")
	for rows.Next() {
		var calls, n int64
		var total, mean float64
		var share *float64
		var query string
		if err := rows.Scan(&calls, &total, &mean, &n, &share, &query); err != nil {
			return fmt.Errorf("read pg_stat_statements: %w", err)
		}
		s := "—"
		if share != nil {
			s = fmt.Sprintf("%.1f%%", *share)
		}
		fmt.Fprintf(b.out, "| %s | %.0f | %.2f | %s | %s | `%s` |\n", thousands(calls), total, mean, s, thousands(n), escapeCell(strings.ReplaceAll(query, "`", "'")))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read pg_stat_statements: %w", err)
	}
	fmt.Fprintln(b.out)
	return nil
}

// pprofBody drops the header lines of pprof's output that name the file
// and the build, keeping the duration and the table.
func pprofBody(out string) string {
	var keep []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Type:") || strings.HasPrefix(line, "Time:") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// benchLines keeps the benchmark result lines of a test binary's output.
func benchLines(out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "cpu:") {
			keep = append(keep, strings.TrimSpace(line))
		}
	}
	return strings.Join(keep, "\n")
}
