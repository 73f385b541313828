package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/backfill/backfill"
)

// statusWidth is the most columns the status table takes: it fits a
// terminal of 100 columns without wrapping, whatever the names.
const statusWidth = 100

// watchEvery is how often status --watch redraws.
const watchEvery = 2 * time.Second

// clearScreen moves the cursor home and erases the screen, for a watch on
// a terminal to redraw in place.
const clearScreen = "\x1b[H\x1b[2J"

func statusCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show jobs and their progress; --job shows one in detail",
		UsageText: "backfill status --dest URL [--job NAME] [--wide] [--watch] [--json]\n" +
			fmt.Sprintf("Without --job, a table of every job in %d columns; --wide adds every column.", statusWidth),
		Flags: append(controlFlags(),
			&cli.BoolFlag{Name: "wide", Usage: "the table with every column, however wide"},
			&cli.BoolFlag{Name: "watch", Usage: fmt.Sprintf("redraw every %s until interrupted", watchEvery)},
			&cli.BoolFlag{Name: "json", Usage: "print JSON: an object for --job, else an array"}),
		Action: func(c *cli.Context) error {
			t := targetFromFlags(c)
			view := func(w io.Writer) error { return printStatusView(c, w, t) }
			if !c.Bool("watch") {
				return view(stdout)
			}
			return watch(c, stdout, view)
		},
	}
}

// printStatusView prints what the flags ask for: the detail of --job, the
// table of every job, or either as JSON.
func printStatusView(c *cli.Context, w io.Writer, t backfill.Target) error {
	if t.Job != "" {
		d, err := backfill.StatusDetail(c.Context, t)
		if err != nil {
			return err
		}
		wordErrors(&d.JobStatus)
		if c.Bool("json") {
			return encodeJSON(w, d)
		}
		printDetail(w, d)
		return nil
	}
	jobs, err := backfill.Status(c.Context, t)
	if err != nil {
		return err
	}
	for i := range jobs {
		wordErrors(&jobs[i])
	}
	switch {
	case c.Bool("json"):
		return encodeJSON(w, jobs)
	case len(jobs) == 0:
		fmt.Fprintln(w, "no jobs")
	case c.Bool("wide"):
		printWide(w, jobs)
	default:
		printTable(w, jobs, statusWidth)
	}
	return nil
}

// wordErrors words a job's last error for the command line.
func wordErrors(s *backfill.JobStatus) {
	if s.LastError != nil {
		*s.LastError = flagWords(*s.LastError)
	}
}

func encodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// watch prints view every watchEvery until interrupted: in place on a
// terminal, one after the other elsewhere. A failure of the first view is
// the command's; later ones are shown and the watch goes on, for the
// destination may come back.
func watch(c *cli.Context, stdout io.Writer, view func(io.Writer) error) error {
	terminal := isTerminal(stdout)
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for first := true; ; first = false {
		var frame strings.Builder
		if terminal {
			fmt.Fprintf(&frame, "%sbackfill status, every %s until interrupted   %s\n\n", clearScreen, watchEvery, time.Now().Format(time.TimeOnly))
		} else if !first {
			frame.WriteString("\n")
		}
		if err := view(&frame); err != nil {
			if first || c.Context.Err() != nil {
				return err
			}
			fmt.Fprintf(&frame, "backfill: %s\n", flagWords(err.Error()))
		}
		if _, err := io.WriteString(stdout, frame.String()); err != nil {
			return err
		}
		select {
		case <-c.Context.Done():
			return nil // interrupted: what the watch waits for
		case <-t.C:
		}
	}
}

// The compact table's columns: each job's cells, and the two (JOB and
// RUNNER) that give up their width when the table would be too wide.
var (
	tableHeader = []string{"JOB", "STATE", "PROGRESS", "ROWS/S", "ETA", "FAILED", "RUNNER", "UPDATED"}
	jobColumn   = 0
	runnerCol   = 6
)

