package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/jobspec"
	"github.com/backfill/backfill/progress"
)

// Exit codes: scripts depend on them.
const (
	exitDone        = 0
	exitFailure     = 1
	exitUsage       = 2
	exitFailedRows  = 3   // done, but some rows failed and are recorded
	exitUnfinished  = 4   // verify: the job is not done; what it copied so far is identical
	exitInterrupted = 130 // as a shell reports a process stopped by SIGINT
)

// usageError marks a mistake in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
	}()

	app := newApp(stdout, stderr)
	var unknown string
	app.CommandNotFound = func(_ *cli.Context, name string) { unknown = name }
	err := app.RunContext(ctx, args)
	if unknown != "" {
		err = usagef("unknown command %q: see backfill --help", unknown)
	}
	return exitCode(err, stderr)
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitDone
	}
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, backfill.ErrInvalidJob):
		fmt.Fprintf(stderr, "backfill: %s\n", flagWords(err.Error()))
		return exitUsage
	case errors.Is(err, backfill.ErrInterrupted), errors.Is(err, backfill.ErrPaused):
		return exitInterrupted
	case errors.Is(err, errFailedRows), errors.Is(err, errWouldFail), errors.Is(err, errDifferences):
		return exitFailedRows
	case errors.Is(err, errUnfinished):
		return exitUnfinished
	default:
		fmt.Fprintf(stderr, "backfill: %s\n", flagWords(err.Error()))
		return exitFailure
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "backfill",
		Usage: "copy and transform rows between PostgreSQL tables, in chunks, resumably, at a controlled rate",
		Description: "Exit codes: 0 done, 1 failure or refusal, 2 usage error, 3 done with failed rows (dry-run: rows would fail; verify: differences), " +
			"4 verify of an unfinished job: rows still to copy, 130 interrupted or paused (resumable).\n" +
			"Connection strings fall back to $BACKFILL_SOURCE / $BACKFILL_DEST and the PG* environment variables.",
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		// --replica takes a connection string each time, which may hold a
		// comma (postgres://a,b/db names two hosts)
		DisableSliceFlagSeparator: true,
		ExitErrHandler:            func(*cli.Context, error) {}, // exit codes are ours
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{err}
		},
		Commands: []*cli.Command{
			startCommand(stderr),
			resumeCommand(stderr),
			joinCommand(stderr),
			statusCommand(stdout),
			dryRunCommand(stdout, stderr),
			setCommand(stdout),
			pauseCommand(stdout),
			verifyCommand(stdout),
		},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = app.OnUsageError // a bad flag is a usage error (exit 2) in every command
	}
	return app
}

func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-format", Value: "auto", Usage: "`FORMAT` of logs on stderr: auto (console on a terminal, else json), console or json"},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "`LEVEL`: debug, info, warn or error"},
	}
}

// sourceFlags are the job's connections and name, with --config for the
// commands that take a spec file.
func sourceFlags() []cli.Flag {
	return append([]cli.Flag{&cli.StringFlag{Name: "config", Usage: "job spec `FILE` (YAML); flags given here override it"}},
		settingFlags(backfill.ScopeTarget)...)
}

// startFlags are start's flags, which dry-run shares.
func startFlags() []cli.Flag {
	flags := append(sourceFlags(), settingFlags(backfill.ScopeSpec)...)
	return append(append(flags, settingFlags(backfill.ScopeTuning)...), logFlags()...)
}

func startCommand(stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "start",
		Usage:     "start a new job (an unfinished one is refused: use resume)",
		UsageText: "backfill start --source URL --dest URL --job NAME --from TABLE --to TABLE [--key COL[,COL…]] [--chunk-size N] [--workers N] [--queue-depth N] [--rate ROWS_PER_S|auto[:MAX]] [--state-schema NAME] [--replica URL…] [--max-probe-latency D]",
		Flags:     startFlags(),
		Action: func(c *cli.Context) error {
			j, spec, err := jobFromFlags(c, backfill.ModeStart)
			if err != nil {
				return err
			}
			return annotate(runJob(c.Context, c, j, spec, stderr), spec)
		},
	}
}

