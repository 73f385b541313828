package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/backfill/backfill"
)

// errWouldFail makes the exit code 3: rows of the sample would fail.
var errWouldFail = errors.New("rows would fail")

func dryRunCommand(stdout, stderr io.Writer) *cli.Command {
	flags := append(startFlags(),
		&cli.IntFlag{Name: "sample-chunks", Value: backfill.DefaultSampleChunks, Usage: "chunks (`N`) to push through the pipeline; 0 for the whole table"},
		&cli.BoolFlag{Name: "exact-count", Usage: "count the source's rows (a full scan) instead of trusting the planner"},
		&cli.BoolFlag{Name: "json", Usage: "print the report as JSON, for CI gates"},
	)
	return &cli.Command{
		Name:  "dry-run",
		Usage: "rehearse a job on a staging database: every check, estimates, and a sample written in a rolled-back transaction",
		UsageText: "backfill dry-run [start's flags] [--sample-chunks N] [--exact-count] [--json]\n" +
			"Exit codes: 0 the sample would run cleanly, 3 rows would fail, 1 the job cannot run.",
		Flags: flags,
		Action: func(c *cli.Context) error {
			j, spec, err := jobFromFlags(c, backfill.ModeStart)
			if err != nil {
				return err
			}
			log, err := newLogger(c, stderr, nil, spec)
			if err != nil {
				return err
			}
			j.Logger = log
			sample := c.Int("sample-chunks")
			if !c.IsSet("sample-chunks") && spec != nil && spec.SampleChunks != nil {
				sample = *spec.SampleChunks
			}
			if sample < 0 {
				return usagef("--sample-chunks %d: 0 for the whole table, or a positive number", sample)
			}
			rep, runErr := backfill.DryRun(c.Context, j, backfill.DryRunOptions{SampleChunks: sample, ExactCount: c.Bool("exact-count")})
			runErr = annotate(runErr, spec)
			for i, p := range rep.Problems {
				rep.Problems[i] = flagWords(annotate(errors.New(p), spec).Error())
			}
			for i, n := range rep.Notes {
				rep.Notes[i] = flagWords(n)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if runErr == nil || len(rep.Problems) > 0 {
				printDryRun(stdout, j, rep)
			}
			switch {
			case runErr != nil:
				return runErr
			case rep.Sample.WouldFail > 0:
				return errWouldFail
			}
			return nil
		},
	}
}

func printDryRun(w io.Writer, j backfill.Job, r backfill.DryRunReport) {
	fmt.Fprintf(w, "dry-run of job %s — nothing was written\n\n", r.Job)
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "The job cannot run (%d problems):\n", len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  - %s\n", strings.ReplaceAll(p, "\n", "\n    "))
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "checks\tall passed\n")
	exact := ""
	if r.Source.RowsExact != nil {
		exact = fmt.Sprintf(", %d counted", *r.Source.RowsExact)
	}
	fmt.Fprintf(tw, "source\t%s: ~%d rows (planner)%s, %s\n", r.Source.Table, r.Source.RowsEstimated, exact, bytes(r.Source.SizeBytes))
	fmt.Fprintf(tw, "destination\t%s: ~%d rows, %s\n", r.Dest.Table, max(r.Dest.RowsEstimated, 0), bytes(r.Dest.SizeBytes))
	scope := fmt.Sprintf("%d chunks", r.Sample.Chunks)
	if r.Sample.WholeTable {
		scope += " (the whole table)"
	}
	fmt.Fprintf(tw, "sample\t%s, %d rows read in %.2f s, rate cap off\n", scope, r.Sample.RowsRead, r.Sample.Seconds)
	fmt.Fprintf(tw, "\twould insert %d · would skip %d (already there) · would fail %d · filtered %d\n",
		r.Sample.WouldInsert, r.Sample.WouldSkip, r.Sample.WouldFail, r.Sample.Filtered)
	fmt.Fprintf(tw, "estimate\t%s\n", estimateLine(j, r))
	fmt.Fprintf(tw, "write path\t%s\n", r.SQL.WritePath)
	for _, sig := range r.Throttle {
		fmt.Fprintf(tw, "throttle\t%s\n", signalLine(sig))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	tw.Flush()
	if len(r.Failures) > 0 {
		fmt.Fprintf(w, "\nRows that would fail (first %d):\n", len(r.Failures))
		for _, f := range r.Failures {
			state := f.SQLState
			if state == "" {
				state = "transform"
			}
			col := ""
			if f.Column != "" {
				col = " column " + f.Column
			}
			fmt.Fprintf(w, "  key %v: %s%s: %s\n", f.Key, state, col, f.Message)
		}
	}
	if len(r.Preview.Rows) > 0 {
		fmt.Fprintf(w, "\nFirst %d rows as they would be written:\n", len(r.Preview.Rows))
		pw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(pw, "  %s\n", strings.Join(r.Preview.Columns, "\t"))
		for _, row := range r.Preview.Rows {
			cells := make([]string, len(row))
			for i, v := range row {
				cells[i] = cell(v)
			}
			fmt.Fprintf(pw, "  %s\n", strings.Join(cells, "\t"))
		}
		pw.Flush()
	}
	fmt.Fprintf(w, "\nStatements the run would use:\n")
	if r.SQL.ChunkEnd != "" {
		fmt.Fprintf(w, "  chunk end:  %s\n", r.SQL.ChunkEnd)
	}
	oneLine := func(q string) string { return strings.Join(strings.Fields(q), " ") }
	fmt.Fprintf(w, "  first page: %s\n  next pages: %s\n", r.SQL.FirstPage, r.SQL.NextPage)
	if r.SQL.CopyDirect != "" {
		fmt.Fprintf(w, "  a chunk whose key range is empty: %s\n", oneLine(r.SQL.CopyDirect))
	}
	fmt.Fprintf(w, "  a chunk through the stage: %s\n    then: %s\n", oneLine(r.SQL.CopyToStage), oneLine(r.SQL.Insert))
}

// signalLine says what a throttle signal read, and what the run would do
// about it.
func signalLine(s backfill.DryRunSignal) string {
	line := s.Reading
	switch {
	case s.Error != "":
		line = fmt.Sprintf("%s cannot be read, so the run would wait: %s", s.Signal, s.Error)
	case s.Critical:
		line += ": the run would pause"
	case s.Throttled:
		line += ": the run would wait"
	}
	if s.Note != "" {
		line += " (" + s.Note + ")"
	}
	return flagWords(line)
}

func estimateLine(j backfill.Job, r backfill.DryRunReport) string {
	var parts []string
	if r.Estimate.SecondsAtRate != nil && r.Estimate.Rate > 0 {
		parts = append(parts, fmt.Sprintf("at --rate %.0f the job takes ~%s", r.Estimate.Rate, human(*r.Estimate.SecondsAtRate)))
	}
	if r.Sample.RowsPerSec > 0 {
		un := ""
		if r.Estimate.SecondsUnthrottled != nil {
			un = fmt.Sprintf(" (~%s for %d rows)", human(*r.Estimate.SecondsUnthrottled), r.Estimate.Rows)
		}
		parts = append(parts, fmt.Sprintf("unthrottled this database pair sustained ~%.0f rows/s%s", r.Sample.RowsPerSec, un))
	}
	if len(parts) == 0 {
		return "no rows to copy"
	}
	return strings.Join(parts, "; ")
}

// human renders seconds as "27 h 46 min", "3 min 20 s" or "4.2 s".
func human(seconds float64) string {
	if math.IsInf(seconds, 0) || math.IsNaN(seconds) {
		return "unknown"
	}
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d >= time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
}

func bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func cell(v any) string {
	if v == nil {
		return "NULL"
	}
	s := fmt.Sprint(v)
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}
