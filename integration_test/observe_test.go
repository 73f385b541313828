package integration_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/backfill/backfill"
)

// freeAddr is a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// httpGet reads a page of the runner's server; code 0 when it does not
// answer.
func httpGet(addr, path string) (int, string) {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// scrape is one scrape of /metrics, parsed as Prometheus parses it.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, addr string) scrape {
	t.Helper()
	code, body := httpGet(addr, "/metrics")
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

// value is the one series of name with the labels given (and any others);
// NaN when there is none.
func (s scrape) value(name string, labels ...string) float64 {
	family, ok := s[name]
	if !ok {
		return math.NaN()
	}
	for _, m := range family.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if v, ok := have[labels[i]]; !ok || v != labels[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return math.NaN()
}

// runCounters are a run's figures as the metrics count them, in the shape
// of status's counters.
func (s scrape) runCounters() counters {
	rows := func(result string) int64 { return int64(s.value("backfill_rows_total", "result", result)) }
	return counters{
		RowsRead:     rows("inserted") + rows("skipped") + rows("filtered") + rows("failed"),
		RowsInserted: rows("inserted"), RowsSkipped: rows("skipped"), RowsFiltered: rows("filtered"), RowsFailed: rows("failed"),
		ChunksDone: int64(s.value("backfill_chunks_processed_total", "status", "done")),
	}
}

func (c counters) minus(d counters) counters {
	return counters{c.RowsRead - d.RowsRead, c.RowsInserted - d.RowsInserted, c.RowsSkipped - d.RowsSkipped,
		c.RowsFiltered - d.RowsFiltered, c.RowsFailed - d.RowsFailed, c.ChunksDone - d.ChunksDone}
}

// holdJobRow locks the job's row against updates (FOR NO KEY UPDATE) in a
// transaction it returns: the runner's heartbeat and its final write of
// the job's state wait for it, while its chunks, whose fence only shares
// the row's key, commit. A runner whose pipeline has ended then waits,
// with its final counters in, until the transaction ends.
func holdJobRow(t *testing.T, db, job string) pgx.Tx {
	t.Helper()
	conn := connect(t, db)
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), "SELECT 1 FROM backfill.jobs WHERE name = $1 FOR NO KEY UPDATE", job); err != nil {
		t.Fatal(err)
	}
	return tx
}