func resumeCommand(stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "resume",
		Usage:     "continue a job from its checkpoint, after an interruption, a failure or a crash",
		UsageText: "backfill resume --source URL --dest URL --job NAME [--rate ROWS_PER_S|auto[:MAX]] [--workers N] [--retry-failed]",
		Flags: append(append(append(sourceFlags(), settingFlags(backfill.ScopeTuning)...), logFlags()...),
			settingFlags(backfill.ScopeResume)...),
		Action: func(c *cli.Context) error {
			j, spec, err := jobFromFlags(c, backfill.ModeResume)
			if err != nil {
				return err
			}
			return annotate(runJob(c.Context, c, j, spec, stderr), spec)
		},
	}
}

func joinCommand(stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "join",
		Usage: "add a runner to a partitioned job (--partitions), from any host: it claims partitions until none is left",
		UsageText: "backfill join --source URL --dest URL --job NAME [--workers N] [--lease-timeout DURATION]\n" +
			"   (the job's spec comes from its row, as for resume; start and resume of a partitioned job are runners too)",
		Flags: append(append(sourceFlags(), settingFlags(backfill.ScopeTuning)...), logFlags()...),
		Action: func(c *cli.Context) error {
			j, spec, err := jobFromFlags(c, backfill.ModeJoin)
			if err != nil {
				return err
			}
			return annotate(runJob(c.Context, c, j, spec, stderr), spec)
		},
	}
}

// newLogger builds the logger from --log-format and --log-level, or the
// spec file's log_format and log_level. It words the Job fields the
// library's messages name as flags. It writes to stderr, through console
// when a live progress line is drawn there (nil for none).
func newLogger(c *cli.Context, stderr io.Writer, console *progress.Console, spec *jobspec.File) (zerolog.Logger, error) {
	if spec == nil {
		spec = &jobspec.File{}
	}
	levelName, format := flagOrFile(c, "log-level", spec.LogLevel), flagOrFile(c, "log-format", spec.LogFormat)
	level, err := zerolog.ParseLevel(levelName)
	if err != nil || levelName == "" {
		return zerolog.Nop(), usagef("--log-level %q: use debug, info, warn or error", levelName)
	}
	out := flagWriter{stderr}
	if console != nil {
		out = flagWriter{console}
	}
	var w io.Writer = out
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly, NoColor: !isTerminal(stderr)}
	case "auto":
		if isTerminal(stderr) {
			w = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
		}
	default:
		return zerolog.Nop(), usagef("--log-format %q: use auto, console or json", format)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// flagOrFile is a command-line setting of its own (not the Job's): its
