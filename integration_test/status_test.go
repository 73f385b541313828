package integration_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/backfill/backfill"
)

// longName is a job name as a fleet of jobs names them.
const longName = "orders_2024_backfill_customer_addresses_eu_west_1"

// statusDatabase holds two jobs: longName, done with 5 failed rows
// (ids 7, 1007, … refused by a check), and "short", done.
func statusDatabase(t *testing.T) string {
	t.Helper()
	db := itemsDatabase(t, 5000)
	sql(t, db, "ALTER TABLE dst ADD CHECK (id % 1000 <> 7)", "CREATE TABLE dst2 (LIKE src INCLUDING ALL)")
	if r := cli(t, "start", "--source", db, "--job", longName, "--from", "src", "--to", "dst", "--rate", "0", "--chunk-size", "500"); r.code != 3 {
		t.Fatalf("the job with failed rows: %s", r)
	}
	mustSucceed(t, "start", "--source", db, "--job", "short", "--from", "src", "--to", "dst2", "--rate", "0", "--where", "id <= 100")
	return db
}

// TestStatusViews: the table fits 100 columns; --wide has every column;
// --job shows the job in detail, and as JSON every field of the list and
// the detail's.
func TestStatusViews(t *testing.T) {
	db := statusDatabase(t)

	table := mustSucceed(t, "status", "--dest", db).stdout
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "JOB STATE PROGRESS ROWS/S ETA FAILED RUNNER UPDATED" {
		t.Fatalf("status:\n%s", table)
	}
	for i, line := range lines {
		if width := utf8.RuneCountInString(line); width > 100 {
			t.Errorf("line %d is %d columns wide:\n%s", i, width, table)
		}
	}
	for _, want := range []string{"orders_2024", "done", "100.0% 5000", "5 ", " ago"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("the long job's line lacks %q: %q", want, lines[1])
		}
	}

	wide := mustSucceed(t, "status", "--dest", db, "--wide").stdout
	header := strings.Split(wide, "\n")[0]
	for _, column := range []string{"JOB", "STATE", "FROM", "TO", "ROWS READ", "EST.", "%", "INSERTED", "SKIPPED", "FILTERED", "FAILED",
		"CHUNKS", "RATE", "WORKERS", "ROWS/S", "ETA", "THROTTLED", "RUNNER", "HEARTBEAT", "UPDATED", "LAST KEY", "LAST ERROR"} {
		if !strings.Contains(header, column) {
			t.Errorf("--wide lacks column %s: %q", column, header)
		}
	}
	if !strings.Contains(wide, longName+" ") || !strings.Contains(wide, `"public"."dst2"`) {
		t.Errorf("--wide shortens or leaves out:\n%s", wide)
	}

	detail := mustSucceed(t, "status", "--dest", db, "--job", longName).stdout
	for _, want := range []string{
		"job " + longName + ": done, 5000 rows read of ~5000 (100.0%)",
		`copies:     "public"."src" → "public"."dst", key id`,
		"columns:    the same-named columns",
		"settings:   rate no cap, 8 workers, chunks of 500 rows",
		"runner:     ", "(last), no heartbeat: not running",
		"rows:       5000 read: 4995 inserted, 0 skipped, 0 filtered, 5 failed, in 10 chunks",
		"write path: ",
		"slowest of the last 1000 chunks", "  SEQ  KEYS", "isolated",
		"failed rows: 5; the first 5:", "007  ", "23514", "violates check constraint",
	} {
		if !strings.Contains(detail, want) {
			t.Errorf("the detail view lacks %q:\n%s", want, detail)
		}
	}
	if short := mustSucceed(t, "status", "--dest", db, "--job", "short").stdout; !strings.Contains(short, "where:      id <= 100") || strings.Contains(short, "failed rows") {
		t.Errorf("the detail of a filtered job without failed rows:\n%s", short)
	}

	raw := mustSucceed(t, "status", "--dest", db, "--job", longName, "--json").stdout
	var d backfill.JobDetail
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		t.Fatalf("decode: %v\n%s", err, raw)
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(raw), &fields); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"job", "state", "from", "to", "rows_read", "rows_inserted", "rows_skipped", "rows_filtered", "rows_failed",
		"chunks_done", "chunks_direct", "chunks_staged", "chunks_isolated", "rows_estimated", "percent", "rate", "rows_per_sec", "eta_seconds",
		"workers", "started_at", "updated_at", "finished_at", "heartbeat_at", "runner", "last_key", "last_error",
		"as_of", "key", "chunk_size", "follow", "slowest_chunks", "failed_rows"} {
		if _, ok := fields[name]; !ok {
			t.Errorf("--json lacks %s:\n%s", name, raw)
		}
	}
	if d.RowsFailed != 5 || !slices.Equal(d.Key, []string{"id"}) || d.ChunkSize != 500 || d.AsOf.IsZero() ||
		len(d.SlowestChunks) != backfill.DetailChunks || d.SlowestChunks[0].WriteSeconds <= 0 ||
		d.SlowestChunks[0].WriteSeconds < d.SlowestChunks[len(d.SlowestChunks)-1].WriteSeconds ||
		len(d.FailedRows) != 5 || d.FailedRows[0].SQLState != "23514" {
		t.Errorf("--json detail: %+v", d)
	}
	// the workers fail them in any order; they are listed in the order they failed
	var keys []string
	for i, f := range d.FailedRows {
		keys = append(keys, strings.Join(f.Key, ","))
		if i > 0 && f.FailedAt.Before(d.FailedRows[i-1].FailedAt) {
			t.Errorf("failed rows not in the order they failed: %+v", d.FailedRows)
		}
	}
	if slices.Sort(keys); !slices.Equal(keys, []string{"1007", "2007", "3007", "4007", "7"}) {
		t.Errorf("failed rows %v, want the five the check refuses", keys)
	}
}