// metricsEqualStatus waits until the run's counters equal what status
// shows less before, and returns the last scrape.
func metricsEqualStatus(t *testing.T, b *background, addr, db, job string, before counters) scrape {
	t.Helper()
	var got, want counters
	var last scrape
	deadline := time.Now().Add(20 * time.Second)
	for {
		last = scrapeMetrics(t, addr)
		got, want = last.runCounters(), countersOf(status(t, db, job)).minus(before)
		if got == want {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run's metrics %+v never equalled status less the earlier runs, %+v\n%s", got, want, b.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMetricsDuringARun scrapes a runner's /metrics while it copies: every
// name of the fan-out pool's set is there with the label job, the pool's
// size is the worker count and follows `set --workers` within 3 s, the
// rate gauge follows `set --rate`, and the
// run's counters equal status's figures for the run: a new job's, then a
// resumed run's own, less what the first run did.
func TestMetricsDuringARun(t *testing.T) {
	const n = 40_000
	db := itemsDatabase(t, n)
	addr := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	common := []string{"--source", db, "--job", "scraped", "--metrics-addr", addr, "--workers", "3", "--lock-timeout", "1m", "--log-format", "json"}
	b := startBackground(ctx, t, append([]string{"start", "--from", "src", "--to", "dst", "--chunk-size", "500", "--rate", "2000"}, common...)...)
	healthy := func() bool { code, _ := httpGet(addr, "/healthz"); return code == http.StatusOK }
	waitUntil(t, b.done, b.stderr, "/healthz answering 200", healthy)
	waitUntil(t, b.done, b.stderr, "2000 rows counted", func() bool {
		return scrapeMetrics(t, addr).value("backfill_rows_total", "result", "inserted") >= 2000
	})

	s := scrapeMetrics(t, addr)
	// the runner label names the process: host:pid:nonce, as its leases do
	runner := ""
	if f, ok := s["backfill_pool_size"]; ok && len(f.GetMetric()) > 0 {
		for _, l := range f.GetMetric()[0].GetLabel() {
			if l.GetName() == "runner" {
				runner = l.GetValue()
			}
		}
	}
	if !strings.Contains(runner, fmt.Sprintf(":%d:", b.cmd.Process.Pid)) {
		t.Errorf("runner label %q does not name the process (pid %d)", runner, b.cmd.Process.Pid)
	}
	for _, name := range []string{"backfill_pool_size", "backfill_pool_busy", "backfill_pool_in_pending", "backfill_pool_in_capacity",
		"backfill_rate_limit_rows_per_second", "backfill_throttled_seconds_total", "backfill_progress_ratio", "backfill_eta_seconds",
		"go_goroutines", "process_resident_memory_bytes"} {
		if v := s.value(name, "job", "scraped", "runner", runner); math.IsNaN(v) {
			t.Errorf("no %s{job=\"scraped\"}", name)
		}
	}
	for _, status := range []string{"done", "retried", "split", "failed"} {
		if math.IsNaN(s.value("backfill_chunks_processed_total", "job", "scraped", "status", status)) {
			t.Errorf("no backfill_chunks_processed_total{status=%q}", status)
		}
	}
	for _, result := range []string{"inserted", "skipped", "filtered", "failed"} {
		if math.IsNaN(s.value("backfill_rows_total", "job", "scraped", "result", result)) {
			t.Errorf("no backfill_rows_total{result=%q}", result)
		}
	}
	for _, stage := range []string{"read", "transform", "write"} {
		if !(s.value("backfill_chunk_duration_seconds", "job", "scraped", "stage", stage) > 0) {
			t.Errorf("no chunk measured in stage %s", stage)
		}
	}
	if size, capacity := s.value("backfill_pool_size"), s.value("backfill_pool_in_capacity"); size != 3 || capacity != backfill.DefaultQueueDepth {
		t.Errorf("pool size %v, capacity %v; want the 3 workers and the queue depth %d", size, capacity, backfill.DefaultQueueDepth)
	}
	if busy := s.value("backfill_pool_busy"); !(busy >= 0 && busy <= 3) {
		t.Errorf("%v workers busy of 3", busy)
	}
	if rate, throttled := s.value("backfill_rate_limit_rows_per_second"), s.value("backfill_throttled_seconds_total"); rate != 2000 || throttled <= 0 {
		t.Errorf("rate gauge %v, throttled %v s; want the cap of 2000 and the time the workers waited on it", rate, throttled)
	}
	// the progress gauges follow within a second
	waitUntil(t, b.done, b.stderr, "a progress ratio and an ETA", func() bool {
		s := scrapeMetrics(t, addr)
		ratio, eta := s.value("backfill_progress_ratio"), s.value("backfill_eta_seconds")
		return ratio > 0 && ratio < 1 && eta > 0
	})
	mustSucceed(t, "set", "--dest", db, "--job", "scraped", "--rate", "2500")
	waitUntil(t, b.done, b.stderr, "the rate gauge following set --rate", func() bool {
		return scrapeMetrics(t, addr).value("backfill_rate_limit_rows_per_second") == 2500
	})

	// the pool gauge follows set --workers within 3 s (a heartbeat, and a
	// retiring worker's chunk)
	for _, workers := range []string{"2", "12"} {
		mustSucceed(t, "set", "--dest", db, "--job", "scraped", "--workers", workers)
		set := time.Now()
		waitUntil(t, b.done, b.stderr, "backfill_pool_size following set --workers "+workers, func() bool {
			return strconv.FormatFloat(scrapeMetrics(t, addr).value("backfill_pool_size"), 'f', -1, 64) == workers
		})
		if took := time.Since(set); took > 3*time.Second {
			t.Errorf("backfill_pool_size took %v to follow set --workers %s", took, workers)
		} else {
			t.Logf("backfill_pool_size followed set --workers %s after %v", workers, took.Round(time.Millisecond))
		}
	}

	// stopped with the job's row held: the counters are final while the
	// runner waits to record its end
	held := holdJobRow(t, db, "scraped")
	if err := b.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	metricsEqualStatus(t, b, addr, db, "scraped", counters{})
	if err := held.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code := b.exitCode(); code != 130 {
		t.Fatalf("interrupted runner: exit %d\n%s", code, b.stderr)
	}
	first := countersOf(status(t, db, "scraped"))
	if first.RowsRead == 0 || first.RowsRead >= n {
		t.Fatalf("the first run copied %d rows of %d: make it longer or shorter", first.RowsRead, n)
	}

	// the resumed run counts its own rows only
	b = startBackground(ctx, t, append([]string{"resume", "--rate", "10000"}, common...)...)
	waitUntil(t, b.done, b.stderr, "/healthz answering 200 on resume", healthy)
	held = holdJobRow(t, db, "scraped")
	waitUntil(t, b.done, b.stderr, "every row committed", func() bool { return status(t, db, "scraped").RowsRead == n })
	s = metricsEqualStatus(t, b, addr, db, "scraped", first)
	if ratio, eta := s.value("backfill_progress_ratio"), s.value("backfill_eta_seconds"); ratio != 1 || eta != 0 {
		t.Errorf("progress %v, ETA %v s once every row is in; want 1 and 0", ratio, eta)
	}
	if err := held.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code := b.exitCode(); code != 0 {
		t.Fatalf("resumed runner: exit %d\n%s", code, b.stderr)
	}
	if code, _ := httpGet(addr, "/healthz"); code != 0 {
		t.Errorf("the metrics server outlived its run: /healthz answered %d", code)
	}
	assertSameRows(t, db, "src", db, "dst")
	t.Logf("first run %+v; whole job %+v", first, countersOf(status(t, db, "scraped")))
}

// TestMetricsAddrInUseIsAnError: a metrics address another process
// listens on fails the run before it writes anything.
func TestMetricsAddrInUseIsAnError(t *testing.T) {
	db := itemsDatabase(t, 10)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := cli(t, "start", "--source", db, "--job", "taken", "--from", "src", "--to", "dst", "--metrics-addr", l.Addr().String())
	if r.code != 1 || !strings.Contains(r.stderr, "metrics") || !strings.Contains(r.stderr, "address already in use") {
		t.Fatalf("a metrics address in use: %s", r)
	}
	if schemaExists(t, db, "backfill") {
		t.Fatal("the refused run wrote its state schema")
	}
}
