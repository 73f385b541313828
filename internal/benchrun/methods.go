package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// keysetProcedure is what a careful DBA writes without a tool: a keyset
// loop over the source committing every batch, so no transaction holds
// the whole table. One statement per batch reads the page once, writes it
// and returns where the next page starts.
const keysetProcedure = `CREATE PROCEDURE public.keyset_copy(batch integer) LANGUAGE plpgsql AS $$
DECLARE
	cursor_id bigint := -9223372036854775808;
	last_id   bigint;
BEGIN
	LOOP
		WITH page AS (
			SELECT * FROM public.s WHERE id > cursor_id ORDER BY id LIMIT batch
		), ins AS (
			INSERT INTO public.d SELECT * FROM page ON CONFLICT DO NOTHING
		)
		SELECT max(id) INTO last_id FROM page;
		EXIT WHEN last_id IS NULL;
		cursor_id := last_id;
		COMMIT;
	END LOOP;
END $$`

// singleStatement is the reference every ratio is taken against.
const singleStatement = "INSERT INTO public.d SELECT * FROM public.s ON CONFLICT DO NOTHING"

// copyMethod is one way of moving the source table into a destination.
type copyMethod struct {
	key   string
	label string
	from  table // zero: the benchmark's source table
	dest  table
	// prefill, when positive, has the destination hold every prefill-th
	// source row beforehand.
	prefill int
	run     func(ctx context.Context, b *bench, m copyMethod) (usage, error)
}

func (m copyMethod) source() table {
	if m.from == (table{}) {
		return srcTable
	}
	return m.from
}

// sample is one measured run.
type sample struct {
	usage
	rows int64 // rows in the source the run copied
}

// measure prepares the destination, runs m once and checks that the
// destination then holds every source row. Preparing (TRUNCATE, dropping
// the state schema, CHECKPOINT) is outside the timing, and so is the
// check; the server's CPU is read once the last run's sessions are gone.
func (b *bench) measure(ctx context.Context, m copyMethod, rows int64) (sample, error) {
	var prefill *table
	if m.prefill > 0 {
		from := m.source()
		prefill = &from
	}
	if err := b.reset(ctx, m.dest, prefill, m.prefill); err != nil {
		return sample{}, err
	}
	if err := b.quiesce(ctx); err != nil {
		return sample{}, err
	}
	cpu0 := b.serverCPU()
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	began := time.Now()
	u, err := m.run(ctx, b, m)
	u.wall = time.Since(began)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %w", m.label, err)
	}
	if err := b.quiesce(ctx); err != nil {
		return sample{}, err
	}
	u.server = -1
	if cpu1 := b.serverCPU(); cpu0 >= 0 && cpu1 >= 0 {
		u.server = cpu1 - cpu0
	}
	got, err := b.count(ctx, m.dest)
	if err != nil {
		return sample{}, err
	}
	if got != rows {
		return sample{}, fmt.Errorf("%s: the destination holds %d rows after the run, want %d", m.label, got, rows)
	}
	progress("  %-40s %7.2f s", m.label, u.wall.Seconds())
	return sample{usage: u, rows: rows}, nil
}

// sqlMethod runs one statement on this driver's own connection.
func sqlMethod(query string) func(context.Context, *bench, copyMethod) (usage, error) {
	return func(ctx context.Context, b *bench, m copyMethod) (usage, error) {
		if _, err := b.conns[m.dest.db].Exec(ctx, query); err != nil {
			return usage{}, fmt.Errorf("%s: %w", query, err)
		}
		return usage{}, nil
	}
}

// psql is a psql child on db that reads no psqlrc, stops at the first
// error and prints no more than its statements' output.
func (b *bench) psql(ctx context.Context, db string, args ...string) *child {
	return newChild(ctx, filepath.Join(b.pgBin, "psql"), append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", b.url(db)}, args...)...)
}

// psqlPipe is `psql -c '\copy s to pstdout' | psql -c '\copy d from pstdin'`,
// without a shell: two children joined by a pipe.
func psqlPipe(ctx context.Context, b *bench, m copyMethod) (usage, error) {
	out := b.psql(ctx, m.source().db, "-c", `\copy `+m.source().qualified()+` to pstdout`)
	in := b.psql(ctx, m.dest.db, "-c", `\copy `+m.dest.qualified()+` from pstdin`)
	r, w, err := os.Pipe()
	if err != nil {
		return usage{}, fmt.Errorf("pipe: %w", err)
	}
	out.cmd.Stdout, in.cmd.Stdin = w, r
	if err := out.cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return usage{}, out.failed(err)
	}
	if err := in.cmd.Start(); err != nil {
		out.kill()
		_ = out.cmd.Wait()
		r.Close()
		w.Close()
		return usage{}, in.failed(err)
	}
	// The children hold their ends now; ours would keep the reader from
	// ever seeing the end of the data.
	r.Close()
	w.Close()
	errOut := out.cmd.Wait()
	if errOut != nil {
		in.kill()
	}
	errIn := in.cmd.Wait()
	if errOut != nil {
		return usage{}, out.failed(errOut)
	}
	if errIn != nil {
		return usage{}, in.failed(errIn)
	}
	cpuOut, rssOut := processUsage(out.cmd.ProcessState)
	cpuIn, rssIn := processUsage(in.cmd.ProcessState)
	return usage{cpu: cpuOut + cpuIn, maxRSS: max(rssOut, rssIn)}, nil
}