// TestStatusWatch: --watch redraws every 2 s until interrupted, and exits
// 0: plain tables one after the other without a terminal, the screen
// cleared before each on one.
func TestStatusWatch(t *testing.T) {
	db := statusDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := command(ctx, t, "status", "--dest", db, "--watch")
	out := &lockedBuffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	waitFor(t, "two tables", func() bool { return strings.Count(out.String(), "JOB ") >= 2 })
	if took := time.Since(began); took < 1500*time.Millisecond {
		t.Errorf("two tables %v apart, want about 2 s", took)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("interrupted watch: %v\n%s", err, out)
	}
	tables := strings.Split(out.String(), "\n\n")
	if len(tables) < 2 || strings.Contains(out.String(), "\x1b") {
		t.Fatalf("watch without a terminal:\n%q", out.String())
	}
	for _, table := range tables {
		if !strings.HasPrefix(table, "JOB ") || !strings.Contains(table, "short ") {
			t.Errorf("a table of the watch: %q", table)
		}
	}

	code, screen := onTerminal(t, 120, func(cmd *exec.Cmd, screen *lockedBuffer) {
		waitFor(t, "two drawings", func() bool { return strings.Count(screen.String(), clearScreen) >= 2 })
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
	}, "status", "--dest", db, "--watch")
	if code != 0 {
		t.Fatalf("interrupted watch on a terminal: exit %d\n%q", code, screen)
	}
	for i, drawing := range strings.Split(screen, clearScreen)[1:] {
		if !strings.Contains(drawing, "every 2s until interrupted") || !strings.Contains(drawing, "\nJOB ") || !strings.Contains(drawing, "short ") {
			t.Errorf("drawing %d on a terminal: %q", i, drawing)
		}
	}
}

// clearScreen is what status --watch writes before each drawing on a
// terminal.
const clearScreen = "\x1b[H\x1b[2J"

// waitFor polls cond for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within 30 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
