package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

const mib = 1 << 20

// header prints what the figures were taken on.
func (b *bench) header(ctx context.Context) error {
	var version string
	if err := b.conns["postgres"].QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		return fmt.Errorf("ask the server its version: %w", err)
	}
	settings, err := b.serverSettings(ctx)
	if err != nil {
		return err
	}
	pgcopydb := "not installed (apt-get install pgcopydb)"
	if b.cfg.pgcopydb != "" {
		pgcopydb = firstLine(commandOutput(ctx, b.cfg.pgcopydb, "--version"))
	}
	w := b.out
	fmt.Fprintf(w, "# backfill benchmark, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "| | |\n|---|---|\n")
	fmt.Fprintf(w, "| machine | %d CPUs (%s), %.1f GiB memory, Linux %s |\n", runtime.NumCPU(), cpuModel(), float64(memTotal())/(1<<30), strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")))
	fmt.Fprintf(w, "| load average at start | %s |\n", loadAverage())
	fmt.Fprintf(w, "| PostgreSQL | %s, a throwaway cluster on the same host (%s) |\n", version, settings)
	fmt.Fprintf(w, "| Go | %s |\n", runtime.Version())
	fmt.Fprintf(w, "| backfill | %s, commit %s |\n", b.cfg.backfill, gitCommit(ctx))
	fmt.Fprintf(w, "| pgcopydb | %s |\n", pgcopydb)
	fmt.Fprintf(w, "| table | bigint key, 3 short texts, integer, timestamptz, small jsonb; primary key on both sides; %s rows |\n", thousands(b.cfg.rows))
	fmt.Fprintf(w, "| command | `benchrun %s` |\n\n", strings.Join(os.Args[1:], " "))
	return nil
}

func (b *bench) serverSettings(ctx context.Context) (string, error) {
	var parts []string
	for _, name := range []string{"shared_buffers", "fsync", "synchronous_commit", "full_page_writes", "autovacuum", "max_wal_size"} {
		var v string
		if err := b.conns["postgres"].QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			return "", fmt.Errorf("read setting %s: %w", name, err)
		}
		parts = append(parts, name+"="+v)
	}
	return strings.Join(parts, ", "), nil
}

func (b *bench) section(title, note string) {
	fmt.Fprintf(b.out, "## %s\n\n", title)
	if note != "" {
		fmt.Fprintf(b.out, "%s\n\n", note)
	}
}

// resultTable is a Markdown table of methods' medians.
type resultTable struct{ lines []string }

func newResultTable() *resultTable {
	return &resultTable{lines: []string{
		"| method | median s | min–max s | × single | × single, best | rows/s | client CPU µs/row | server CPU µs/row | peak RSS MiB |",
		"|---|--:|--:|--:|--:|--:|--:|--:|--:|",
	}}
}

// add is one method's row against the single statement's samples. client
// says whether the method ran in a process of its own, whose CPU and
// memory are its cost. "× single, best" compares the fastest rounds, as
// issue 9's first figures did: on a loaded machine the best round is the
// least disturbed one.
func (t *resultTable) add(label string, samples, single []sample, client bool) {
	if len(samples) == 0 {
		return
	}
	walls := make([]time.Duration, len(samples))
	cpus := make([]time.Duration, len(samples))
	servers := make([]time.Duration, 0, len(samples))
	var peak int64
	lo, hi := samples[0].wall, samples[0].wall
	for i, s := range samples {
		walls[i], cpus[i] = s.wall, s.cpu
		if s.server >= 0 {
			servers = append(servers, s.server)
		}
		peak = max(peak, s.maxRSS)
		lo, hi = min(lo, s.wall), max(hi, s.wall)
	}
	rows := float64(samples[0].rows)
	med := median(walls)
	clientCPU, rss := "—", "—"
	if client {
		clientCPU = fmt.Sprintf("%.2f", float64(median(cpus).Microseconds())/rows)
		rss = fmt.Sprintf("%.1f", float64(peak)/mib)
	}
	server := "—"
	if len(servers) > 0 {
		server = fmt.Sprintf("%.2f", float64(median(servers).Microseconds())/rows)
	}
	t.lines = append(t.lines, fmt.Sprintf("| %s | %.2f | %.2f–%.2f | %.2f | %.2f | %s | %s | %s | %s |",
		escapeCell(label), med.Seconds(), lo.Seconds(), hi.Seconds(), ratio(medianWall(single), med), ratio(fastest(single), lo),
		thousands(int64(rows/med.Seconds())), clientCPU, server, rss))
}

func (t *resultTable) note(label, text string) {
	t.lines = append(t.lines, fmt.Sprintf("| %s | %s | | | | | | | |", escapeCell(label), text))
}

