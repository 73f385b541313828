package backfill

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/throttle"
	"github.com/backfill/backfill/worker"
)

// A run's throttle: the signals of package throttle that the job's
// settings ask for, polled by a Throttler beside the job's heartbeat; the
// workers wait on it before each commit, a critical signal pauses the job,
// and --rate auto sets the limiter from what the signals and probes read.

// The sides a signal reads, as reasons and Job.ThrottleQueryOn name them.
const (
	sideSource      = "source"
	sideDestination = "destination"
)

// autoBaselineSamples is how many probes in a row measure the latency of
// the unloaded server that --rate auto raises its rate against.
const autoBaselineSamples = 5

// autoInterval is how often --rate auto steps: twice a second, so that its
// slow start reaches a server's pace within seconds (1,000 to 256,000 rows/s
// in 4 s), not tens of seconds; the probe's median of five, read each
// second, still says within two or three seconds that the server slows.
const autoInterval = 500 * time.Millisecond

// achievedWindow is how far back --rate auto reads the rate the job
// achieved: two of its steps, so that a rate doubled each step still shows
// as reached (3/4 of it).
const achievedWindow = 2 * autoInterval

// throttling is a run's throttle. Built (newThrottling) before anything
// is written, it has checked the user's throttle query and the probes;
// start runs it.
type throttling struct {
	job  Job
	log  zerolog.Logger
	urls []string // connection strings, scrubbed from what it says

	signals   []throttle.Signal
	throttler *throttle.Throttler
	// heartbeat writes the beats the named replicas read back; nil without
	// Job.Replicas, and in a dry run.
	heartbeat *throttle.Heartbeat
	query     *throttle.Query   // nil without Job.ThrottleQuery
	probes    []*throttle.Probe // each side's, with MaxProbeLatency or --rate auto
	// critical hears once the reason the job must pause rather than wait.
	critical chan string

	rows atomic.Int64 // rows committed in this run, for --rate auto
	// pool is the current pass's worker pool, which --rate auto sizes
	// (AutoConfig.MaxWorkers); nil before the first pass.
	pool atomic.Pointer[worker.Pool]

	mu      sync.Mutex
	reason  string    // what the job waits for, "" for nothing
	since   time.Time // since when, while it waits
	written string    // the reason as the job's row last said it
	metrics throttleMetrics
	auto    *autoRun // while --rate auto sets the rate
	// autoPool says --rate auto sizes the pool: the job's row then keeps
	// the job's count, the most it may use, even once the run has ended;
	// an operator's count or rate ends it.
	autoPool bool
}

// throttleMetrics is what the run's metrics hear of the throttle
// (metrics.Metrics has these methods): whether it waits for each kind of
// signal, and the time the workers spent waiting on it, added up over the
// workers as their waits on the rate limiter are.
type throttleMetrics interface {
	SetThrottled(reason string, throttled bool)
	AddThrottled(d time.Duration)
}

// autoRun is --rate auto at work.
type autoRun struct {
	stop     context.CancelFunc
	done     chan struct{}
	rate     float64 // the rate it set last
	recorded float64 // the rate the job's row says
	// workers is the pool's size it set last while it sizes the pool;
	// zero when it does not (an autoscaled job), or no longer (an
	// operator set the size, or the rate).
	workers int
}

// signalTimeout bounds a signal's connecting and each of its reads: the
// job's statement timeout, or throttle.DefaultTimeout if that is shorter
// (a probe that takes 30 s has said what it has to say long before).
func (j Job) signalTimeout() time.Duration {
	if j.StatementTimeout > 0 {
		return min(j.StatementTimeout, throttle.DefaultTimeout)
	}
	return throttle.DefaultTimeout
}

