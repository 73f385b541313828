package metrics

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// ChunkStatus is how a chunk's attempt ended: the label status of
// backfill_chunks_processed_total.
type ChunkStatus string

// The outcomes of a chunk.
const (
	ChunkDone    ChunkStatus = "done"    // committed with its checkpoint
	ChunkRetried ChunkStatus = "retried" // an attempt failed and will be tried again
	ChunkSplit   ChunkStatus = "split"   // halved to isolate failing rows or to fit
	ChunkFailed  ChunkStatus = "failed"  // given up: the run stops with its error
)

// Stage is a step of a chunk's journey: the label stage of
// backfill_chunk_duration_seconds.
type Stage string

// The stages of a chunk.
const (
	StageRead      Stage = "read"
	StageTransform Stage = "transform"
	StageWrite     Stage = "write"
)

// The label values of backfill_rows_total.
const (
	rowsInserted = "inserted"
	rowsSkipped  = "skipped"
	rowsFiltered = "filtered"
	rowsFailed   = "failed"
)

var (
	chunkStatuses = []ChunkStatus{ChunkDone, ChunkRetried, ChunkSplit, ChunkFailed}
	stages        = []Stage{StageRead, StageTransform, StageWrite}
	rowResults    = []string{rowsInserted, rowsSkipped, rowsFiltered, rowsFailed}
)

// DurationBuckets are the upper bounds, in seconds, of the chunk duration
// histogram: from a 1 ms transform of a small chunk to a 60 s write into a
// slow destination, about two and a half times apart.
var DurationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Rows are a chunk's rows by what became of them, as the checkpoint counts
// them.
type Rows struct {
	Inserted int // written
	Skipped  int // already in the destination (ON CONFLICT DO NOTHING)
	Filtered int // dropped by the transform's filter
	Failed   int // refused by the destination, recorded as failed rows
}

// Chunk is what one chunk's attempt did. A duration that is zero was not
// measured and is not observed.
type Chunk struct {
	Status                 ChunkStatus
	Rows                   Rows
	Read, Transform, Write time.Duration
}

// PoolStats is the worker pool at one instant.
type PoolStats struct {
	Size     int // workers
	Busy     int // workers inside a chunk
	Pending  int // chunks waiting in the input channel
	Capacity int // the input channel's size
}

// Metrics are one run's series. Its methods are safe for concurrent use.
type Metrics struct {
	registry *prometheus.Registry
	pool     *poolCollector

	chunks           map[ChunkStatus]prometheus.Counter
	rows             map[string]prometheus.Counter
	durations        map[Stage]prometheus.Observer
	rateLimit        prometheus.Gauge
	throttledSeconds prometheus.Counter
	throttled        *prometheus.GaugeVec
	progressRatio    prometheus.Gauge
	eta              prometheus.Gauge
}

// New returns the series of a run of job, in a registry of their own. runner
// is the label runner ("" while a job has one runner). Every label value of
// every series is known here, so a scrape shows each counter from 0 and a
// rate() over it starts at the first scrape.
func New(job, runner string) (*Metrics, error) {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		pool:     newPoolCollector(),
		rateLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backfill_rate_limit_rows_per_second",
			Help: "The job's rate cap in rows per second; 0 when there is none.",
		}),
		throttledSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backfill_throttled_seconds_total",
			Help: "Time the workers waited on the rate limiter or a throttle, added up over the workers.",
		}),
		throttled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "backfill_throttled",
			Help: "1 while the job waits for the signal named by reason, 0 once it does not.",
		}, []string{"reason"}),
		progressRatio: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backfill_progress_ratio",
			Help: "Rows done over the planner's estimate, below 1 until the job ends; -1 without an estimate.",
		}),
		eta: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backfill_eta_seconds",
			Help: "Estimated seconds until the job ends at the recent rate; -1 when unknown.",
		}),
	}
	chunks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "backfill_chunks_processed_total",
		Help: "Chunks by how their attempt ended: done, retried, split or failed.",
	}, []string{"status"})
	m.chunks = child(chunks.WithLabelValues, chunkStatuses)
	rows := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "backfill_rows_total",
		Help: "Rows of committed chunks by what became of them: inserted, skipped, filtered or failed.",
	}, []string{"result"})
	m.rows = child(rows.WithLabelValues, rowResults)
	durations := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "backfill_chunk_duration_seconds",
		Help:    "Time one chunk spent in a stage: read from the source, transform, or write to the destination.",
		Buckets: DurationBuckets,
	}, []string{"stage"})
	m.durations = child(durations.WithLabelValues, stages)
	m.progressRatio.Set(-1)
	m.eta.Set(-1)

	labelled := prometheus.WrapRegistererWith(prometheus.Labels{"job": job, "runner": runner}, m.registry)
	for _, c := range []prometheus.Collector{
		m.pool, chunks, rows, durations, m.rateLimit, m.throttledSeconds, m.throttled, m.progressRatio, m.eta,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := labelled.Register(c); err != nil {
			return nil, fmt.Errorf("register the metrics of job %q: %w", job, err)
		}
	}
	return m, nil
}

