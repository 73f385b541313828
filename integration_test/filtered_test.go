package integration_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/internal/pgtest"
)

// insertWriter is the application: one session inserting batches of new
// rows at random keys between the existing ones (keys not divisible by 10)
// until stopped, at most for limit.
type insertWriter struct {
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	rows     int64
	elapsed  time.Duration
	firstErr error
}

func startInsertWriter(t *testing.T, url string, span int, limit time.Duration) *insertWriter {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	w := &insertWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer conn.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		began := time.Now()
		for {
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			default:
			}
			tag, err := conn.Exec(ctx, `INSERT INTO src (id, v)
				SELECT floor(random() * $1)::bigint * 10 + 1 + floor(random() * 9)::bigint, 'new'
				FROM generate_series(1, 200) ON CONFLICT DO NOTHING`, span)
			w.mu.Lock()
			if err != nil && w.firstErr == nil && ctx.Err() == nil {
				w.firstErr = err
			}
			w.rows += tag.RowsAffected()
			w.elapsed = time.Since(began)
			w.mu.Unlock()
		}
	}()
	return w
}

// finish stops the writer and returns the rows it inserted and its rate.
func (w *insertWriter) finish(t *testing.T) (int64, float64) {
	t.Helper()
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.firstErr != nil {
		t.Fatalf("application insert: %v", w.firstErr)
	}
	return w.rows, float64(w.rows) / w.elapsed.Seconds()
}

// TestFilteredJobCopiesEveryRowUnderConcurrentInserts: a job with --where
// reads a step (the key chunk-size table rows ahead) and then the matching
// rows up to it, in two statements. The application inserts rows between
// existing keys all the while; rows that land inside a step between its
// two statements push the step's last matching rows past the page's LIMIT.
// Every row that existed before the job must still be copied, in each of
// ten runs.
func TestFilteredJobCopiesEveryRowUnderConcurrentInserts(t *testing.T) {
	const existing = 50_000
	runs := 10
	if testing.Short() {
		runs = 3
	}
	db := pgtest.NewDatabase(t)
	sql(t, db, "CREATE TABLE src (id bigint PRIMARY KEY, v text NOT NULL)", "CREATE TABLE dst (id bigint PRIMARY KEY, v text NOT NULL)")
	for run := range runs {
		sql(t, db, "TRUNCATE src, dst",
			fmt.Sprintf("INSERT INTO src SELECT g * 10, 'existing' FROM generate_series(1, %d) g", existing), "ANALYZE src")
		w := startInsertWriter(t, db, existing, time.Minute)
		job := fmt.Sprintf("filtered-%d", run)
		// every row matches, so every step's page is exactly full and any
		// row inserted into it meanwhile overflows the LIMIT
		mustSucceed(t, "start", "--source", db, "--job", job, "--from", "src", "--to", "dst",
			"--where", "v <> 'none'", "--chunk-size", "100", "--rate", "0")
		inserted, rate := w.finish(t)
		if inserted == 0 {
			t.Fatal("the application inserted nothing while the job ran: nothing was tested")
		}
		missing := queryInt(t, db, "SELECT count(*) FROM src s WHERE v = 'existing' AND NOT EXISTS (SELECT 1 FROM dst d WHERE d.id = s.id)")
		s := status(t, db, job)
		copied := queryInt(t, db, "SELECT count(*) FROM dst")
		t.Logf("run %d: the application inserted %d rows (%.0f rows/s) while the job ran; %d rows copied", run, inserted, rate, copied)
		if missing != 0 {
			t.Fatalf("run %d: %d of %d pre-existing rows were not copied (job %s, %+v)", run, missing, existing, s.State, countersOf(s))
		}
		if s.State != "done" || s.RowsInserted != copied {
			t.Fatalf("run %d: state %s, rows_inserted %d, but the destination holds %d rows", run, s.State, s.RowsInserted, copied)
		}
	}
}
