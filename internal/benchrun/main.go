package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Groups of measurements, in the order they run.
const (
	groupMethods = "methods"
	groupStage   = "stage"
	groupChunks  = "chunks"
	groupResume  = "resume"
	groupMemory  = "memory"
	groupRate    = "rate"
	groupProfile = "profile"
	groupImpact  = "impact"
	groupRunners = "runners"
)

var allGroups = []string{groupMethods, groupStage, groupChunks, groupResume, groupRunners, groupMemory, groupRate, groupProfile, groupImpact}

// defaultGroups fit in about ten minutes on the 2-core development
// machine; memory (10 M rows), rate (two minutes of waiting) and profile
// are asked for by name, and so is impact (make bench-impact).
var defaultGroups = []string{groupMethods, groupStage, groupChunks, groupResume, groupRunners}

// Methods of the methods group, as -methods names them.
const (
	methodSingle        = "single"
	methodPLpgSQL       = "plpgsql"
	methodPsql          = "psql"
	methodPgcopydb      = "pgcopydb"
	methodBackfill      = "backfill"
	methodBackfillCross = "backfill-cross"
)

var allMethods = []string{methodSingle, methodPLpgSQL, methodPsql, methodPgcopydb, methodBackfill, methodBackfillCross}

const (
	exitInterrupted = 130
	cleanupTimeout  = 2 * time.Minute
)