// child returns the series of a vector for each of its label's values.
func child[V ~string, S any](withLabelValues func(...string) S, values []V) map[V]S {
	series := make(map[V]S, len(values))
	for _, v := range values {
		series[v] = withLabelValues(string(v))
	}
	return series
}

// Gatherer is the run's registry, for an HTTP handler or a test.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.registry }

// ReadPoolFrom makes the pool's gauges read source at each scrape (once per
// scrape, so the four figures are of one instant). Until it is called, or
// after it is called with nil, they are 0. The runner calls it again when it
// builds a new pool.
func (m *Metrics) ReadPoolFrom(source func() PoolStats) {
	m.pool.source.Store(&source)
}

// ObserveChunk counts one chunk's attempt: its outcome, the durations of
// the stages that were measured and, when it committed (ChunkDone), its
// rows: an attempt that did not commit wrote none of the run's rows.
func (m *Metrics) ObserveChunk(c Chunk) {
	if counter, ok := m.chunks[c.Status]; ok {
		counter.Inc()
	}
	m.ObserveStage(StageRead, c.Read)
	m.ObserveStage(StageTransform, c.Transform)
	m.ObserveStage(StageWrite, c.Write)
	if c.Status == ChunkDone {
		m.AddRows(c.Rows)
	}
}

// AddRows counts rows committed apart from a chunk that is done: a piece
// of a chunk split in several, or failed rows tried again.
func (m *Metrics) AddRows(r Rows) {
	m.rows[rowsInserted].Add(float64(r.Inserted))
	m.rows[rowsSkipped].Add(float64(r.Skipped))
	m.rows[rowsFiltered].Add(float64(r.Filtered))
	m.rows[rowsFailed].Add(float64(r.Failed))
}

// ObserveStage records how long one chunk spent in a stage, for a stage
// measured apart from the rest of its chunk (the read happens in the
// paginator, before a worker takes the chunk). A duration of zero or less
// is not observed.
func (m *Metrics) ObserveStage(s Stage, d time.Duration) {
	if observer, ok := m.durations[s]; ok && d > 0 {
		observer.Observe(d.Seconds())
	}
}

// SetRate sets the rate cap in rows per second; 0 is no cap.
func (m *Metrics) SetRate(rowsPerSecond float64) { m.rateLimit.Set(rowsPerSecond) }

// AddThrottled adds time a worker waited on the rate limiter or a throttle.
func (m *Metrics) AddThrottled(d time.Duration) {
	if d > 0 {
		m.throttledSeconds.Add(d.Seconds())
	}
}

// SetThrottled says whether the job waits for the signal reason. reason is
// a signal's short name ("replica_lag", "manual"), never the message an
// operator reads: each distinct value is a series of its own.
func (m *Metrics) SetThrottled(reason string, throttled bool) {
	v := 0.0
	if throttled {
		v = 1
	}
	m.throttled.WithLabelValues(reason).Set(v)
}

// SetProgress sets the progress ratio (rows done over the estimate; -1
// without one; 1 once the job has ended) and the ETA (negative when
// unknown, shown as -1).
func (m *Metrics) SetProgress(ratio float64, eta time.Duration) {
	m.progressRatio.Set(ratio)
	if eta < 0 {
		m.eta.Set(-1)
		return
	}
	m.eta.Set(eta.Seconds())
}

// poolCollector reads the pool's gauges from the runner's function when
// scraped, so they are as fresh as the scrape and cost nothing between
// scrapes.
type poolCollector struct {
	source                        atomic.Pointer[func() PoolStats]
	size, busy, pending, capacity *prometheus.Desc
}

func newPoolCollector() *poolCollector {
	return &poolCollector{
		size:     prometheus.NewDesc("backfill_pool_size", "Workers in the pool.", nil, nil),
		busy:     prometheus.NewDesc("backfill_pool_busy", "Workers inside a chunk.", nil, nil),
		pending:  prometheus.NewDesc("backfill_pool_in_pending", "Chunks read and waiting in the input channel for a worker.", nil, nil),
		capacity: prometheus.NewDesc("backfill_pool_in_capacity", "The input channel's size in chunks.", nil, nil),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.size
	ch <- c.busy
	ch <- c.pending
	ch <- c.capacity
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	var s PoolStats
	if source := c.source.Load(); source != nil && *source != nil {
		s = (*source)()
	}
	ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(s.Size))
	ch <- prometheus.MustNewConstMetric(c.busy, prometheus.GaugeValue, float64(s.Busy))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(s.Capacity))
}
