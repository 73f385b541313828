package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/backfill/backfill/internal/benchdata"
)

const (
	memDB = "bench_mem"
	// killPoll is how often the resume group counts committed chunks
	// while it waits to kill the first run.
	killPoll           = 200 * time.Millisecond
	sqlUndefinedTable  = "42P01"
	sqlUndefinedSchema = "3F000"
)

// resumeGroup compares the peak RSS of a resume over many committed
// chunks with a fresh run's at the same settings.
//
// The committed state is made the way users make it: a run with small
// chunks is killed with SIGKILL once the wanted number of chunks has
// committed. In-flight chunks die with it and leave gaps, so the resume
// reads gaps between committed runs, not one tail. The chunk size is
// chosen so the kill falls at about 90% of the table: the resume holds
// every committed range, but has only a tenth of the chunks left to copy,
// which keeps the group to a few minutes. The fresh run, at the same chunk
// size into an empty destination, is interrupted (SIGINT) once it has
// committed as many chunks as the resume has left: the same work, from
// nothing.
func (b *bench) resumeGroup(ctx context.Context) error {
	chunk := b.cfg.rows * 10 / (11 * b.cfg.resumeChunks)
	if chunk < 1 {
		return fmt.Errorf("-rows %d is too few for -resume-chunks %d: want at least 1.1 rows per chunk", b.cfg.rows, b.cfg.resumeChunks)
	}
	size := strconv.FormatInt(chunk, 10)
	total := (b.cfg.rows + chunk - 1) / chunk
	left := total - b.cfg.resumeChunks

	if err := b.reset(ctx, sameDest, nil, 0); err != nil {
		return err
	}
	fresh, freshChunks, err := b.runUntil(ctx, b.startArgs(b.nextJob("fresh"), srcTable, sameDest, "0", "--chunk-size", size), left, syscall.SIGINT)
	if err != nil {
		return err
	}
	freshRows, err := b.count(ctx, sameDest)
	if err != nil {
		return err
	}
	progress("  %-40s %7.2f s", "fresh run, interrupted", fresh.wall.Seconds())

	if err := b.reset(ctx, sameDest, nil, 0); err != nil {
		return err
	}
	job := b.nextJob("resume")
	if _, _, err := b.runUntil(ctx, b.startArgs(job, srcTable, sameDest, "0", "--chunk-size", size), b.cfg.resumeChunks, syscall.SIGKILL); err != nil {
		return err
	}
	committed, err := b.committedChunks(ctx)
	if err != nil {
		return err
	}
	copied, err := b.count(ctx, sameDest)
	if err != nil {
		return err
	}
	progress("  killed the first run at %d committed chunks (%d rows in the destination)", committed, copied)
	if err := b.exec(ctx, "postgres", "CHECKPOINT"); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	began := time.Now()
	resumed, err := runChild(newChild(rctx, b.cfg.backfill, append([]string{"resume", "--source", b.url(srcDB), "--dest", b.url(srcDB),
		"--job", job, "--rate", "0"}, quietLogs...)...))
	resumed.wall = time.Since(began)
	if err != nil {
		return err
	}
	if got, err := b.count(ctx, sameDest); err != nil {
		return err
	} else if got != b.cfg.rows {
		return fmt.Errorf("after the resume the destination holds %d rows, want %d", got, b.cfg.rows)
	}
	progress("  %-40s %7.2f s", "resume", resumed.wall.Seconds())

	b.section(fmt.Sprintf("Resume over %s committed chunks", thousands(committed)),
		fmt.Sprintf("Same database, --rate 0, --chunk-size %s (%s chunks in all), default workers. The first run was killed with SIGKILL "+
			"after %s chunks had committed (%s rows), leaving its in-flight chunks as gaps. The fresh run, a new job at the same "+
			"settings into an empty destination, was interrupted with SIGINT after %s chunks, about the work the resume had left.",
			size, thousands(total), thousands(committed), thousands(copied), thousands(freshChunks)))
	fmt.Fprintf(b.out, "| run | committed chunks at start | rows copied | s | client CPU µs/row | peak RSS MiB |\n|---|--:|--:|--:|--:|--:|\n")
	fmt.Fprintf(b.out, "| fresh start, interrupted | 0 | %s | %.2f | %.2f | %.1f |\n", thousands(freshRows), fresh.wall.Seconds(),
		float64(fresh.cpu.Microseconds())/float64(max(freshRows, 1)), float64(fresh.maxRSS)/mib)
	rest := b.cfg.rows - copied
	fmt.Fprintf(b.out, "| resume to the end | %s | %s | %.2f | %.2f | %.1f |\n\n", thousands(committed), thousands(rest), resumed.wall.Seconds(),
		float64(resumed.cpu.Microseconds())/float64(max(rest, 1)), float64(resumed.maxRSS)/mib)
	diff := float64(resumed.maxRSS-fresh.maxRSS) / mib
	b.goal(fmt.Sprintf("resume over %s committed chunks vs a fresh run, peak RSS", thousands(committed)), "within 10 MiB",
		fmt.Sprintf("%+.1f MiB (%.1f against %.1f)", diff, float64(resumed.maxRSS)/mib, float64(fresh.maxRSS)/mib), math.Abs(diff) <= 10)
	return nil
}