// tableGap separates the columns.
const tableGap = "  "

// minNameWidth is as narrow as JOB and RUNNER get: enough to tell names
// apart by their start and end; RUNNER is cut to minRunnerWidth before
// JOB is cut at all.
const (
	minNameWidth   = 12
	minRunnerWidth = 16
)

// printTable prints one line per job within width columns: the figures
// abbreviated, and the job's and runner's names shortened in the middle
// when they do not fit.
func printTable(w io.Writer, jobs []backfill.JobStatus, width int) {
	rows := [][]string{tableHeader}
	for _, s := range jobs {
		state := s.State
		if s.Throttled {
			state += "*" // throttled: the detail view and --wide say why
		}
		rows = append(rows, []string{s.Job, state, progressText(s), speedText(s), etaText(s.ETASeconds),
			countText(s.RowsFailed), runnerText(s), ageText(s.AsOf, s.UpdatedAt)})
	}
	widths := make([]int, len(tableHeader))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	total := func() int {
		n := len(tableGap) * (len(widths) - 1)
		for _, wd := range widths {
			n += wd
		}
		return n
	}
	// the runner gives up its width first, down to what tells hosts apart,
	// then the job, whose name is what a reader looks for
	for _, cut := range []struct{ column, least int }{{runnerCol, minRunnerWidth}, {jobColumn, minNameWidth}, {runnerCol, minNameWidth}} {
		for total() > width && widths[cut.column] > cut.least {
			widths[cut.column]--
		}
	}
	for _, row := range rows {
		var line strings.Builder
		for i, cell := range row {
			cell = shorten(cell, widths[i])
			line.WriteString(cell)
			if i < len(row)-1 {
				line.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell)) + tableGap)
			}
		}
		fmt.Fprintln(w, line.String())
	}
	if slices.ContainsFunc(jobs, func(s backfill.JobStatus) bool { return s.Throttled }) {
		fmt.Fprintln(w, "* throttled: status --job NAME says why")
	}
}

// shorten cuts s to width columns in the middle, where names that share a
// prefix or a suffix (orders_2023, orders_2024; host:pid) still differ.
func shorten(s string, width int) string {
	r := []rune(s)
	if len(r) <= width {
		return s
	}
	head := (width - 1) / 2
	return string(r[:head]) + "…" + string(r[len(r)-(width-1-head):])
}

// clip cuts s to width columns at its end: a message reads from its start.
func clip(s string, width int) string {
	r := []rune(s)
	if len(r) <= width {
		return s
	}
	return string(r[:width-1]) + "…"
}

// progressText is the job's percent of its estimate and the rows it has
// read: "45.2% 1.2M".
func progressText(s backfill.JobStatus) string {
	if s.RowsEstimated <= 0 && s.State != backfill.StateDone {
		return countText(s.RowsRead) // no estimate: no percent
	}
	return fmt.Sprintf("%.1f%% %s", s.Percent, countText(s.RowsRead))
}

// speedText is a running job's rows per second over the last minute.
func speedText(s backfill.JobStatus) string {
	if s.State != backfill.StateRunning {
		return "-"
	}
	return countText(int64(s.RowsPerSec))
}

// jobRateText is the job's rate cap, and how --rate auto sets it: "auto
// (now 4000 rows/s, at most 8000 rows/s)", "at most" left out without a
// ceiling.
func jobRateText(s backfill.JobStatus) string {
	if !s.RateAuto {
		return rateText(s.Rate)
	}
	text := "auto (now " + rateText(s.Rate)
	if s.RateAutoMax > 0 {
		text += ", at most " + rateText(s.RateAutoMax)
	}
	return text + ")"
}

// runnerText is the job's runner as host:pid: of a partitioned job, the
// one holding a lease, or how many do.
func runnerText(s backfill.JobStatus) string {
	switch {
	case len(s.Runners) == 1:
		return fmt.Sprintf("%s:%d", s.Runners[0].Host, s.Runners[0].PID)
	case len(s.Runners) > 1:
		return plural(len(s.Runners), "runner")
	case s.Runner == "":
		return "-"
	}
	return s.Runner
}

