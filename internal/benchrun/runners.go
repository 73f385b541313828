package main

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"time"
)

// The runners group (issue 13): one job spread over 1, 2 and 4 runner
// processes at --rate 0, rounds alternating, and the accuracy of one rate
// cap shared by three runners.

// runnerCounts are the runner processes of the group's runs.
var runnerCounts = []int{1, 2, 4}

// partitionsPerRunner is how many partitions a run has per runner: enough
// that the last ones do not leave runners idle for long, few enough that
// each is many chunks.
const partitionsPerRunner = 2

// runnersSample is one run of the group.
type runnersSample struct {
	wall      time.Duration
	client    time.Duration // CPU of all the runner processes
	server    time.Duration
	rows      int64
	jobTime   time.Duration // the job's started_at → finished_at
	partition int
}

func (b *bench) runnersGroup(ctx context.Context) error {
	got := map[int][]runnersSample{}
	for round := range b.cfg.rounds {
		for _, n := range runnerCounts {
			s, err := b.runRunners(ctx, n, "0", b.cfg.rows)
			if err != nil {
				return fmt.Errorf("%d runners: %w", n, err)
			}
			progress("  round %d: %d runners %7.2f s", round+1, n, s.wall.Seconds())
			got[n] = append(got[n], s)
		}
	}
	b.section(fmt.Sprintf("Runners: one job of %s rows over 1, 2 and 4 runner processes, --rate 0", thousands(b.cfg.rows)),
		fmt.Sprintf("Across databases, %d partitions per runner; the first runner starts the job and the others join it as soon as "+
			"its partitions exist. Wall-clock is from the first start to the last exit. CPU of the runners summed; the server's "+
			"meanwhile. Medians over %s.", partitionsPerRunner, b.roundsText()))
	fmt.Fprintf(b.out, "| runners | partitions | median s | rows/s | × one runner | client CPU µs/row | server CPU µs/row | "+
		"server's share of the %d cores | runners' share |\n", runtime.NumCPU())
	fmt.Fprintln(b.out, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	one := medianRunners(got[1], func(s runnersSample) float64 { return s.wall.Seconds() })
	for _, n := range runnerCounts {
		wall := medianRunners(got[n], func(s runnersSample) float64 { return s.wall.Seconds() })
		cpu := medianRunners(got[n], func(s runnersSample) float64 { return perRow(s.client, s.rows) })
		server := medianRunners(got[n], func(s runnersSample) float64 { return perRow(s.server, s.rows) })
		share := func(per float64) string { // of the cores over the wall time
			return fmt.Sprintf("%.0f%%", 100*per*float64(b.cfg.rows)/1e6/wall/float64(runtime.NumCPU()))
		}
		fmt.Fprintf(b.out, "| %d | %d | %.2f | %s | %.2f | %.2f | %.2f | %s | %s |\n", n, n*partitionsPerRunner, wall,
			thousands(int64(float64(b.cfg.rows)/wall)), one/wall, cpu, server, share(server), share(cpu))
	}
	fmt.Fprintln(b.out)

	// one cap for the job across three runners
	const runners = 3
	capRate := 20_000.0
	rows := int64(capRate * float64(b.cfg.rateSeconds))
	s, err := b.runRunners(ctx, runners, strconv.FormatFloat(capRate, 'f', -1, 64), min(rows, b.cfg.rows))
	if err != nil {
		return fmt.Errorf("%d runners at a cap: %w", runners, err)
	}
	achieved := float64(s.rows) / s.jobTime.Seconds()
	dev := achieved/capRate - 1
	fmt.Fprintf(b.out, "One cap across %d runners: `--rate %s` over %s rows: the job's own started_at → finished_at %.2f s, "+
		"achieved %.1f rows/s, %+.2f%% of the cap.\n\n", runners, thousands(int64(capRate)), thousands(s.rows), s.jobTime.Seconds(), achieved, 100*dev)
	b.goal(fmt.Sprintf("one rate cap (%s rows/s) across %d runners", thousands(int64(capRate)), runners), "within ±5%",
		fmt.Sprintf("%+.2f%%", 100*dev), math.Abs(dev) <= 0.05)
	return nil
}

// runRunners copies rows rows of the benchmark table across databases with
// n runner processes at rate.
func (b *bench) runRunners(ctx context.Context, n int, rate string, rows int64) (runnersSample, error) {
	from, dest := srcTable, crossDest
	if err := b.reset(ctx, dest, nil, 0); err != nil {
		return runnersSample{}, err
	}
	if err := b.quiesce(ctx); err != nil {
		return runnersSample{}, err
	}
	job := b.nextJob("runners")
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	extra := []string{"--partitions", strconv.Itoa(n * partitionsPerRunner), "--lease-timeout", "10s"}
	if rows < b.cfg.rows {
		extra = append(extra, "--where", fmt.Sprintf("id <= %d", rows)) // the benchmark table's ids are 1…rows
	}
	cpu0 := b.serverCPU()
	began := time.Now()
	first := newChild(ctx, b.cfg.backfill, b.startArgs(job, from, dest, rate, extra...)...)
	if err := first.cmd.Start(); err != nil {
		return runnersSample{}, first.failed(err)
	}
	children := []*child{first}
	defer func() {
		for _, c := range children {
			c.kill()
		}
	}()
	for deadline := time.Now().Add(time.Minute); n > 1; {
		var parts int64
		err := b.conns[dest.db].QueryRow(ctx, "SELECT count(*) FROM backfill.partitions WHERE job = $1", job).Scan(&parts)
		if err == nil && parts > 0 {
			break
		}
		if time.Now().After(deadline) {
			return runnersSample{}, fmt.Errorf("job %s has no partitions a minute after its start (%v)", job, err)
		}
		time.Sleep(pollEvery)
	}
	for range n - 1 {
		args := []string{"join", "--source", b.url(from.db), "--dest", b.url(dest.db), "--job", job}
		c := newChild(ctx, b.cfg.backfill, append(args, quietLogs...)...)
		if err := c.cmd.Start(); err != nil {
			return runnersSample{}, c.failed(err)
		}
		children = append(children, c)
	}
	var s runnersSample
	for _, c := range children {
		if err := c.cmd.Wait(); err != nil {
			return runnersSample{}, c.failed(err)
		}
		cpu, _ := processUsage(c.cmd.ProcessState)
		s.client += cpu
	}
	s.wall = time.Since(began)
	if err := b.quiesce(ctx); err != nil {
		return runnersSample{}, err
	}
	if cpu1 := b.serverCPU(); cpu0 >= 0 && cpu1 >= 0 {
		s.server = cpu1 - cpu0
	}
	got, err := b.count(ctx, dest)
	if err != nil {
		return runnersSample{}, err
	}
	if got != rows {
		return runnersSample{}, fmt.Errorf("the destination holds %d rows after %d runners, want %d", got, n, rows)
	}
	st, err := b.status(ctx, dest.db, job)
	if err != nil {
		return runnersSample{}, err
	}
	if st.FinishedAt == nil {
		return runnersSample{}, fmt.Errorf("job %s has no finish time after its runners exited", job)
	}
	s.rows, s.jobTime, s.partition = got, st.FinishedAt.Sub(st.StartedAt), n*partitionsPerRunner
	return s, nil
}

func perRow(d time.Duration, rows int64) float64 {
	return float64(d.Microseconds()) / float64(rows)
}

func medianRunners(ss []runnersSample, f func(runnersSample) float64) float64 {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return medianOf(xs)
}