// newThrottling builds the signals the job's settings ask for, each on a
// connection of its own (read-only, the job's application_name), and
// checks those that can be wrong: the throttle query and the probe must
// run. forRun adds what only a run has: the heartbeat the replicas read
// back and the throttle by hand, which read the job's row.
func newThrottling(ctx context.Context, j Job, log zerolog.Logger, store *checkpoint.Store, forRun bool) (*throttling, error) {
	t := &throttling{job: j, log: log, urls: append([]string{j.SourceURL, j.DestURL}, j.Replicas...), critical: make(chan string, 1)}
	err := t.build(store, forRun)
	if err == nil {
		err = t.validate(ctx)
	}
	if err != nil {
		t.close(ctx)
		return nil, t.scrub(err)
	}
	t.throttler, err = throttle.New(throttle.Config{
		Signals: t.signals, Timeout: j.signalTimeout(), OnChange: t.changed,
		OnNote: func(signal, note string) { log.Warn().Str("signal", signal).Msg(t.scrubText(note)) },
	})
	if err != nil {
		t.close(ctx)
		return nil, err
	}
	return t, nil
}

// build makes the signals.
func (t *throttling) build(store *checkpoint.Store, forRun bool) error {
	j := t.job
	src, err := connConfig(j.SourceURL, j.session(), sideSource)
	if err != nil {
		return err
	}
	dst, err := connConfig(j.DestURL, j.session(), sideDestination)
	if err != nil {
		return err
	}
	timeout := j.signalTimeout()
	readOnly := func(cfg *pgx.ConnConfig) throttle.Connect { return throttle.Dialer(cfg, timeout, throttle.ReadOnly) }
	// a server-wide measure (load) needs reading once when both sides are
	// one server; a probe, once when they are one database
	sides := []struct {
		where string
		cfg   *pgx.ConnConfig
	}{{sideSource, src}, {sideDestination, dst}}
	sameServer := src.Host == dst.Host && src.Port == dst.Port
	both := sideSource + " and " + sideDestination
	add := func(sig throttle.Signal, err error) error {
		if err == nil {
			t.signals = append(t.signals, sig)
		}
		return err
	}

	if len(j.Replicas) > 0 {
		if forRun {
			t.heartbeat, err = throttle.NewHeartbeat(throttle.HeartbeatConfig{
				Connect: throttle.Dialer(dst, timeout, throttle.ReadWrite), Schema: j.StateSchema, Job: j.Name,
				OnError: func(err error) { t.log.Warn().Err(t.scrub(err)).Msg("the replica lag heartbeat failed; trying again") },
			})
			if err != nil {
				return err
			}
		}
		for i, url := range j.Replicas {
			where := fmt.Sprintf("replica %d", i+1)
			cfg, err := connConfig(url, j.session(), where)
			if err != nil {
				return err
			}
			if err := add(throttle.NewReplicaLag(throttle.ReplicaConfig{
				Where: where, Connect: readOnly(cfg), Schema: j.StateSchema, Job: j.Name, MaxLag: j.MaxReplicaLag, Heartbeat: t.heartbeat,
			})); err != nil {
				return err
			}
		}
	} else if err := add(throttle.NewStandbys(throttle.StandbysConfig{Where: sideDestination, Connect: readOnly(dst), MaxLag: j.MaxReplicaLag})); err != nil {
		return err
	}

	if j.MaxActiveSessions > 0 || j.CriticalActiveSessions > 0 {
		for i, side := range sides {
			where := side.where
			if sameServer {
				if i > 0 {
					break
				}
				where = both
			}
			if err := add(throttle.NewLoad(throttle.LoadConfig{
				Where: where, Connect: readOnly(side.cfg), ApplicationName: side.cfg.RuntimeParams["application_name"],
				Max: j.MaxActiveSessions, Critical: j.CriticalActiveSessions,
			})); err != nil {
				return err
			}
		}
	}

	if j.MaxProbeLatency > 0 || j.AutoRate {
		sameDatabase := sameServer && src.Database == dst.Database
		for i, side := range sides {
			where := side.where
			if sameDatabase {
				if i > 0 {
					break
				}
				where = both
			}
			p, err := throttle.NewProbe(throttle.ProbeConfig{Where: where, Connect: readOnly(side.cfg), Query: j.ProbeQuery, MaxLatency: j.MaxProbeLatency})
			if err := add(p, err); err != nil {
				return err
			}
			t.probes = append(t.probes, p)
		}
	}

	if j.ThrottleQuery != "" {
		cfg := dst
		where := sideDestination
		if j.ThrottleQueryOn == sideSource {
			cfg, where = src, sideSource
		}
		if t.query, err = throttle.NewQuery(throttle.QueryConfig{Where: where, Connect: readOnly(cfg), SQL: j.ThrottleQuery}); err != nil {
			return err
		}
		t.signals = append(t.signals, t.query)
	}

	if forRun {
		t.signals = append(t.signals, &byHand{connect: readOnly(dst), store: store, job: j.Name})
	}
	return nil
}

