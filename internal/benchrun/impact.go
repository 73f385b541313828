package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The impact group (issue 12): what an application on the source feels
// while backfill copies beside it. pgbench runs its simple-update script
// at a fixed transaction rate against the source database; after a warm-up
// backfill copies pgbench_accounts into the other database, under each of
// the -impact-runs flag sets in turn (rounds alternate them), and the
// transactions that ran meanwhile give the latency percentiles.
const (
	impactTable  = "pgbench_accounts"
	impactWarmup = 5 * time.Second
	// impactNone is the -impact-runs entry that runs no backfill: the
	// workload alone, over the same window of its run.
	impactNone = "none"
	// impactOneBackend is the -impact-runs entry that runs no backfill but
	// one psql COPY of the source table into nothing: one backend busy
	// reading, with no write and no WAL. What it costs the workload is what
	// any one busy session costs it on this machine, the floor under what
	// a copy at a speed that matters can cost.
	impactOneBackend = "one-backend"
)

// impactRun is one condition's measurement in one round.
type impactRun struct {
	latencies []time.Duration // of the transactions inside the window
	copied    int64           // rows in the destination at the window's end
	window    time.Duration   // from backfill's start to its end (or the workload's)
}

func (r impactRun) rowsPerSec() float64 { return float64(r.copied) / r.window.Seconds() }