// runUntil runs backfill with args until its job has committed chunks
// chunks, then sends it sig: SIGKILL, a crash, or SIGINT, after which it
// must exit as interrupted. It returns the process's usage and the
// chunks committed when the signal went.
func (b *bench) runUntil(ctx context.Context, args []string, chunks int64, sig syscall.Signal) (usage, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	c := newChild(ctx, b.cfg.backfill, args...)
	began := time.Now()
	if err := c.cmd.Start(); err != nil {
		return usage{}, 0, c.failed(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.cmd.Wait() }()
	stop := func() { c.kill(); <-exited }
	tick := time.NewTicker(killPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			stop()
			return usage{}, 0, ctx.Err()
		case err := <-exited:
			return usage{}, 0, c.failed(fmt.Errorf("ended before %d chunks had committed (exit: %v); raise -rows or lower -resume-chunks", chunks, err))
		case <-tick.C:
		}
		n, err := b.committedChunks(ctx)
		if err != nil {
			stop()
			return usage{}, 0, err
		}
		if n < chunks {
			continue
		}
		if err := c.cmd.Process.Signal(sig); err != nil {
			stop()
			return usage{}, 0, c.failed(fmt.Errorf("send %v: %w", sig, err))
		}
		err = <-exited
		code, _ := exitCode(err)
		if want := map[syscall.Signal]int{syscall.SIGKILL: -1, syscall.SIGINT: exitInterrupted}[sig]; code != want {
			return usage{}, 0, c.failed(fmt.Errorf("after %v it exited with %v, want exit code %d", sig, err, want))
		}
		u := usage{wall: time.Since(began), server: -1}
		u.cpu, u.maxRSS = processUsage(c.cmd.ProcessState)
		return u, n, nil
	}
}

// committedChunks counts the chunks committed in the same-database state
// schema, which reset leaves holding one job at a time.
func (b *bench) committedChunks(ctx context.Context) (int64, error) {
	var n int64
	err := b.conns[srcDB].QueryRow(ctx, "SELECT count(*) FROM backfill.chunks").Scan(&n)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == sqlUndefinedTable || pgErr.Code == sqlUndefinedSchema) {
		return 0, nil // the run has not made its state schema yet
	}
	if err != nil {
		return 0, fmt.Errorf("count the committed chunks: %w", err)
	}
	return n, nil
}

// memoryGroup measures a default run's peak RSS at each size, growing one
// table from size to size rather than generating each from scratch.
func (b *bench) memoryGroup(ctx context.Context) error {
	if err := b.exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{memDB}.Sanitize()+" TEMPLATE template0"); err != nil {
		return err
	}
	if err := b.connect(ctx, memDB); err != nil {
		return err
	}
	defer func() {
		// The tables take gigabytes; give them back before the next group.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if c := b.conns[memDB]; c != nil {
			_ = c.Close(dctx)
			delete(b.conns, memDB)
		}
		if err := b.exec(dctx, "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{memDB}.Sanitize()+" WITH (FORCE)"); err != nil {
			progress("drop %s: %v", memDB, err)
		}
	}()
	from, to := table{memDB, "s"}, table{memDB, "d"}
	for _, t := range []table{from, to} {
		if err := benchdata.Create(ctx, b.conns[memDB], t.ident()); err != nil {
			return err
		}
	}
	var filled int64
	type point struct {
		rows int64
		s    sample
	}
	var points []point
	for _, size := range b.cfg.memorySizes {
		progress("  growing %s to %d rows", from.qualified(), size)
		if err := benchdata.Fill(ctx, b.conns[memDB], from.ident(), filled+1, size); err != nil {
			return err
		}
		if err := benchdata.Settle(ctx, b.conns[memDB], from.ident()); err != nil {
			return err
		}
		filled = size
		s, err := b.measure(ctx, copyMethod{label: "backfill start --rate 0, " + thousands(size) + " rows", from: from, dest: to, run: backfillStart()}, size)
		if err != nil {
			return err
		}
		points = append(points, point{size, s})
	}
	b.section("Peak RSS by table size", "Same database, --rate 0, default settings, one run per size.")
	fmt.Fprintf(b.out, "| rows | s | rows/s | client CPU µs/row | peak RSS MiB |\n|--:|--:|--:|--:|--:|\n")
	for _, p := range points {
		fmt.Fprintf(b.out, "| %s | %.2f | %s | %.2f | %.1f |\n", thousands(p.rows), p.s.wall.Seconds(),
			thousands(int64(float64(p.rows)/p.s.wall.Seconds())), float64(p.s.cpu.Microseconds())/float64(p.rows), float64(p.s.maxRSS)/mib)
	}
	fmt.Fprintln(b.out)
	if len(points) >= 2 {
		lo, hi := points[0], points[len(points)-1]
		change := float64(hi.s.maxRSS-lo.s.maxRSS) / float64(lo.s.maxRSS)
		b.goal(fmt.Sprintf("peak RSS at %s rows vs %s rows", thousands(hi.rows), thousands(lo.rows)), "within 10%",
			fmt.Sprintf("%+.1f%% (%.1f against %.1f MiB)", 100*change, float64(hi.s.maxRSS)/mib, float64(lo.s.maxRSS)/mib), math.Abs(change) <= 0.10)
	}
	var peak int64
	for _, p := range points {
		peak = max(peak, p.s.maxRSS)
	}
	b.goal("peak RSS across the memory group's sizes", "≤ 48 MiB", fmt.Sprintf("%.1f MiB", float64(peak)/mib), peak <= 48*mib)
	return nil
}