// validate refuses a throttle query or a probe that does not run, with its
// error: a job must not start waiting on a signal that can only fail.
func (t *throttling) validate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.job.signalTimeout())
	defer cancel()
	var errs []error
	if t.query != nil {
		if err := t.query.Validate(ctx); err != nil {
			errs = append(errs, fmt.Errorf("Job.ThrottleQuery does not run: %w", err))
		}
	}
	for _, p := range t.probes {
		if _, err := p.Baseline(ctx, 1); err != nil {
			errs = append(errs, fmt.Errorf("Job.ProbeQuery does not run: %w", err))
		}
	}
	if len(errs) > 0 {
		return refused(errs...)
	}
	return nil
}

// close ends the signals' connections, for a throttle that is not run
// (Throttler.Run closes them when it ends).
func (t *throttling) close(ctx context.Context) {
	for _, s := range t.signals {
		_ = s.Close(ctx)
	}
	if t.heartbeat != nil {
		_ = t.heartbeat.Close(ctx)
	}
}

// wait blocks a worker while the throttle holds (Throttler.Wait), and
// counts the time it waited in the metrics.
func (t *throttling) wait(ctx context.Context) error {
	if throttled, _, _ := t.throttler.State(); !throttled {
		return nil
	}
	began := time.Now()
	err := t.throttler.Wait(ctx)
	t.mu.Lock()
	m := t.metrics
	t.mu.Unlock()
	if m != nil {
		m.AddThrottled(time.Since(began))
	}
	return err
}

// committed counts a chunk's rows, for the rate --rate auto achieves.
func (t *throttling) committed(rows int) { t.rows.Add(int64(rows)) }

// changed hears every change of the Throttler's state: it logs it, keeps
// the reason for the job's row and the metrics, and sends a critical one
// to pause the job. The wait for the signals' first readings is not a
// reason worth saying.
func (t *throttling) changed(st throttle.Status) {
	reason := ""
	if st.Throttled && !(len(st.Tripped) == 1 && st.Tripped[0].Kind == "") {
		reason = t.scrubText(st.Reason)
	}
	now := time.Now()
	t.mu.Lock()
	was, since, m := t.reason, t.since, t.metrics
	t.reason = reason
	switch {
	case reason != "" && was == "":
		t.since = now
	case reason == "":
		t.since = time.Time{}
	}
	t.mu.Unlock()

	if m != nil {
		publishThrottle(m, st, reason != "")
	}
	switch {
	case st.Critical:
		t.log.Warn().Str("throttle_reason", reason).Msg("critical: pausing the job")
		select {
		case t.critical <- reason:
		default: // already said
		}
	case reason != "":
		t.log.Info().Str("throttle_reason", reason).Msg("throttled: waiting before each commit")
	case was != "":
		t.log.Info().Str("after", now.Sub(since).Round(time.Millisecond).String()).Msg("throttle released")
	}
}

// publishThrottle sets the throttled gauge of each kind of signal.
func publishThrottle(m throttleMetrics, st throttle.Status, throttled bool) {
	tripped := map[throttle.Kind]bool{}
	for _, tr := range st.Tripped {
		if throttled && tr.Kind != "" {
			tripped[tr.Kind] = true
		}
	}
	for _, k := range []throttle.Kind{throttle.KindReplicaLag, throttle.KindLoad, throttle.KindProbeLatency, throttle.KindThrottleQuery, throttle.KindManual} {
		m.SetThrottled(string(k), tripped[k])
	}
}

// observeThrottle shows the run's throttle to its observer: the metrics
// hear what it waits for and how long the workers wait on it, and the
// progress line says why.
func (r *runner) observeThrottle() {
	r.throttle.useMetrics(r.obs.metrics)
	r.obs.throttled = r.throttle.waitingFor
}

// useMetrics makes the throttle tell m what it waits for and how long the
// workers wait, from now on.
func (t *throttling) useMetrics(m throttleMetrics) {
	t.mu.Lock()
	t.metrics = m
	t.mu.Unlock()
	publishThrottle(m, t.throttler.Status(), t.waitingFor() != "")
}