func (b *bench) impactGroup(ctx context.Context) error {
	accounts := int64(b.cfg.impactScale) * 100_000
	progress("  pgbench -i -s %d (%s accounts)", b.cfg.impactScale, thousands(accounts))
	init := newChild(ctx, filepath.Join(b.pgBin, "pgbench"), "-i", "-q", "-s", strconv.Itoa(b.cfg.impactScale), b.url(srcDB))
	if err := init.cmd.Run(); err != nil {
		return init.failed(err)
	}
	create := fmt.Sprintf("CREATE TABLE IF NOT EXISTS public.%s (aid integer PRIMARY KEY, bid integer, abalance integer, filler character(84))", impactTable)
	if err := b.exec(ctx, dstDB, create); err != nil {
		return err
	}
	got := map[string][]impactRun{}
	for round := range b.cfg.rounds {
		for _, flags := range b.cfg.impactRuns {
			progress("  round %d: %s", round+1, flags)
			r, err := b.impactOnce(ctx, flags)
			if err != nil {
				return fmt.Errorf("impact run %q: %w", flags, err)
			}
			got[flags] = append(got[flags], r)
		}
	}
	b.section(fmt.Sprintf("Impact on a workload: pgbench simple-update at %d tps, %d clients", b.cfg.impactTPS, b.cfg.impactClients),
		fmt.Sprintf("pgbench (-N -R %d -c %d) runs on the source database for %d s a run; after %s backfill copies %s (%s rows) into "+
			"another database of the same server. Latency is pgbench's per-transaction figure from its scheduled start (so it "+
			"includes waiting for a connection's turn), over the transactions that ended while backfill ran; the run without "+
			"backfill takes the rest of its run after the warm-up. rows/s are the rows in the destination over backfill's wall time. Medians over %s.%s",
			b.cfg.impactTPS, b.cfg.impactClients, b.cfg.impactSeconds, impactWarmup, impactTable, thousands(accounts), b.roundsText(), oneBackendText(b.cfg.impactRuns)))
	fmt.Fprintln(b.out, "| backfill | latency median ms | p95 ms | p99 ms | p95 × none | transactions | backfill rows/s | rows/s × `--rate 0` |")
	fmt.Fprintln(b.out, "|---|--:|--:|--:|--:|--:|--:|--:|")
	type summary struct {
		p50, p95, p99, rowsPerSec float64
		transactions              int
	}
	sums := map[string]summary{}
	for _, flags := range b.cfg.impactRuns {
		var p50, p95, p99, rps []float64
		n := 0
		for _, r := range got[flags] {
			p50 = append(p50, ms(percentile(r.latencies, 50)))
			p95 = append(p95, ms(percentile(r.latencies, 95)))
			p99 = append(p99, ms(percentile(r.latencies, 99)))
			rps = append(rps, r.rowsPerSec())
			n += len(r.latencies)
		}
		sums[flags] = summary{medianOf(p50), medianOf(p95), medianOf(p99), medianOf(rps), n}
	}
	for _, flags := range b.cfg.impactRuns {
		s := sums[flags]
		fmt.Fprintf(b.out, "| %s | %.2f | %.2f | %.2f | %s | %s | %s | %s |\n", escapeCell(impactLabel(flags)), s.p50, s.p95, s.p99,
			timesOf(s.p95, sums, impactNone, func(x summary) float64 { return x.p95 }),
			thousands(int64(s.transactions)), rowsCell(flags, s.rowsPerSec),
			rowsTimes(flags, timesOf(s.rowsPerSec, sums, impactRateZero(b.cfg.impactRuns), func(x summary) float64 { return x.rowsPerSec })))
	}
	fmt.Fprintln(b.out)
	if b.cfg.rounds > 1 {
		fmt.Fprintln(b.out, "Per round, p95 ms (backfill rows/s):")
		fmt.Fprintln(b.out)
		fmt.Fprint(b.out, "| backfill |")
		for round := range b.cfg.rounds {
			fmt.Fprintf(b.out, " round %d |", round+1)
		}
		fmt.Fprint(b.out, "\n|---|")
		for range b.cfg.rounds {
			fmt.Fprint(b.out, "--:|")
		}
		fmt.Fprintln(b.out)
		for _, flags := range b.cfg.impactRuns {
			fmt.Fprintf(b.out, "| %s |", escapeCell(impactLabel(flags)))
			for _, r := range got[flags] {
				fmt.Fprintf(b.out, " %.2f", ms(percentile(r.latencies, 95)))
				if copiesRows(flags) {
					fmt.Fprintf(b.out, " (%s)", thousands(int64(r.rowsPerSec())))
				}
				fmt.Fprint(b.out, " |")
			}
			fmt.Fprintln(b.out)
		}
		fmt.Fprintln(b.out)
	}
	none, haveNone := sums[impactNone]
	zero, haveZero := sums[impactRateZero(b.cfg.impactRuns)]
	// the workload alone is the yardstick: when its own rounds disagree
	// by more than the goal's factor, something else loaded the machine
	// and a ratio to its median says nothing about backfill
	var quiet, loud float64
	for i, r := range got[impactNone] {
		p := ms(percentile(r.latencies, 95))
		if i == 0 || p < quiet {
			quiet = p
		}
		loud = max(loud, p)
	}
	steady := quiet > 0 && loud <= 2*quiet
	for _, flags := range b.cfg.impactRuns {
		if !strings.Contains(flags, "--rate auto") || !haveNone || !haveZero {
			continue
		}
		s := sums[flags]
		what := fmt.Sprintf("beside the workload, `%s`: its p95 latency", flags)
		if !steady {
			b.goal(what, "≤ 2× without backfill", fmt.Sprintf("not judged: the workload alone had a p95 of %.2f to %.2f ms over the rounds, "+
				"so the machine was not quiet (%.2f× its median, %.2f× its quietest round)", quiet, loud, s.p95/none.p95, s.p95/quiet), false)
		} else {
			b.goal(what, "≤ 2× without backfill", fmt.Sprintf("%.2f×", s.p95/none.p95), s.p95 <= 2*none.p95)
		}
		b.goal(fmt.Sprintf("beside the workload, `%s`: rows/s", flags), "≥ 0.5× `--rate 0`'s",
			fmt.Sprintf("%.2f×", s.rowsPerSec/zero.rowsPerSec), s.rowsPerSec >= 0.5*zero.rowsPerSec)
	}
	return nil
}

