package backfill

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/backfill/backfill/worker"
)

// The observer counts chunks as status does: a split chunk is done once,
// when its last piece commits, though every piece's rows count; a step
// without a matching row is no chunk; and an attempt that did not commit
// counts by its outcome, without rows.
func TestObserverCountsChunksAsStatusDoes(t *testing.T) {
	o, err := newObserver(context.Background(), Job{Name: "orders", MetricsAddr: "127.0.0.1:0"}, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	piece := worker.Result{Read: 50, Inserted: 48, Failed: 2, Transform: time.Millisecond, Write: time.Second}
	last := piece
	last.EndsChunk = true
	for _, a := range []struct {
		outcome worker.Outcome
		res     worker.Result
	}{
		{worker.Retried, worker.Result{Read: 100, Write: time.Second, EndsChunk: true}},
		{worker.Retried, worker.Result{Read: 100, Write: time.Second, EndsChunk: true}},
		{worker.Split, worker.Result{Read: 100, EndsChunk: true}},
		{worker.Committed, piece},
		{worker.Committed, last},
		{worker.Committed, worker.Result{EndsChunk: true}}, // a step without a matching row
		{worker.Committed, worker.Result{Read: 10, Filtered: 10, EndsChunk: true}},
		{worker.GaveUp, worker.Result{Read: 7, EndsChunk: true}},
	} {
		o.attempt(a.outcome, a.res)
	}
	o.retried(worker.Result{Inserted: 1, Failed: 1})
	_, text := get(t, o, "/metrics")
	for _, want := range []string{
		`backfill_chunks_processed_total{job="orders",runner="",status="done"} 2`,
		`backfill_chunks_processed_total{job="orders",runner="",status="retried"} 2`,
		`backfill_chunks_processed_total{job="orders",runner="",status="split"} 1`,
		`backfill_chunks_processed_total{job="orders",runner="",status="failed"} 1`,
		`backfill_rows_total{job="orders",result="inserted",runner=""} 97`,
		`backfill_rows_total{job="orders",result="failed",runner=""} 5`,
		`backfill_rows_total{job="orders",result="filtered",runner=""} 10`,
		`backfill_chunk_duration_seconds_count{job="orders",runner="",stage="write"} 4`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("no %s in:\n%s", want, text)
		}
	}
}

// get reads a page of the observer's server.
func get(t *testing.T, o *observer, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + o.server.Addr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// /healthz answers 200 while the runner holds its job, and 503 saying why
// before, while it has lost its control session, and after the run.
func TestObserverHealth(t *testing.T) {
	o, err := newObserver(context.Background(), Job{Name: "orders", MetricsAddr: "127.0.0.1:0"}, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	for _, step := range []struct {
		do   func()
		code int
		says string
	}{
		{func() {}, http.StatusServiceUnavailable, "has not taken job"},
		{o.holds, http.StatusOK, "ok"},
		{o.lost, http.StatusServiceUnavailable, "lost its control session"},
		{o.holds, http.StatusOK, "ok"},
		{func() { o.ended(StateDone) }, http.StatusServiceUnavailable, "the run has ended: the job is done"},
	} {
		step.do()
		if code, body := get(t, o, "/healthz"); code != step.code || !strings.Contains(body, step.says) {
			t.Errorf("/healthz answered %d %q, want %d %q", code, body, step.code, step.says)
		}
	}
	if _, text := get(t, o, "/metrics"); !strings.Contains(text, `backfill_progress_ratio{job="orders",runner=""} 1`+"\n") {
		t.Errorf("a job done has all its progress:\n%s", text)
	}
}