// flag when given, else the spec file's value, else the flag's default.
func flagOrFile(c *cli.Context, flag, fromFile string) string {
	if c.IsSet(flag) || fromFile == "" {
		return c.String(flag)
	}
	return fromFile
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func runJob(ctx context.Context, c *cli.Context, j backfill.Job, spec *jobspec.File, stderr io.Writer) error {
	// on a terminal, the progress line is drawn on stderr, below the logs
	var console *progress.Console
	if isTerminal(stderr) {
		console = progress.NewConsole(stderr, true)
	}
	log, err := newLogger(c, stderr, console, spec)
	if err != nil {
		return err
	}
	j.Logger, j.Console = log, console
	rep, err := backfill.Run(ctx, j)
	schema := j.Target().StateSchema
	switch {
	case errors.Is(err, backfill.ErrInterrupted), errors.Is(err, backfill.ErrPaused):
		hint := fmt.Sprintf("backfill resume --job %s", j.Name)
		if schema != backfill.DefaultStateSchema {
			hint += " --state-schema " + schema
		}
		log.Warn().Int64("rows_done", rep.Totals.RowsRead).Int64("chunks_done", rep.Totals.ChunksDone).
			Msgf("%s; every committed chunk is kept. Continue with: %s (same --source and --dest)", rep.State, hint)
		return err
	case errors.Is(err, backfill.ErrJobExists):
		return fmt.Errorf("%w: continue it with `backfill resume --job %s`", err, j.Name)
	case errors.Is(err, backfill.ErrJobNotFound) && j.Mode != backfill.ModeStart:
		return fmt.Errorf("%w: start it with `backfill start`", err)
	case err != nil:
		return err
	case rep.AlreadyDone:
		log.Info().Int64("rows_inserted", rep.Totals.RowsInserted).Int64("rows_failed", rep.Totals.RowsFailed).
			Msg("job is already done; nothing to do")
	}
	if n := rep.Totals.RowsFailed; n > 0 {
		log.Warn().Int64("rows_failed", n).Msgf("job done, but %d rows failed. Inspect them with: "+
			"SELECT key, sqlstate, column_name, message, source_row FROM %s.failed_rows WHERE job = '%s'; "+
			"fix the cause, then run: backfill resume --job %s --retry-failed", n, pgx.Identifier{schema}.Sanitize(), strings.ReplaceAll(j.Name, "'", "''"), j.Name)
		return errFailedRows
	}
	return nil
}

// errFailedRows makes the exit code 3: the job finished, with failed rows.
var errFailedRows = errors.New("finished with failed rows")

// controlFlags name a job for the operator commands.
func controlFlags() []cli.Flag {
	return []cli.Flag{
		flagOf(setting("DestURL"), "destination database `URL` holding the state schema (default: $BACKFILL_DEST, then $BACKFILL_SOURCE)"),
		flagOf(setting("Name"), "the job's `NAME`"),
		flagOf(setting("StateSchema"), "`SCHEMA` holding job state"),
	}
}

// targetFromFlags is the job an operator command names: its flags, then
// the environment, as for a job.
func targetFromFlags(c *cli.Context) backfill.Target {
	return backfill.Target{
		Job: givenString(c, "Name", nil), StateSchema: givenString(c, "StateSchema", nil),
		SourceURL: givenString(c, "SourceURL", nil), DestURL: givenString(c, "DestURL", nil),
	}
}

// namedTarget is targetFromFlags for a command that acts on one job.
func namedTarget(c *cli.Context) (backfill.Target, error) {
	t := targetFromFlags(c)
	if t.Job == "" {
		return t, usagef("Job.Name is required")
	}
	return t, nil
}

func setCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "set",
		Usage:     "re-tune a job without restarting it: a running job applies the new rate or worker count, or the throttle by hand, within seconds",
		UsageText: "backfill set --dest URL --job NAME [--rate ROWS_PER_S] [--workers N] [--throttle on|off]",
		Flags: append(controlFlags(),
			&cli.Float64Flag{Name: "rate", Usage: "new cap in `ROWS_PER_S`; 0 for none (it ends a --rate auto)"},
			&cli.IntFlag{Name: "workers", Usage: "new number of workers (`N`); workers retire after the chunk they hold"},
			&cli.StringFlag{Name: "throttle", Usage: "`on|off`: hold the job's commits until off, from any terminal (throttled by hand)"}),
		Action: func(c *cli.Context) error {
			t, err := namedTarget(c)
			if err != nil {
				return err
			}
			var tuning backfill.Tuning
			var set []string
			if c.IsSet("rate") {
				rate := c.Float64("rate")
				tuning.Rate = &rate
				set = append(set, "rate set to "+rateText(rate))
			}
			if c.IsSet("workers") {
				workers := c.Int("workers")
				tuning.Workers = &workers
				set = append(set, fmt.Sprintf("workers set to %d", workers))
			}
			if c.IsSet("throttle") {
				on, err := onOff(c.String("throttle"))
				if err != nil {
					return err
				}
				tuning.Throttle = &on
				set = append(set, "throttle by hand "+c.String("throttle"))
			}
			if len(set) == 0 {
				return usagef("--rate, --workers or --throttle is required: the new cap in rows per second (0 for none), the new number of workers, on or off")
			}
			state, err := backfill.Set(c.Context, t, tuning)
			if err != nil {
				return err
			}
			when := "at its next resume"
			if state == "running" {
				when = "within seconds"
			}
			fmt.Fprintf(stdout, "job %s (%s): %s; it applies %s\n", t.Job, state, strings.Join(set, ", "), when)
			return nil
		},
	}
}

// onOff reads --throttle's on or off.
func onOff(v string) (bool, error) {
	if v != "on" && v != "off" {
		return false, usagef("--throttle %q: on or off", v)
	}
	return v == "on", nil
}

func rateText(r float64) string {
	if r == 0 {
		return "no cap"
	}
	return fmt.Sprintf("%.0f rows/s", r)
}

func pauseCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "pause",
		Usage:     "ask a running job, from any terminal, to finish its in-flight chunks and stop as paused (resume continues it)",
		UsageText: "backfill pause --dest URL --job NAME",
		Flags:     controlFlags(),
		Action: func(c *cli.Context) error {
			t, err := namedTarget(c)
			if err != nil {
				return err
			}
			if err := backfill.Pause(c.Context, t); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "job %s: pause requested; its runner stops within a few seconds (watch `backfill status --job %s`), then `backfill resume` continues it\n", t.Job, t.Job)
			return nil
		},
	}
}

// errDifferences makes the exit code 3: verify found ranges that differ.
var errDifferences = errors.New("destination differs from source")