// impactOnce runs the workload for -impact-seconds and, after the warm-up,
// backfill with flags (none: no backfill) until it finishes or the
// workload ends.
func (b *bench) impactOnce(ctx context.Context, flags string) (impactRun, error) {
	dest := table{dstDB, impactTable}
	if err := b.reset(ctx, dest, nil, 0); err != nil {
		return impactRun{}, err
	}
	if err := b.quiesce(ctx); err != nil {
		return impactRun{}, err
	}
	logDir, err := os.MkdirTemp(b.tmp, "pgbench-")
	if err != nil {
		return impactRun{}, err
	}
	defer os.RemoveAll(logDir)
	wctx, cancel := context.WithTimeout(ctx, time.Duration(b.cfg.impactSeconds)*time.Second+time.Minute)
	defer cancel()
	workload := newChild(wctx, filepath.Join(b.pgBin, "pgbench"), "-n", "-N", "-R", strconv.Itoa(b.cfg.impactTPS),
		"-c", strconv.Itoa(b.cfg.impactClients), "-j", "2", "-T", strconv.Itoa(b.cfg.impactSeconds),
		"-l", "--log-prefix", filepath.Join(logDir, "tx"), b.url(srcDB))
	workload.cmd.Dir = logDir
	if err := workload.cmd.Start(); err != nil {
		return impactRun{}, workload.failed(err)
	}
	workloadDone := make(chan error, 1)
	go func() { workloadDone <- workload.cmd.Wait() }()
	ended := time.Now().Add(time.Duration(b.cfg.impactSeconds) * time.Second)

	var run impactRun
	select {
	case <-time.After(impactWarmup):
	case err := <-workloadDone:
		return impactRun{}, workload.failed(fmt.Errorf("ended during its warm-up: %v", err))
	}
	began := time.Now()
	if flags == impactNone {
		// the same window a copy at --rate 0 would take: the rest of the run
		err = <-workloadDone
		run.window = time.Since(began)
	} else {
		copier := b.impactCopier(wctx, flags, dest)
		if err := copier.cmd.Start(); err != nil {
			workload.kill()
			return impactRun{}, copier.failed(err)
		}
		copied := make(chan error, 1)
		go func() { copied <- copier.cmd.Wait() }()
		select {
		case cerr := <-copied:
			run.window = time.Since(began)
			if cerr != nil {
				workload.kill()
				return impactRun{}, copier.failed(cerr)
			}
			err = <-workloadDone
		case err = <-workloadDone:
			// the workload ended first: the copy's window ends with it
			run.window = time.Since(began)
			_ = copier.cmd.Process.Signal(syscall.SIGINT)
			// psql, interrupted, exits as it pleases; backfill exits 130
			if cerr := <-copied; cerr != nil && copiesRows(flags) {
				if code, ok := exitCode(cerr); !ok || code != exitInterrupted {
					return impactRun{}, copier.failed(cerr)
				}
			}
		}
	}
	if err != nil {
		return impactRun{}, workload.failed(err)
	}
	if run.copied, err = b.count(ctx, dest); err != nil {
		return impactRun{}, err
	}
	windowEnd := began.Add(run.window)
	if windowEnd.After(ended) {
		windowEnd = ended
	}
	if run.latencies, err = readPgbenchLogs(logDir, began, windowEnd); err != nil {
		return impactRun{}, err
	}
	if len(run.latencies) == 0 {
		return impactRun{}, fmt.Errorf("pgbench logged no transaction between %s and %s", began.Format(time.TimeOnly), windowEnd.Format(time.TimeOnly))
	}
	progress("    %d transactions in %.1f s, p95 %.2f ms, %s rows copied", len(run.latencies), run.window.Seconds(),
		ms(percentile(run.latencies, 95)), thousands(run.copied))
	return run, nil
}