// countText abbreviates a count to at most five characters: 9999, 12.3k,
// 123k, 4.5M, 1.2B.
func countText(n int64) string {
	var size float64
	var unit string
	switch {
	case n < 10_000:
		return strconv.FormatInt(n, 10)
	case n < 999_500:
		size, unit = 1e3, "k"
	case n < 999_500_000:
		size, unit = 1e6, "M"
	default:
		size, unit = 1e9, "B"
	}
	v := float64(n) / size
	if v < 99.95 {
		return strconv.FormatFloat(v, 'f', 1, 64) + unit
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + unit
}

// etaText is a time left as its two largest units: 45s, 12m30s, 3h20m,
// 2d5h; "-" when unknown.
func etaText(seconds *float64) string {
	if seconds == nil {
		return "-"
	}
	return durationText(time.Duration(*seconds * float64(time.Second)))
}

func durationText(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
	}
}

// ageText is how long before now at was, as "12s ago".
func ageText(now, at time.Time) string {
	return durationText(max(now.Sub(at), 0)) + " ago"
}

// printWide prints every column of every job, however wide.
func printWide(w io.Writer, jobs []backfill.JobStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSTATE\tFROM\tTO\tROWS READ\tEST.\t%\tINSERTED\tSKIPPED\tFILTERED\tFAILED\tCHUNKS\tRATE\tWORKERS\tROWS/S\tETA\tTHROTTLED\tRUNNER\tHEARTBEAT\tUPDATED\tLAST KEY\tLAST ERROR")
	for _, s := range jobs {
		lastErr := ""
		if s.LastError != nil {
			lastErr = *s.LastError
		}
		heartbeat := "-"
		if s.HeartbeatAt != nil {
			heartbeat = ageText(s.AsOf, *s.HeartbeatAt)
		}
		throttled := "-"
		if s.Throttled {
			throttled = s.ThrottleReason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			s.Job, s.State, s.From, s.To, s.RowsRead, s.RowsEstimated, s.Percent, s.RowsInserted, s.RowsSkipped,
			s.RowsFiltered, s.RowsFailed, s.ChunksDone, jobRateText(s), s.Workers, speedText(s), etaText(s.ETASeconds),
			throttled, runnerText(s), heartbeat, s.UpdatedAt.Local().Format(time.DateTime), strings.Join(s.LastKey, ","), lastErr)
	}
	tw.Flush()
}

