package backfill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/backfill/backfill/internal/pgtest"
)

// Autoscaling in a run, with the controller's 5 s and minute shortened (the
// command's own timing is tested by integration_test): the pool grows
// against a slow destination, shrinks behind a slow source, and does not
// grow when the rate cap is what holds the job back; each change is logged
// with its reason and the last size stored in the job's row.

// scaledJob is a database with src (n rows) and dst, and a job over them
// that autoscales on a 200 ms interval.
func scaledJob(t *testing.T, n int, setup ...string) (Job, *pgx.Conn, *logLines) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	for _, q := range append([]string{
		"CREATE TABLE src (id bigint PRIMARY KEY, name text)",
		"CREATE TABLE dst (LIKE src INCLUDING ALL)",
		fmt.Sprintf("INSERT INTO src SELECT g, 'n' || g FROM generate_series(1, %d) g", n),
	}, setup...) {
		if _, err := conn.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	logs := &logLines{}
	j := Job{Name: "scaled", SourceURL: url, From: "src", To: "dst", ChunkSize: 50, Rate: Unlimited,
		Autoscale: true, MinWorkers: 1, MaxWorkers: 4, Logger: zerolog.New(logs).Level(zerolog.InfoLevel),
		autoscaleTiming: autoscaleTiming{interval: 200 * time.Millisecond, shrinkAfter: 600 * time.Millisecond}}
	return j, conn, logs
}

// slowDestination makes each statement writing dst take 30 ms.
const slowDestination = `CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.03); RETURN NULL; END $$;
	CREATE TRIGGER slow AFTER INSERT ON dst FOR EACH STATEMENT EXECUTE FUNCTION slow()`

func runScaled(t *testing.T, j Job, conn *pgx.Conn, n int64) Report {
	t.Helper()
	rep, err := Run(t.Context(), j)
	if err != nil || rep.State != StateDone || rep.Totals.RowsInserted != n || rep.Totals.RowsSkipped != 0 || rep.Totals.ChunksDone != n/50 {
		t.Fatalf("run: %v, state %s, totals %+v; want %d rows in %d chunks", err, rep.State, rep.Totals, n, n/50)
	}
	var missing int64
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) d").Scan(&missing); err != nil || missing != 0 {
		t.Fatalf("%d source rows missing from the destination (%v)", missing, err)
	}
	return rep
}

func storedWorkers(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT workers FROM backfill.jobs WHERE name = 'scaled'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAutoscaleGrowsAgainstASlowDestination(t *testing.T) {
	j, conn, logs := scaledJob(t, 6_000, slowDestination)
	j.Workers = 1
	began := time.Now()
	runScaled(t, j, conn, 6_000)
	grew := logs.with("autoscale: growing the pool")
	t.Logf("done in %v; %d growths: %v", time.Since(began).Round(time.Millisecond), len(grew), grew)
	if len(grew) != 3 || grew[0]["from"] != 1.0 || grew[2]["to"] != 4.0 ||
		!strings.Contains(grew[0]["reason"].(string), "the workers are the bottleneck") {
		t.Fatalf("want the pool grown 1 -> 4, one worker at a time, saying why:\n%s", logs)
	}
	if resized := logs.with("worker pool resized"); len(resized) != 3 || resized[2]["workers"] != 4.0 {
		t.Fatalf("the pool's own log of its sizes: %v", resized)
	}
	if n := storedWorkers(t, conn); n != 4 {
		t.Fatalf("the job's row holds %d workers, want the last size 4", n)
	}
}

func TestAutoscaleShrinksBehindASlowSource(t *testing.T) {
	j, conn, logs := scaledJob(t, 2_500)
	// each page of the source waits 100 ms: the reader is the bottleneck
	j.Where, j.Workers = "(SELECT true FROM pg_sleep(0.1))", 4
	runScaled(t, j, conn, 2_500)
	shrank := logs.with("autoscale: shrinking the pool")
	t.Logf("%d shrinks: %v", len(shrank), shrank)
	if len(shrank) != 3 || shrank[0]["from"] != 4.0 || shrank[2]["to"] != 1.0 ||
		!strings.Contains(shrank[0]["reason"].(string), "the reader is the bottleneck") {
		t.Fatalf("want the pool shrunk 4 -> 1, one worker at a time, saying why:\n%s", logs)
	}
	if len(logs.with("autoscale: growing the pool")) != 0 {
		t.Fatalf("the pool grew behind a slow reader:\n%s", logs)
	}
	if n := storedWorkers(t, conn); n != 1 {
		t.Fatalf("the job's row holds %d workers, want the last size 1", n)
	}
}

func TestAutoscaleDoesNotGrowAgainstTheRateCap(t *testing.T) {
	j, conn, logs := scaledJob(t, 2_000)
	j.Workers, j.Rate = 1, 1_000 // a worker writes far faster: it waits on the cap
	runScaled(t, j, conn, 2_000)
	if grew := logs.with("autoscale: growing the pool"); len(grew) != 0 {
		t.Fatalf("the pool grew though the rate cap held the job back: %v", grew)
	}
}

// logLines collects a run's JSON log lines.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// with returns the lines whose message is msg, decoded.
func (l *logLines) with(msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.Lines(l.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}