// pgcopydbFilters limits pgcopydb to the benchmark's source table.
const pgcopydbFilters = "[include-only-table]\npublic.s\n"

// pgcopydb runs copy table-data as its users do. Version 0.10 follows each
// table's COPY with a VACUUM ANALYZE of the target table, which it has no
// option to skip: its time includes that.
func pgcopydb(ctx context.Context, b *bench, m copyMethod) (usage, error) {
	dir, err := os.MkdirTemp(b.tmp, "pgcopydb-")
	if err != nil {
		return usage{}, fmt.Errorf("pgcopydb work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	filters := filepath.Join(dir, "filters.ini")
	if err := os.WriteFile(filters, []byte(pgcopydbFilters), 0o600); err != nil {
		return usage{}, fmt.Errorf("write pgcopydb filters: %w", err)
	}
	return runChild(newChild(ctx, b.cfg.pgcopydb, "copy", "table-data",
		"--source", b.url(m.source().db), "--target", b.url(m.dest.db),
		"--table-jobs", "2", "--dir", filepath.Join(dir, "work"), "--filters", filters))
}

// backfillStart runs `backfill start --rate 0` for a new job from the
// source table into m.dest, with extra flags.
func backfillStart(extra ...string) func(context.Context, *bench, copyMethod) (usage, error) {
	return func(ctx context.Context, b *bench, m copyMethod) (usage, error) {
		return runChild(newChild(ctx, b.cfg.backfill, b.startArgs(b.nextJob("bench"), m.source(), m.dest, "0", extra...)...))
	}
}

// startArgs are the flags of a start from one table into another at a
// rate ("0": no cap); logs at warn, so a run's output is its complaints.
func (b *bench) startArgs(job string, from, to table, rate string, extra ...string) []string {
	args := []string{"start", "--source", b.url(from.db), "--dest", b.url(to.db), "--job", job,
		"--from", from.qualified(), "--to", to.qualified(), "--rate", rate}
	return append(append(args, quietLogs...), extra...)
}

// quietLogs keep a run's output to its complaints.
var quietLogs = []string{"--log-format", "json", "--log-level", "warn", "--progress-interval", "1h"}

// runChild runs c to a successful exit and reports its CPU and peak RSS.
func runChild(c *child) (usage, error) {
	if err := c.cmd.Run(); err != nil {
		return usage{}, c.failed(err)
	}
	cpu, rss := processUsage(c.cmd.ProcessState)
	return usage{cpu: cpu, maxRSS: rss}, nil
}

// methods are the methods group's rows, in -methods order.
func (b *bench) methods() []copyMethod {
	all := []copyMethod{
		{key: methodSingle, label: "single INSERT … SELECT … ON CONFLICT DO NOTHING", dest: sameDest,
			run: sqlMethod(singleStatement)},
		{key: methodPLpgSQL, label: "PL/pgSQL keyset loop, COMMIT every 1,000", dest: sameDest,
			run: sqlMethod("CALL public.keyset_copy(1000)")},
		{key: methodPsql, label: `psql \copy to pstdout | psql \copy from pstdin`, dest: sameDest, run: psqlPipe},
		{key: methodPgcopydb, label: "pgcopydb copy table-data --table-jobs 2 (cross-db; with its VACUUM ANALYZE)", dest: crossDest, run: pgcopydb},
		{key: methodBackfill, label: "backfill start --rate 0", dest: sameDest, run: backfillStart()},
		{key: methodBackfillCross, label: "backfill start --rate 0 (cross-db)", dest: crossDest, run: backfillStart()},
	}
	var out []copyMethod
	for _, m := range all {
		if slices.Contains(b.cfg.methods, m.key) {
			out = append(out, m)
		}
	}
	return out
}

// alternate runs each method once per round, in order, round after round
// (A B C A B C …), so that a slow minute of a loaded machine falls on
// every method rather than on one.
func (b *bench) alternate(ctx context.Context, ms []copyMethod, rows int64) (map[string][]sample, error) {
	got := map[string][]sample{}
	for round := 1; round <= b.cfg.rounds; round++ {
		progress(" round %d of %d", round, b.cfg.rounds)
		for _, m := range ms {
			s, err := b.measure(ctx, m, rows)
			if err != nil {
				return nil, err
			}
			got[m.key] = append(got[m.key], s)
		}
	}
	return got, nil
}

func (b *bench) methodsGroup(ctx context.Context) error {
	ms := b.methods()
	var run []copyMethod
	for _, m := range ms {
		if m.key == methodPgcopydb && b.cfg.pgcopydb == "" {
			continue
		}
		run = append(run, m)
	}
	got, err := b.alternate(ctx, run, b.cfg.rows)
	if err != nil {
		return err
	}
	b.section(fmt.Sprintf("Copy methods: %s rows, %s", thousands(b.cfg.rows), b.roundsText()),
		"Same database unless marked cross-db (two databases of the same server). × single is the single "+
			"statement's median time over the method's: above 1 is faster.")
	single := got[methodSingle]
	t := newResultTable()
	for _, m := range ms {
		if m.key == methodPgcopydb && b.cfg.pgcopydb == "" {
			t.note(m.label, "pgcopydb not installed: apt-get install pgcopydb")
			continue
		}
		t.add(m.label, got[m.key], single, m.key == methodBackfill || m.key == methodBackfillCross || m.key == methodPsql || m.key == methodPgcopydb)
	}
	t.print(b.out)
	b.methodGoals(got)
	return nil
}

// Destinations that hold rows before the copy: sparse, every 100th source
// row, which puts rows in every chunk's range and leaves the direct COPY to
// go around them; dense, every other row, which sends every chunk through
// the stage.
const (
	sparsePrefill = 100
	densePrefill  = 2
)

func (b *bench) stageGroup(ctx context.Context) error {
	ms := []copyMethod{
		{key: methodSingle, label: "single INSERT … SELECT … ON CONFLICT DO NOTHING", dest: sameDest, prefill: sparsePrefill,
			run: sqlMethod(singleStatement)},
		{key: methodBackfill, label: "backfill start --rate 0", dest: sameDest, prefill: sparsePrefill, run: backfillStart()},
		{key: methodSingle + "-dense", label: "single INSERT … SELECT … ON CONFLICT DO NOTHING", dest: sameDest, prefill: densePrefill,
			run: sqlMethod(singleStatement)},
		{key: methodBackfill + "-dense", label: "backfill start --rate 0", dest: sameDest, prefill: densePrefill, run: backfillStart()},
	}
	got, err := b.alternate(ctx, ms, b.cfg.rows)
	if err != nil {
		return err
	}
	b.section(fmt.Sprintf("Rows in every chunk's range: the destination already holds every %dth row (%s rows, %s)", sparsePrefill,
		thousands(b.cfg.rows), b.roundsText()),
		"Every chunk's key range holds destination rows, fewer than half its own: the direct COPY leaves them out. "+
			"Below it, every other row: every chunk goes through the stage (COPY into a temporary table, then INSERT … ON CONFLICT DO NOTHING).")
	for _, dense := range []string{"", "-dense"} {
		single := got[methodSingle+dense]
		t := newResultTable()
		t.add(ms[0].label, single, single, false)
		t.add(ms[1].label, got[methodBackfill+dense], single, true)
		t.print(b.out)
	}
	if len(got[methodBackfill]) > 0 {
		b.ratioGoal("every chunk's range holds rows (every 100th row) vs the single statement", 0.8, got[methodSingle], got[methodBackfill])
	}
	return nil
}

func (b *bench) chunksGroup(ctx context.Context) error {
	ms := []copyMethod{{key: methodSingle, label: "single INSERT … SELECT (reference)", dest: sameDest,
		run: sqlMethod(singleStatement)}}
	for _, size := range b.cfg.chunkSizes {
		m := copyMethod{key: "chunk-" + size, dest: sameDest}
		if size == "default" {
			m.label = "backfill, no --chunk-size (the default)"
			m.run = backfillStart()
		} else {
			n, _ := strconv.Atoi(size)
			m.label = "backfill --chunk-size " + thousands(int64(n))
			m.run = backfillStart("--chunk-size", size)
		}
		ms = append(ms, m)
	}
	got, err := b.alternate(ctx, ms, b.cfg.rows)
	if err != nil {
		return err
	}
	b.section(fmt.Sprintf("Chunk-size sensitivity: same database, --rate 0, %s rows, %s", thousands(b.cfg.rows), b.roundsText()), "")
	single := got[methodSingle]
	t := newResultTable()
	for i, m := range ms {
		t.add(m.label, got[m.key], single, i > 0)
	}
	t.print(b.out)
	return nil
}

// exitCode is a finished command's exit code, -1 when a signal ended it.
func exitCode(err error) (int, bool) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), true
	}
	return 0, err == nil
}

// roundsText says over how many rounds the medians are.
func (b *bench) roundsText() string {
	if b.cfg.rounds == 1 {
		return "one round"
	}
	return fmt.Sprintf("medians of %d rounds", b.cfg.rounds)
}