// rateGroup runs capped copies of rate × seconds rows each and compares
// the rate achieved with the cap, over the job's own start and finish
// times as `status --json` reports them.
func (b *bench) rateGroup(ctx context.Context) error {
	type point struct {
		rate     float64
		rows     int64
		wall     time.Duration
		jobTime  time.Duration
		achieved float64
	}
	var points []point
	for _, r := range b.cfg.rates {
		rows := int64(r * float64(b.cfg.rateSeconds))
		from, to := table{srcDB, "rate_s"}, table{srcDB, "rate_d"}
		for _, t := range []table{from, to} {
			if err := b.exec(ctx, t.db, "DROP TABLE IF EXISTS "+t.ident().Sanitize()); err != nil {
				return err
			}
			if err := benchdata.Create(ctx, b.conns[t.db], t.ident()); err != nil {
				return err
			}
		}
		if err := benchdata.Fill(ctx, b.conns[srcDB], from.ident(), 1, rows); err != nil {
			return err
		}
		if err := benchdata.Settle(ctx, b.conns[srcDB], from.ident()); err != nil {
			return err
		}
		job := b.nextJob("rate")
		rate := strconv.FormatFloat(r, 'f', -1, 64)
		s, err := b.measure(ctx, copyMethod{label: "backfill start --rate " + rate, from: from, dest: to,
			run: func(ctx context.Context, b *bench, m copyMethod) (usage, error) {
				return runChild(newChild(ctx, b.cfg.backfill, b.startArgs(job, from, to, rate)...))
			}}, rows)
		if err != nil {
			return err
		}
		st, err := b.status(ctx, to.db, job)
		if err != nil {
			return err
		}
		if st.FinishedAt == nil {
			return fmt.Errorf("job %s has no finish time after its run", job)
		}
		took := st.FinishedAt.Sub(st.StartedAt)
		points = append(points, point{rate: r, rows: st.RowsRead, wall: s.wall, jobTime: took, achieved: float64(st.RowsRead) / took.Seconds()})
	}
	b.section(fmt.Sprintf("Rate cap over %d s", b.cfg.rateSeconds),
		"Each run copies cap × seconds rows. Achieved is rows over the job's own started_at → finished_at (`status --json`); "+
			"wall-clock includes start-up and exit.")
	fmt.Fprintf(b.out, "| cap rows/s | rows | job s | achieved rows/s | achieved / cap | wall-clock s |\n|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range points {
		fmt.Fprintf(b.out, "| %s | %s | %.2f | %.1f | %.4f | %.2f |\n", thousands(int64(p.rate)), thousands(p.rows),
			p.jobTime.Seconds(), p.achieved, p.achieved/p.rate, p.wall.Seconds())
		dev := p.achieved/p.rate - 1
		b.goal(fmt.Sprintf("rate cap %s rows/s over %d s", thousands(int64(p.rate)), b.cfg.rateSeconds), "within ±2%",
			fmt.Sprintf("%+.2f%%", 100*dev), math.Abs(dev) <= 0.02)
	}
	fmt.Fprintln(b.out)
	return b.exec(ctx, srcDB, "DROP TABLE IF EXISTS public.rate_s", "DROP TABLE IF EXISTS public.rate_d")
}

// jobStatus is the part of `backfill status --json` the rate group reads.
type jobStatus struct {
	RowsRead   int64      `json:"rows_read"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

func (b *bench) status(ctx context.Context, db, job string) (jobStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := newChild(ctx, b.cfg.backfill, "status", "--dest", b.url(db), "--job", job, "--json")
	out, err := c.cmd.Output()
	if err != nil {
		return jobStatus{}, c.failed(err)
	}
	var st jobStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return jobStatus{}, fmt.Errorf("read status --json of %s: %w", job, err)
	}
	return st, nil
}