func (t *resultTable) print(w io.Writer) {
	fmt.Fprintf(w, "%s\n\n", strings.Join(t.lines, "\n"))
}

// escapeCell keeps a method's name (psql's \copy | …) from splitting the
// Markdown row.
func escapeCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// ratio is throughput relative to the reference: ref's time over d's.
func ratio(ref, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return ref.Seconds() / d.Seconds()
}

func fastest(samples []sample) time.Duration {
	var best time.Duration
	for i, s := range samples {
		if i == 0 || s.wall < best {
			best = s.wall
		}
	}
	return best
}

func medianWall(samples []sample) time.Duration {
	walls := make([]time.Duration, len(samples))
	for i, s := range samples {
		walls[i] = s.wall
	}
	return median(walls)
}

// goal is one of the issues' goals (9's speed and memory, 12's impact)
// as this run measured it.
type goal struct {
	what, target, measured string
	met                    bool
}

func (b *bench) goal(what, target, measured string, met bool) {
	b.goals = append(b.goals, goal{what: what, target: target, measured: measured, met: met})
}

// ratioGoal judges a throughput goal on the medians, and says what the
// best rounds gave beside it.
func (b *bench) ratioGoal(what string, target float64, ref, method []sample) {
	r := ratio(medianWall(ref), medianWall(method))
	b.goal(what, fmt.Sprintf("≥ %.2f×", target), fmt.Sprintf("%.2f× (best rounds %.2f×)", r, ratio(fastest(ref), fastest(method))), r >= target)
}

func (b *bench) printGoals() {
	if len(b.goals) == 0 {
		return
	}
	b.section("The goals on this run's medians", "")
	fmt.Fprintln(b.out, "| goal | target | measured | met |\n|---|---|---|---|")
	for _, g := range b.goals {
		met := "no"
		if g.met {
			met = "yes"
		}
		fmt.Fprintf(b.out, "| %s | %s | %s | %s |\n", escapeCell(g.what), g.target, g.measured, met)
	}
	fmt.Fprintf(b.out, "\nload average at the end: %s\n\n", loadAverage())
}

// methodGoals judges the goals the methods group measures.
func (b *bench) methodGoals(got map[string][]sample) {
	if s, single := got[methodBackfill], got[methodSingle]; len(s) > 0 && len(single) > 0 {
		b.ratioGoal("--rate 0 into an empty destination vs the single statement, same database", 1.0, single, s)
	}
	if s := got[methodBackfillCross]; len(s) > 0 {
		if p := got[methodPgcopydb]; len(p) > 0 {
			b.ratioGoal("across databases vs pgcopydb copy table-data", 1.0, p, s)
		} else if b.cfg.pgcopydb == "" {
			b.goal("across databases vs pgcopydb copy table-data", "≥ 1.00×", "not measured: pgcopydb not installed (apt-get install pgcopydb)", false)
		}
	}
	var peak int64
	for _, key := range []string{methodBackfill, methodBackfillCross} {
		s := got[key]
		if len(s) == 0 {
			continue
		}
		cpus := make([]time.Duration, len(s))
		for i, x := range s {
			cpus[i] = x.cpu
			peak = max(peak, x.maxRSS)
		}
		perRow := float64(median(cpus).Microseconds()) / float64(s[0].rows)
		where := "same database"
		if key == methodBackfillCross {
			where = "across databases"
		}
		b.goal("client CPU of a straight copy, "+where, "≤ 1.0 µs/row", fmt.Sprintf("%.2f µs/row", perRow), perRow <= 1.0)
	}
	if peak > 0 {
		b.goal(fmt.Sprintf("peak RSS at %s rows, default settings", thousands(b.cfg.rows)), "≤ 48 MiB", fmt.Sprintf("%.1f MiB", float64(peak)/mib), peak <= 48*mib)
	}
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return string(b)
}

func cpuModel() string {
	for _, line := range strings.Split(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown model"
}

func memTotal() int64 {
	for _, line := range strings.Split(readFile("/proc/meminfo"), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func loadAverage() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// commandOutput runs a short informational command; its failure is
// reported as text in the header, not an error.
func commandOutput(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return fmt.Sprintf("unknown (%s: %v)", name, err)
	}
	return strings.TrimSpace(string(out))
}

func gitCommit(ctx context.Context) string {
	commit := commandOutput(ctx, "git", "rev-parse", "--short", "HEAD")
	if dirty := commandOutput(ctx, "git", "status", "--porcelain", "--untracked-files=no"); dirty != "" && !strings.HasPrefix(dirty, "unknown") {
		commit += " with uncommitted changes"
	}
	return commit
}

func firstLine(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.Contains(line, " INFO ") {
			return line
		}
	}
	return s
}
