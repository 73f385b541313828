package integration_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backfill/backfill/internal/pgtest"
)

// TestDirectCopyUnderConcurrentDestinationWrites: while a job copies into
// an empty destination, the application writes rows of the same keys into
// it: single rows anywhere, and now and then a run of 150 keys. Chunks
// whose range is still empty go straight in by COPY, and so do those that
// hold a few application rows, which the COPY leaves out; those that hold
// a run, or meet a row the COPY fails on, go through the stage. Whatever
// the timing, no row is lost or counted twice: every source key is in the
// destination, with the source's value where the job inserted it, and the
// counters say exactly that.
func TestDirectCopyUnderConcurrentDestinationWrites(t *testing.T) {
	const rows = 60_000
	db := pgtest.NewDatabase(t)
	sql(t, db, "CREATE TABLE src (id bigint PRIMARY KEY, v text NOT NULL)", "CREATE TABLE dst (id bigint PRIMARY KEY, v text NOT NULL)",
		"INSERT INTO src SELECT g, 'src' FROM generate_series(1, 60000) g", "ANALYZE src")
	conn := connect(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var (
		mu       sync.Mutex
		appRows  int64
		appErr   error
		stop     = make(chan struct{})
		finished = make(chan struct{})
	)
	go func() {
		defer close(finished)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// a row anywhere in the key range, most ahead of the job, and
			// one time in ten a run of them
			tag, err := conn.Exec(ctx, `INSERT INTO dst SELECT k, 'app'
				FROM (SELECT floor(random() * $1)::bigint + 1 AS start, CASE WHEN random() < 0.1 THEN 150 ELSE 1 END AS n) r,
					generate_series(start, least(start + n - 1, $1::bigint)) k
				ON CONFLICT DO NOTHING`, rows)
			mu.Lock()
			if err != nil && appErr == nil && ctx.Err() == nil {
				appErr = err
			}
			appRows += tag.RowsAffected()
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	r := cli(t, "start", "--source", db, "--job", "direct", "--from", "src", "--to", "dst",
		"--chunk-size", "200", "--rate", "0", "--log-level", "debug")
	close(stop)
	<-finished // before a failure closes the writer's connection
	if r.code != 0 {
		t.Fatalf("backfill start: %s", r)
	}
	if appErr != nil {
		t.Fatalf("application insert: %v", appErr)
	}
	if appRows == 0 {
		t.Fatal("the application wrote nothing while the job ran: nothing was tested")
	}
	direct, staged := strings.Count(r.stderr, `"path":"direct"`), strings.Count(r.stderr, `"path":"stage"`)
	t.Logf("the application inserted %d rows; %d chunks went in directly, %d through the stage", appRows, direct, staged)
	around := len(regexp.MustCompile(`"skipped":[1-9][0-9]*,[^\n]*"path":"direct"`).FindAllString(r.stderr, -1))
	t.Logf("%d of the direct chunks left application rows out", around)
	if direct == 0 || staged == 0 || around == 0 {
		t.Fatalf("%d direct chunks (%d around application rows) and %d staged: the test did not exercise every path", direct, around, staged)
	}
	s := status(t, db, "direct")
	fromSource := queryInt(t, db, "SELECT count(*) FROM dst WHERE v = 'src'")
	missing := queryInt(t, db, "SELECT count(*) FROM src s WHERE NOT EXISTS (SELECT 1 FROM dst d WHERE d.id = s.id)")
	if missing != 0 || s.State != "done" || s.RowsRead != rows || s.RowsInserted != fromSource || s.RowsSkipped != rows-fromSource {
		t.Fatalf("%d source rows missing; job %s, %+v; the destination holds %d rows from the source", missing, s.State, countersOf(s), fromSource)
	}
	if s.ChunksDirect != int64(direct) || s.ChunksStaged != int64(staged) || s.ChunksIsolated != 0 {
		t.Fatalf("status counts %d direct, %d staged, %d isolated chunks; the log %d direct, %d staged", s.ChunksDirect, s.ChunksStaged, s.ChunksIsolated, direct, staged)
	}
	text := mustSucceed(t, "status", "--dest", db, "--job", "direct").stdout
	if want := fmt.Sprintf("write path: %d chunks copied straight into the destination, %d through the stage", direct, staged); !strings.Contains(text, want) {
		t.Fatalf("status --job does not say %q:\n%s", want, text)
	}
}