// config is the command line.
type config struct {
	rows         int64
	rounds       int
	groups       []string
	methods      []string
	chunkSizes   []string // numbers, or "default" for no --chunk-size
	memorySizes  []int64
	resumeChunks int64
	rates        []float64
	rateSeconds  int
	backfill     string // the built command
	pgcopydb     string // "" when not installed
	perf         string // "" when not installed: the profile group then reads the server by pg_stat_statements alone
	goTool       string
	profileDir   string
	timeout      time.Duration
	// the impact group's workload and the backfill flag sets beside it
	impactScale, impactTPS, impactClients, impactSeconds int
	impactRuns                                           []string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("benchrun", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: benchrun -backfill PATH [flags]\n\n"+
			"Measures issue 9's goals on a throwaway local PostgreSQL server and prints Markdown on stdout\n"+
			"(progress on stderr). Groups: %s (default %s).\n\n", strings.Join(allGroups, ", "), strings.Join(defaultGroups, ","))
		fs.PrintDefaults()
	}
	fs.Int64Var(&c.rows, "rows", 1_000_000, "rows of the benchmark table")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds of each group's alternation (A B … A B …); medians are over rounds")
	groups := fs.String("groups", strings.Join(defaultGroups, ","), "comma-separated groups to run, or all")
	methods := fs.String("methods", strings.Join(allMethods, ","), "comma-separated methods of the methods group")
	chunks := fs.String("chunk-sizes", "500,1000,5000,20000,default", "chunk sizes of the chunks group; default runs without --chunk-size")
	memory := fs.String("memory-sizes", "2000000,10000000", "table sizes of the memory group, ascending")
	fs.Int64Var(&c.resumeChunks, "resume-chunks", 100_000, "committed chunks the resume group kills the first run after")
	rates := fs.String("rates", "1000,20000", "caps (rows/s) of the rate group")
	fs.IntVar(&c.rateSeconds, "rate-seconds", 60, "how long each capped run of the rate group lasts")
	fs.StringVar(&c.backfill, "backfill", "", "the backfill command to measure (make bench builds bin/backfill)")
	fs.StringVar(&c.goTool, "go", "go", "the go command, for the profile group")
	fs.StringVar(&c.profileDir, "profile-dir", "bin/bench-profile", "where the profile group writes its test binary and profiles")
	fs.DurationVar(&c.timeout, "timeout", 20*time.Minute, "bound on any one child process or statement")
	fs.IntVar(&c.impactScale, "impact-scale", 20, "pgbench scale of the impact group (100,000 accounts each)")
	fs.IntVar(&c.impactTPS, "impact-tps", 400, "transactions per second of the impact group's workload (pgbench -R)")
	fs.IntVar(&c.impactClients, "impact-clients", 8, "clients of the impact group's workload (pgbench -c)")
	fs.IntVar(&c.impactSeconds, "impact-seconds", 40, "how long each run of the impact group's workload lasts")
	impactRuns := fs.String("impact-runs", "none;"+impactOneBackend+";--rate 1000;--rate 0;--rate auto --max-probe-latency 5ms",
		"semicolon-separated backfill flag sets the impact group runs beside the workload; none runs the workload alone, "+
			impactOneBackend+" one psql COPY of the source table into nothing instead of backfill")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if c.groups, err = pickList("-groups", *groups, allGroups); err != nil {
		return c, err
	}
	if c.methods, err = pickList("-methods", *methods, allMethods); err != nil {
		return c, err
	}
	for _, r := range strings.Split(*impactRuns, ";") {
		if r = strings.TrimSpace(r); r != "" {
			c.impactRuns = append(c.impactRuns, r)
		}
	}
	c.chunkSizes = splitList(*chunks)
	for _, s := range c.chunkSizes {
		if n, err := strconv.Atoi(s); s != "default" && (err != nil || n < 1) {
			return c, fmt.Errorf("-chunk-sizes: %q is neither a positive number nor default", s)
		}
	}
	if c.memorySizes, err = parseInts("-memory-sizes", *memory); err != nil {
		return c, err
	}
	if !slices.IsSorted(c.memorySizes) {
		return c, fmt.Errorf("-memory-sizes %s: give them ascending (each size extends the table of the one before)", *memory)
	}
	for _, s := range splitList(*rates) {
		r, err := strconv.ParseFloat(s, 64)
		if err != nil || r <= 0 {
			return c, fmt.Errorf("-rates: %q is not a positive rate", s)
		}
		c.rates = append(c.rates, r)
	}
	switch {
	case c.backfill == "":
		return c, errors.New("-backfill PATH is required (make bench builds bin/backfill and passes it)")
	case c.rows < 1000:
		return c, fmt.Errorf("-rows %d: at least 1000", c.rows)
	case c.rounds < 1:
		return c, fmt.Errorf("-rounds %d: at least 1", c.rounds)
	case c.rateSeconds < 1:
		return c, fmt.Errorf("-rate-seconds %d: at least 1", c.rateSeconds)
	case c.impactSeconds <= int(impactWarmup/time.Second):
		return c, fmt.Errorf("-impact-seconds %d: more than the %s warm-up", c.impactSeconds, impactWarmup)
	case c.impactScale < 1 || c.impactTPS < 1 || c.impactClients < 1:
		return c, errors.New("-impact-scale, -impact-tps and -impact-clients: at least 1")
	case c.resumeChunks < 1:
		return c, fmt.Errorf("-resume-chunks %d: at least 1", c.resumeChunks)
	}
	if c.backfill, err = exec.LookPath(c.backfill); err != nil {
		return c, fmt.Errorf("-backfill: %w", err)
	}
	// Absent pgcopydb is a row of the report, not an error.
	if p, err := exec.LookPath("pgcopydb"); err == nil {
		c.pgcopydb = p
	}
	if p, err := exec.LookPath("perf"); err == nil {
		c.perf = p
	}
	return c, nil
}

func (c config) has(group string) bool { return slices.Contains(c.groups, group) }

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// pickList reads a list of names out of known, "all" meaning every one,
// and returns them in known's order.
func pickList(flagName, s string, known []string) ([]string, error) {
	names := splitList(s)
	if slices.Equal(names, []string{"all"}) {
		return known, nil
	}
	for _, n := range names {
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("%s: unknown %q; known: %s, all", flagName, n, strings.Join(known, ", "))
		}
	}
	var out []string
	for _, k := range known {
		if slices.Contains(names, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

func parseInts(flagName, s string) ([]int64, error) {
	var out []int64
	for _, p := range splitList(s) {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: %q is not a positive number", flagName, p)
		}
		out = append(out, n)
	}
	return out, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchrun: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	// A reader that went away (| head) must not kill us by SIGPIPE before
	// the cluster is stopped: writes fail instead, and the run goes on to
	// its cleanup.
	signal.Ignore(syscall.SIGPIPE)
	err = run(ctx, cfg, os.Stdout)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case interrupted:
		fmt.Fprintf(os.Stderr, "benchrun: interrupted; the cluster is stopped and removed\n")
		os.Exit(exitInterrupted)
	case err != nil:
		fmt.Fprintf(os.Stderr, "benchrun FAILED: %v\n", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