// waitingFor is what the job waits for now, "" for nothing: the reason
// status, the progress line and the metrics show.
func (t *throttling) waitingFor() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reason
}

// pauseWhenCritical returns, once a signal passes its critical limit, the
// error that pauses the job (ErrPaused); nil when ctx ends first.
func (t *throttling) pauseWhenCritical(ctx context.Context) error {
	select {
	case reason := <-t.critical:
		return fmt.Errorf("%w: job %q: %s", ErrPaused, t.job.Name, reason)
	case <-ctx.Done():
		return nil
	}
}

func (t *throttling) scrub(err error) error { return scrub(err, t.urls...) }

func (t *throttling) scrubText(s string) string {
	if s == "" {
		return s
	}
	return t.scrub(errors.New(s)).Error()
}

// startThrottle runs the run's throttle until the returned stop: the
// heartbeat the replicas read, the Throttler, and --rate auto, whose
// baseline is measured first, before any worker loads the servers. It
// records on the job's row whether the rate is auto, and runs before the
// runner's heartbeat, on the control connection.
func (r *runner) startThrottle(ctx context.Context, limiter *rate.Limiter) (stop func(), err error) {
	t, j := r.throttle, r.job
	var autoMax *float64
	if j.AutoRate {
		ceiling := storedRate(j.Rate)
		autoMax = &ceiling
	}
	// a partitioned job's row is every runner's, and its rate fixed
	if j.Partitions <= 1 {
		if err := r.withControl(ctx, func(c *pgx.Conn) error { return r.store.SetRateMode(ctx, c, j.Name, r.gen, autoMax) }); err != nil {
			return func() {}, err
		}
	}
	// the baseline first, on the probes' sessions, which the Throttler
	// uses once it runs
	var baseline time.Duration
	if j.AutoRate {
		for _, p := range t.probes {
			b, err := p.Baseline(ctx, autoBaselineSamples)
			if err != nil {
				return func() {}, t.scrub(fmt.Errorf("measure the probe's baseline for --rate auto: %w", err))
			}
			baseline = max(baseline, b)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() {
		t.stopAuto()
		cancel()
		wg.Wait()
	}
	if t.heartbeat != nil {
		wg.Go(func() { _ = t.heartbeat.Run(runCtx) })
	}
	wg.Go(func() { _ = t.throttler.Run(runCtx) })
	if j.AutoRate {
		if err := r.startAuto(runCtx, limiter, baseline); err != nil {
			stop()
			return func() {}, err
		}
	}
	return stop, nil
}

// startAuto runs --rate auto from the probes' baseline: it sets the
// limiter from then on.
func (r *runner) startAuto(ctx context.Context, limiter *rate.Limiter, baseline time.Duration) error {
	t := r.throttle
	ceiling := storedRate(r.job.Rate)
	cfg := throttle.AutoConfig{Max: ceiling, Baseline: baseline, Limit: r.job.MaxProbeLatency}
	if !r.job.Autoscale {
		// the job's workers are the most it uses; the autoscaler, when on,
		// sizes the pool by its own measure
		cfg.MaxWorkers = r.workers
	}
	auto, err := throttle.NewAutoRate(cfg)
	if err != nil {
		return err
	}
	workers := auto.Workers()
	if workers == 0 {
		workers = r.workers // the autoscaler's to size
	}
	r.log.Info().Float64("rate", auto.Rate()).Float64("max", ceiling).Int("workers", workers).Int("max_workers", cfg.MaxWorkers).
		Str("probe_baseline", baseline.String()).Str("max_probe_latency", r.job.MaxProbeLatency.String()).
		Msg("--rate auto: starting low, raising the rate and adding workers while production feels unloaded (max 0: none)")
	// the start rate holds before any worker starts, not once Run has
	// got round to it
	r.setAutoLimit(limiter, rate.Limit(auto.Rate()))
	autoCtx, cancel := context.WithCancel(ctx)
	run := &autoRun{stop: cancel, done: make(chan struct{}), rate: auto.Rate(), workers: auto.Workers()}
	t.mu.Lock()
	t.auto, t.autoPool = run, run.workers > 0
	t.mu.Unlock()
	go func() {
		defer close(run.done)
		_ = auto.Run(autoCtx, autoInterval, t.observer(), func(c throttle.RateChange) {
			r.setAutoLimit(limiter, rate.Limit(c.To))
			resized := c.FromWorkers != 0 && c.ToWorkers != c.FromWorkers && r.autoResize(c.FromWorkers, c.ToWorkers)
			t.mu.Lock()
			run.rate = c.To
			t.mu.Unlock()
			if c.From == 0 {
				return // the start, logged above
			}
			ev := r.log.Info().Float64("from", c.From).Float64("to", c.To)
			msg := "rate changed by --rate auto"
			if resized {
				ev = ev.Int("from_workers", c.FromWorkers).Int("to_workers", c.ToWorkers)
				msg = "workers changed by --rate auto"
				if c.To != c.From {
					msg = "rate and workers changed by --rate auto"
				}
			} else if c.To == c.From {
				return // a worker change an operator's came before
			}
			ev.Str("why", t.scrubText(c.Why)).Msg(msg)
		})
	}()
	return nil
}

// autoResize sizes the current pass's pool from what --rate auto set last
// to workers, unless an operator set its size meanwhile: --rate auto
// then no longer sizes it. It reports whether it resized the pool.
func (r *runner) autoResize(from, workers int) bool {
	t := r.throttle
	t.mu.Lock()
	defer t.mu.Unlock()
	run := t.auto
	if run == nil || run.workers != from {
		return false
	}
	if pool := t.pool.Load(); pool != nil && !pool.ResizeFrom(from, workers) {
		t.stopSizingLocked() // someone else sized it since: theirs now
		return false
	}
	run.workers = workers
	r.resized(workers)
	return true
}

// autoWorkers is the pool's size --rate auto set last, or zero when it
// does not size the pool.
func (t *throttling) autoWorkers() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.auto == nil {
		return 0
	}
	return t.auto.workers
}

// stopSizing ends --rate auto's sizing of the pool, when an operator set
// its size; the rate it goes on setting. It reports whether it was sizing.
func (t *throttling) stopSizing() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stopSizingLocked()
}