// printDetail prints one job: its progress, what it copies, how it runs,
// its runner, its counters, its slowest recent chunks and its first
// failed rows.
func printDetail(w io.Writer, d backfill.JobDetail) {
	s := d.JobStatus
	fmt.Fprintf(w, "job %s: %s, %d rows read", s.Job, s.State, s.RowsRead)
	if s.RowsEstimated > 0 || s.State == backfill.StateDone {
		fmt.Fprintf(w, " of ~%d (%.1f%%)", s.RowsEstimated, s.Percent)
	}
	if s.State == backfill.StateRunning {
		fmt.Fprintf(w, ", %.0f rows/s over the last minute, ETA %s", s.RowsPerSec, etaText(s.ETASeconds))
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "copies:     %s → %s, key %s", s.From, s.To, strings.Join(d.Key, ", "))
	if d.Follow {
		fmt.Fprint(w, ", following the table to its end")
	}
	fmt.Fprintln(w)
	if d.Where != "" {
		fmt.Fprintf(w, "where:      %s\n", d.Where)
	}
	columns := "the same-named columns"
	if len(d.Columns) > 0 {
		parts := make([]string, len(d.Columns))
		for i, m := range d.Columns {
			parts[i] = m.Column + ": " + m.Expr
		}
		columns = strings.Join(parts, "; ")
	}
	fmt.Fprintf(w, "columns:    %s\n", columns)
	if d.SkipIf != "" {
		fmt.Fprintf(w, "skip if:    %s\n", d.SkipIf)
	}
	chunks := "chunks sized by time"
	if d.ChunkSize > 0 {
		chunks = fmt.Sprintf("chunks of %d rows", d.ChunkSize)
	}
	fmt.Fprintf(w, "settings:   rate %s, %s, %s\n", jobRateText(s), plural(s.Workers, "worker"), chunks)
	if s.Throttled {
		fmt.Fprintf(w, "throttled:  %s\n", s.ThrottleReason)
	}

	runner := "none"
	if s.Runner != "" {
		runner = s.Runner
		if s.HeartbeatAt != nil {
			runner += ", heartbeat " + ageText(s.AsOf, *s.HeartbeatAt)
		} else {
			runner += " (last), no heartbeat: not running"
		}
	}
	fmt.Fprintf(w, "runner:     %s\n", runner)
	for _, r := range s.Runners {
		held := "partitions "
		if len(r.Partitions) == 1 {
			held = "partition "
		}
		fmt.Fprintf(w, "  %s:%d holds %s%s, %.0f rows/s over the last minute, renewed %s\n", r.Host, r.PID, held, intsText(r.Partitions),
			r.RowsPerSec, ageText(s.AsOf, s.AsOf.Add(-time.Duration(r.HeartbeatAgeSeconds*float64(time.Second)))))
	}
	if len(s.Partitions) > 0 {
		done := 0
		for _, p := range s.Partitions {
			if p.State == backfill.StateDone {
				done++
			}
		}
		fmt.Fprintf(w, "partitions: %d, %d done\n", len(s.Partitions), done)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tKEYS\tSTATE\tROWS\t%\tOWNER")
		for _, p := range s.Partitions {
			last := "the end"
			if p.LastKey != nil {
				last = keyText(p.LastKey)
			}
			keys := shorten(keyText(p.AfterKey)+" … "+last, 40)
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%.1f\t%s\n", p.ID, keys, p.State, p.RowsRead, p.Percent, orDash(p.Owner))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "rows:       %d read: %d inserted, %d skipped, %d filtered, %d failed, in %s; updated %s\n",
		s.RowsRead, s.RowsInserted, s.RowsSkipped, s.RowsFiltered, s.RowsFailed, plural(int(s.ChunksDone), "chunk"), ageText(s.AsOf, s.UpdatedAt))
	fmt.Fprintf(w, "write path: %d chunks copied straight into the destination, %d through the stage, %d isolated around failing rows\n",
		s.ChunksDirect, s.ChunksStaged, s.ChunksIsolated)
	if s.LastError != nil {
		fmt.Fprintf(w, "last error: %s\n", *s.LastError)
	}

	if len(d.SlowestChunks) > 0 {
		fmt.Fprintf(w, "\nslowest of the last 1000 chunks (their write, timed by the destination):\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  SEQ\tKEYS\tROWS\tWRITE\tPATH\tFINISHED")
		for _, c := range d.SlowestChunks {
			keys := shorten(keyText(c.First)+" … "+keyText(c.Last), 40)
			fmt.Fprintf(tw, "  %d\t%s\t%d\t%.3fs\t%s\t%s\n", c.Seq, keys, c.Rows, c.WriteSeconds, c.Path, ageText(s.AsOf, c.FinishedAt))
		}
		tw.Flush()
	}
	if s.RowsFailed > 0 {
		fmt.Fprintf(w, "\nfailed rows: %d; the first %d:\n", s.RowsFailed, len(d.FailedRows))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  KEY\tCOLUMN\tSQLSTATE\tERROR")
		for _, f := range d.FailedRows {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", shorten(strings.Join(f.Key, ","), 24), orDash(f.Column), orDash(f.SQLState), clip(flagWords(f.Message), 60))
		}
		tw.Flush()
	}
}

// intsText lists numbers: "1, 3, 4".
func intsText(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