// impactCopier is the child that runs beside the workload for flags: the
// one busy backend's psql, or backfill with those flags.
func (b *bench) impactCopier(ctx context.Context, flags string, dest table) *child {
	if flags == impactOneBackend {
		return b.psql(ctx, srcDB, "-o", os.DevNull, "-c", "COPY public."+impactTable+" TO STDOUT")
	}
	rate, extra := "0", strings.Fields(flags)
	if i := slices.Index(extra, "--rate"); i >= 0 && i+1 < len(extra) {
		rate, extra = extra[i+1], append(extra[:i:i], extra[i+2:]...)
	}
	return newChild(ctx, b.cfg.backfill, b.startArgs(b.nextJob("impact"), table{srcDB, impactTable}, dest, rate, extra...)...)
}

// readPgbenchLogs reads the per-transaction logs pgbench -l wrote in dir
// ("client_id transaction_no time script_no time_epoch time_us
// [schedule_lag]", time in µs from the scheduled start) and returns the
// latencies of the transactions that ended within [from, to): time_epoch
// and time_us say when a transaction completed.
func readPgbenchLogs(dir string, from, to time.Time) ([]time.Duration, error) {
	files, err := filepath.Glob(filepath.Join(dir, "tx*"))
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		lines := bufio.NewScanner(f)
		for lines.Scan() {
			lat, at, ok := parsePgbenchLine(lines.Text())
			if ok && !at.Before(from) && at.Before(to) {
				out = append(out, lat)
			}
		}
		err = lines.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
	}
	return out, nil
}

func parsePgbenchLine(line string) (latency time.Duration, at time.Time, ok bool) {
	f := strings.Fields(line)
	if len(f) < 6 {
		return 0, time.Time{}, false
	}
	us, err1 := strconv.ParseInt(f[2], 10, 64)
	sec, err2 := strconv.ParseInt(f[4], 10, 64)
	usec, err3 := strconv.ParseInt(f[5], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, time.Time{}, false // "skipped" transactions of -L, and the like
	}
	return time.Duration(us) * time.Microsecond, time.Unix(sec, usec*1000), true
}

// percentile is the nearest-rank percentile p of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func impactLabel(flags string) string {
	switch flags {
	case impactNone:
		return "none (the workload alone)"
	case impactOneBackend:
		return "one busy backend, no backfill: `psql COPY " + impactTable + " TO STDOUT` into nothing"
	}
	return "`" + flags + "`"
}

// oneBackendText says what the one busy backend's row is for, when the
// runs have it.
func oneBackendText(runs []string) string {
	if !slices.Contains(runs, impactOneBackend) {
		return ""
	}
	return " The one busy backend's row runs no backfill but a read of the whole table by one psql COPY, with no write and no WAL, " +
		"over its own window: what any one session busy at full speed costs the workload on this machine, the floor under the cost of a copy at a speed that matters."
}

// copiesRows says whether the -impact-runs entry runs backfill, whose
// rows/s the tables show.
func copiesRows(flags string) bool { return flags != impactNone && flags != impactOneBackend }

// impactRateZero is the -impact-runs entry that copies without a cap, the
// reference for rows/s.
func impactRateZero(runs []string) string {
	for _, r := range runs {
		if strings.Join(strings.Fields(r), " ") == "--rate 0" {
			return r
		}
	}
	return ""
}

// rowsTimes is cell, a figure of the rows copied, or a dash for an entry
// that copies none.
func rowsTimes(flags, cell string) string {
	if !copiesRows(flags) {
		return "—"
	}
	return cell
}

func rowsCell(flags string, rowsPerSec float64) string {
	return rowsTimes(flags, thousands(int64(rowsPerSec)))
}

// timesOf is v over the reference entry's figure, or a dash without one.
func timesOf[S any](v float64, sums map[string]S, ref string, pick func(S) float64) string {
	s, ok := sums[ref]
	if !ok || pick(s) == 0 || math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf("%.2f", v/pick(s))
}