// stopSizingLocked is stopSizing with t.mu held.
func (t *throttling) stopSizingLocked() bool {
	was := t.autoPool
	t.autoPool = false
	if t.auto != nil {
		t.auto.workers = 0
	}
	return was
}

// poolIsAuto says --rate auto sizes the pool, or did until the run ended.
func (t *throttling) poolIsAuto() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.autoPool
}

// observer is what --rate auto decides on: the Throttler's state, the
// worst of the probes' latencies and the rate achieved lately.
func (t *throttling) observer() func() throttle.Observation {
	type sample struct {
		at   time.Time
		rows int64
	}
	var recent []sample
	achieved := func() float64 {
		now := time.Now()
		recent = append(recent, sample{now, t.rows.Load()})
		for len(recent) > 1 && now.Sub(recent[1].at) >= achievedWindow {
			recent = recent[1:]
		}
		first := recent[0]
		if now.Sub(first.at) < achievedWindow/2 {
			return 0 // not known yet
		}
		return float64(recent[len(recent)-1].rows-first.rows) / now.Sub(first.at).Seconds()
	}
	observers := make([]func() throttle.Observation, len(t.probes))
	for i, p := range t.probes {
		observers[i] = throttle.Observer(t.throttler, p, nil)
	}
	return func() throttle.Observation {
		o := observers[0]()
		for _, other := range observers[1:] {
			o.Latency = max(o.Latency, other().Latency)
		}
		o.RowsPerSecond = achieved()
		if t.autoWorkers() == 0 {
			o.Workers = -1 // not --rate auto's to size (an operator's, or the autoscaler's)
		} else if pool := t.pool.Load(); pool != nil {
			o.Workers = pool.Target()
		}
		return o
	}
}

// autoOn says --rate auto sets the rate: the heartbeat then leaves the
// limiter alone.
func (t *throttling) autoOn() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.auto != nil
}

// stopAuto ends --rate auto, which leaves the limiter as it last set it.
func (t *throttling) stopAuto() {
	t.mu.Lock()
	run := t.auto
	t.auto = nil
	t.mu.Unlock()
	if run != nil {
		run.stop()
		<-run.done
	}
}

