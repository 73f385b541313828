package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// served is a run's metrics behind a live server on a free port.
type served struct {
	metrics *Metrics
	server  *Server
	base    string
	health  *atomic.Pointer[error] // what Health returns
	stop    context.CancelFunc
}

func setup(t *testing.T, job, runner string) *served {
	t.Helper()
	m, err := New(job, runner)
	if err != nil {
		t.Fatal(err)
	}
	health := new(atomic.Pointer[error])
	ctx, stop := context.WithCancel(context.Background())
	srv, err := Serve(ctx, ServerConfig{Addr: "127.0.0.1:0", Metrics: m, Health: func() error {
		if err := health.Load(); err != nil {
			return *err
		}
		return nil
	}})
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if err := srv.Wait(); err != nil {
			t.Errorf("server stopped with: %v", err)
		}
	})
	return &served{metrics: m, server: srv, base: "http://" + srv.Addr(), health: health, stop: stop}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// scrape reads /metrics as Prometheus would and parses it.
func (s *served) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, s.base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d: %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return families
}

// sample finds the one series of name whose labels include want.
func sample(t *testing.T, families map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	family, ok := families[name]
	if !ok {
		t.Fatalf("no series %s", name)
	}
	var found *dto.Metric
	for _, m := range family.GetMetric() {
		if hasLabels(m, want) {
			if found != nil {
				t.Fatalf("two series of %s with %v", name, want)
			}
			found = m
		}
	}
	if found == nil {
		t.Fatalf("no series %s with %v among %v", name, want, family.GetMetric())
	}
	return found
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func value(t *testing.T, families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m := sample(t, families, name, labels)
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	t.Fatalf("%s is neither a gauge nor a counter", name)
	return 0
}

func TestServeMetrics(t *testing.T) {
	s := setup(t, "orders", "")
	m := s.metrics

	// before anything happens every series is there, at its start
	families := s.scrape(t)
	job := map[string]string{"job": "orders"}
	for _, name := range []string{"backfill_pool_size", "backfill_pool_busy", "backfill_pool_in_pending", "backfill_pool_in_capacity",
		"backfill_rate_limit_rows_per_second", "backfill_throttled_seconds_total"} {
		if v := value(t, families, name, job); v != 0 {
			t.Errorf("%s = %v before the run, want 0", name, v)
		}
	}
	for _, status := range []string{"done", "retried", "split", "failed"} {
		value(t, families, "backfill_chunks_processed_total", map[string]string{"job": "orders", "status": status})
	}
	for _, result := range []string{"inserted", "skipped", "filtered", "failed"} {
		value(t, families, "backfill_rows_total", map[string]string{"job": "orders", "result": result})
	}
	if v := value(t, families, "backfill_eta_seconds", job); v != -1 {
		t.Errorf("ETA before the run = %v, want -1 (unknown)", v)
	}

	pool := PoolStats{Size: 4, Busy: 3, Pending: 7, Capacity: 8}
	m.ReadPoolFrom(func() PoolStats { return pool })
	m.ObserveChunk(Chunk{Status: ChunkDone, Rows: Rows{Inserted: 900, Skipped: 50, Filtered: 40, Failed: 10},
		Read: 20 * time.Millisecond, Transform: 3 * time.Millisecond, Write: 1500 * time.Millisecond})
	m.ObserveChunk(Chunk{Status: ChunkDone, Rows: Rows{Inserted: 1000}, Transform: 2 * time.Millisecond, Write: 40 * time.Second})
	// an attempt that rolled back wrote none of the run's rows
	m.ObserveChunk(Chunk{Status: ChunkRetried, Rows: Rows{Inserted: 1000}, Write: 2 * time.Second})
	m.ObserveChunk(Chunk{Status: ChunkSplit})
	m.ObserveStage(StageRead, 5*time.Millisecond)
	m.SetRate(1000)
	m.AddThrottled(1500 * time.Millisecond)
	m.AddThrottled(500 * time.Millisecond)
	m.SetThrottled("replica_lag", true)
	m.SetThrottled("manual", true)
	m.SetThrottled("manual", false)
	m.SetProgress(0.25, 90*time.Second)

	families = s.scrape(t)
	for name, want := range map[string]float64{
		"backfill_pool_size": 4, "backfill_pool_busy": 3, "backfill_pool_in_pending": 7, "backfill_pool_in_capacity": 8,
		"backfill_rate_limit_rows_per_second": 1000, "backfill_throttled_seconds_total": 2,
		"backfill_progress_ratio": 0.25, "backfill_eta_seconds": 90,
	} {
		if got := value(t, families, name, job); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for status, want := range map[string]float64{"done": 2, "retried": 1, "split": 1, "failed": 0} {
		if got := value(t, families, "backfill_chunks_processed_total", map[string]string{"status": status}); got != want {
			t.Errorf("chunks %s = %v, want %v", status, got, want)
		}
	}
	for result, want := range map[string]float64{"inserted": 1900, "skipped": 50, "filtered": 40, "failed": 10} {
		if got := value(t, families, "backfill_rows_total", map[string]string{"result": result}); got != want {
			t.Errorf("rows %s = %v, want %v", result, got, want)
		}
	}
	for reason, want := range map[string]float64{"replica_lag": 1, "manual": 0} {
		if got := value(t, families, "backfill_throttled", map[string]string{"reason": reason}); got != want {
			t.Errorf("throttled by %s = %v, want %v", reason, got, want)
		}
	}

	// the histogram: counts, sums and where the observations fell
	for stage, want := range map[string]struct {
		count  uint64
		sum    float64
		le     float64 // an upper bound ...
		belowN uint64  // ... and how many observations are at or below it
	}{
		"read":      {2, 0.025, 0.005, 1},
		"transform": {2, 0.005, 0.0025, 1},
		"write":     {3, 43.5, 2.5, 2},
	} {
		h := sample(t, families, "backfill_chunk_duration_seconds", map[string]string{"stage": stage}).GetHistogram()
		if h.GetSampleCount() != want.count || !near(h.GetSampleSum(), want.sum) {
			t.Errorf("stage %s: %d observations summing to %v s, want %d and %v", stage, h.GetSampleCount(), h.GetSampleSum(), want.count, want.sum)
		}
		if len(h.GetBucket()) != len(DurationBuckets)+1 { // and +Inf
			t.Errorf("stage %s has %d buckets, want %d", stage, len(h.GetBucket()), len(DurationBuckets)+1)
		}
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() == want.le && b.GetCumulativeCount() != want.belowN {
				t.Errorf("stage %s: %d observations ≤ %v s, want %d", stage, b.GetCumulativeCount(), want.le, want.belowN)
			}
		}
	}

	// the Go and process collectors, labelled like the rest
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes"} {
		if v := value(t, families, name, job); v <= 0 {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	// every series says which job and which runner it is of
	for name, family := range families {
		for _, series := range family.GetMetric() {
			if !hasLabels(series, map[string]string{"job": "orders", "runner": ""}) {
				t.Errorf("%s%v lacks job=orders or runner", name, series.GetLabel())
			}
		}
	}

	// the pool's gauges are read at the scrape, not pushed
	pool = PoolStats{Size: 12, Busy: 12, Pending: 1, Capacity: 24}
	families = s.scrape(t)
	if got := value(t, families, "backfill_pool_size", job); got != 12 {
		t.Errorf("pool size after growing = %v, want 12", got)
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

func TestRunnerLabel(t *testing.T) {
	s := setup(t, "orders", "host-a:4242")
	s.metrics.SetProgress(-1, -1)
	families := s.scrape(t)
	want := map[string]string{"job": "orders", "runner": "host-a:4242"}
	if v := value(t, families, "backfill_progress_ratio", want); v != -1 {
		t.Errorf("progress without an estimate = %v, want -1", v)
	}
	value(t, families, "go_goroutines", want)
}

// Each run has its own registry: a second run of the same job in the same
// process starts from zero.
func TestRunsDoNotShareSeries(t *testing.T) {
	first := setup(t, "orders", "")
	first.metrics.ObserveChunk(Chunk{Status: ChunkDone, Rows: Rows{Inserted: 5}})
	second := setup(t, "orders", "")
	if got := value(t, second.scrape(t), "backfill_rows_total", map[string]string{"result": "inserted"}); got != 0 {
		t.Errorf("the second run's inserted rows = %v, want 0", got)
	}
	if got := value(t, first.scrape(t), "backfill_rows_total", map[string]string{"result": "inserted"}); got != 5 {
		t.Errorf("the first run's inserted rows = %v, want 5", got)
	}
}

func TestHealthz(t *testing.T) {
	s := setup(t, "orders", "")
	if code, body := get(t, s.base+"/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz while the job is held: %d %q", code, body)
	}
	lost := errors.New("job orders taken by another runner")
	s.health.Store(&lost)
	if code, body := get(t, s.base+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, lost.Error()) {
		t.Errorf("/healthz once the job is lost: %d %q", code, body)
	}
	s.health.Store(nil)
	if code, _ := get(t, s.base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz held again: %d", code)
	}
}

func TestServerStops(t *testing.T) {
	m, err := New("orders", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	srv, err := Serve(ctx, ServerConfig{Addr: "127.0.0.1:0", Metrics: m, Health: func() error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Serve(ctx, ServerConfig{Addr: srv.Addr(), Metrics: m, Health: func() error { return nil }}); err == nil ||
		!strings.Contains(err.Error(), srv.Addr()) {
		t.Errorf("a second server on %s: %v, want an error naming the address", srv.Addr(), err)
	}
	stop()
	if err := srv.Wait(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if resp, err := http.Get("http://" + srv.Addr() + "/metrics"); err == nil {
		resp.Body.Close()
		t.Fatal("still serving after its context ended")
	}
}

// gathered is the registry's series by name, as a scrape would parse them.
func gathered(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	list, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]*dto.MetricFamily{}
	for _, f := range list {
		families[f.GetName()] = f
	}
	return families
}

// Rows committed apart from a done chunk (a piece of a split chunk, failed
// rows tried again) count as rows, and no chunk.
func TestAddRows(t *testing.T) {
	m, err := New("orders", "")
	if err != nil {
		t.Fatal(err)
	}
	m.AddRows(Rows{Inserted: 500, Skipped: 2, Filtered: 3, Failed: 4})
	m.ObserveChunk(Chunk{Status: ChunkDone, Rows: Rows{Inserted: 495, Failed: 1}})
	families := gathered(t, m)
	for result, want := range map[string]float64{"inserted": 995, "skipped": 2, "filtered": 3, "failed": 5} {
		if got := value(t, families, "backfill_rows_total", map[string]string{"result": result}); got != want {
			t.Errorf("rows %s = %v, want %v", result, got, want)
		}
	}
	if got := value(t, families, "backfill_chunks_processed_total", map[string]string{"status": "done"}); got != 1 {
		t.Errorf("chunks done = %v, want 1", got)
	}
}