// errUnfinished makes the exit code 4: verify of a job that is not done
// found rows still to copy, and nothing else wrong. It is not 0, so that
// `verify && drop the old table` cannot pass half a copy; nor 3, so that a
// script can tell a copy under way from a wrong one.
var errUnfinished = errors.New("the job is unfinished: rows still to copy")

func verifyCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "compare a copy job's destination with its source over the job's whole key range (row counts and md5 digests computed by each database)",
		UsageText: "backfill verify --source URL --dest URL --job NAME [--chunks-per-range N] [--json]\n" +
			"Exit codes: 0 identical, 3 ranges differ (or a done job left rows uncopied), 4 the job is unfinished: rows still to copy, 1 cannot compare.",
		Flags: append(settingFlags(backfill.ScopeTarget), // no --config: verify reads the job's stored spec
			&cli.IntFlag{Name: "chunks-per-range", Value: backfill.DefaultVerifyChunks, Usage: "the job's chunks (`N`) one comparison covers"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"}),
		Action: func(c *cli.Context) error {
			t, err := namedTarget(c)
			if err != nil {
				return err
			}
			rep, err := backfill.Verify(c.Context, t, backfill.VerifyOptions{ChunksPerRange: c.Int("chunks-per-range")})
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printVerify(stdout, rep)
			}
			switch rep.Result {
			case backfill.VerifyDiffers:
				return errDifferences
			case backfill.VerifyUnfinished:
				return errUnfinished
			}
			return nil
		},
	}
}

func printVerify(w io.Writer, r backfill.VerifyReport) {
	fmt.Fprintf(w, "verify of job %s (%s), keys up to %s: %s compared, %d rows in the source, %d in the destination, columns %s\n",
		r.Job, r.State, keyText(r.End), plural(r.Ranges, "committed key range"), r.RowsSource, r.RowsDest, strings.Join(r.Columns, ", "))
	if r.MismatchedRanges > 0 {
		verb := "differ"
		if r.MismatchedRanges == 1 {
			verb = "differs"
		}
		fmt.Fprintf(w, "%s %s", plural(r.MismatchedRanges, "committed range"), verb)
		if r.FailedRows > 0 {
			fmt.Fprintf(w, " (the job has %d failed rows, which explain the ranges they fall in)", r.FailedRows)
		}
		fmt.Fprintln(w, ":")
		printRanges(w, r.Mismatches, r.MismatchedRanges)
	}
	if r.UncoveredRanges > 0 {
		if r.State == backfill.StateDone {
			fmt.Fprintf(w, "%d source rows were never copied, yet the job is done: no committed chunk covers %s:\n",
				r.RowsNotCopied, plural(r.UncoveredRanges, "key range"))
		} else {
			fmt.Fprintf(w, "not yet copied: %d source rows, in %s that no committed chunk covers yet:\n",
				r.RowsNotCopied, plural(r.UncoveredRanges, "key range"))
		}
		printRanges(w, r.Uncovered, r.UncoveredRanges)
	}
	switch r.Result {
	case backfill.VerifyIdentical:
		fmt.Fprintln(w, "identical: every row of the job's range is copied, with the same values on both sides")
	case backfill.VerifyUnfinished:
		copied := "none is copied yet"
		if r.Ranges > 0 {
			copied = "what is copied so far is identical"
		}
		fmt.Fprintf(w, "unfinished: the job is %s and %d rows are still to copy; %s. Resume the job, then verify again\n",
			r.State, r.RowsNotCopied, copied)
	case backfill.VerifyDiffers:
		fmt.Fprintln(w, "differs: the destination does not equal the source")
	}
}

// plural says n of a thing: "1 key range", "3 key ranges".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// printRanges lists ranges, of total in all.
func printRanges(w io.Writer, ranges []backfill.VerifyRange, total int) {
	for _, m := range ranges {
		fmt.Fprintf(w, "  keys after %s up to %s: %d rows in the source, %d in the destination\n",
			keyText(m.After), keyText(m.Last), m.RowsSource, m.RowsDest)
	}
	if total > len(ranges) {
		fmt.Fprintf(w, "  and %d more ranges (not listed)\n", total-len(ranges))
	}
}

// keyText shows a key as the checkpoint stores it; nil is the start of the
// table.
func keyText(key []string) string {
	switch {
	case key == nil:
		return "the start"
	case len(key) == 0:
		return "none (the source was empty)"
	default:
		return strings.Join(key, ",")
	}
}