// throttleBeat is the throttle's part of each heartbeat, on the control
// connection: it ends --rate auto once an operator fixed the rate, and
// records on the job's row what changed since the last beat: the rate auto
// set, and what the job waits for. A write that fails is tried again at
// the next beat; the heartbeat itself notices a lost session or a newer
// runner.
func (r *runner) throttleBeat(ctx context.Context, req checkpoint.Requests) {
	t := r.throttle
	if t.autoOn() && !req.AutoRate {
		t.stopAuto()
		ev, msg := r.log.Info().Float64("rate", req.Rate), "rate fixed by request: --rate auto ends (0: no cap)"
		if pool := t.pool.Load(); t.stopSizing() && pool != nil {
			ev, msg = ev.Int("workers", pool.Target()), msg+"; the pool keeps the size it set"
		}
		ev.Msg(msg)
	}
	t.mu.Lock()
	reason, written, run := t.reason, t.written, t.auto
	var autoRate, recorded float64
	if run != nil {
		autoRate, recorded = run.rate, run.recorded
	}
	t.mu.Unlock()

	if run != nil && autoRate != recorded {
		if err := r.store.RecordAutoRate(ctx, r.control, r.job.Name, r.gen, autoRate); err != nil {
			r.log.Warn().Err(err).Msg("could not record the rate --rate auto set; trying again at the next heartbeat")
		} else {
			t.mu.Lock()
			run.recorded = autoRate
			t.mu.Unlock()
		}
	}
	if reason != written {
		if err := r.store.SetThrottled(ctx, r.control, r.job.Name, r.gen, reason); err != nil {
			r.log.Warn().Err(err).Msg("could not record the throttle; trying again at the next heartbeat")
			return
		}
		t.mu.Lock()
		t.written = reason
		t.mu.Unlock()
	}
}

// checkAll reads every signal once, as a dry run reports them.
// stateSchema says whether the destination has the state schema, without
// which a replica has no heartbeat to show yet.
func (t *throttling) checkAll(ctx context.Context, stateSchema bool) []DryRunSignal {
	var out []DryRunSignal
	for _, res := range t.throttler.CheckAll(ctx) {
		s := DryRunSignal{Signal: res.Signal, Kind: string(res.Kind), Throttled: res.Reading.Throttle, Critical: res.Reading.Critical,
			Reading: t.scrubText(res.Reading.Text), Note: t.scrubText(res.Reading.Note)}
		var pgErr *pgconn.PgError
		switch {
		case res.Err == nil:
		case res.Kind == throttle.KindReplicaLag && !stateSchema && errors.As(res.Err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000"):
			s.Reading = fmt.Sprintf("%s: reachable; its lag is read from the job's heartbeat, which the run writes in state schema %s",
				strings.TrimPrefix(res.Signal, "replica lag on "), t.job.StateSchema)
		default:
			// a run waits on a signal it cannot read
			s.Throttled, s.Error = true, t.scrub(res.Err).Error()
		}
		out = append(out, s)
	}
	return out
}

// byHand is the throttle an operator sets with SetThrottle, read from the
// job's row at each poll on a connection of its own, so that it holds
// and lets go within a second or two.
type byHand struct {
	throttle.Manual
	connect throttle.Connect
	store   *checkpoint.Store
	job     string
	conn    *pgx.Conn
}

// Check implements throttle.Signal.
func (b *byHand) Check(ctx context.Context) (throttle.Reading, error) {
	if b.conn == nil || b.conn.IsClosed() {
		conn, err := b.connect(ctx)
		if err != nil {
			return throttle.Reading{}, err
		}
		b.conn = conn
	}
	on, err := b.store.ThrottleRequested(ctx, b.conn, b.job)
	if err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			_ = b.Close(ctx) // the session may be broken: connect again
		}
		return throttle.Reading{}, err
	}
	b.Set(on)
	return b.Manual.Check(ctx)
}

// Close implements throttle.Signal.
func (b *byHand) Close(ctx context.Context) error {
	if b.conn == nil {
		return nil
	}
	err := b.conn.Close(context.WithoutCancel(ctx))
	b.conn = nil
	return err
}
