package backfill

import (
	"errors"
	"fmt"
	"math"
	"net"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/throttle"
	"github.com/backfill/backfill/transform"
)

// Scope says what a setting is to a job, and so what resume does with it.
type Scope int

const (
	// ScopeTarget settings say where the job is and how to reach it: its
	// name, its databases, its state schema.
	ScopeTarget Scope = iota
	// ScopeSpec settings are what the job copies. They are stored with the
	// job: on resume one not given is taken from the stored spec, and one
	// given differently is refused. They have no default: their zero value
	// is the stored one on resume. The command's start takes their flags;
	// resume reads them from a spec file only.
	ScopeSpec
	// ScopeTuning settings are how the job runs: resume may change them.
	ScopeTuning
	// ScopeResume settings are requests to one resume.
	ScopeResume
)

// Setting declares one of a Job's settings, once: its Job field, its key in
// a job spec file, the backfill command's flag for it, its default, its
// check, and what resume does with it. Run's defaults, its validation, the
// resume's merge with the stored job, the stored spec, and the command's
// flags and spec file reading all come from these declarations (Settings).
// Only Settings makes them: the rules behind Default and Give are its.
type Setting struct {
	// Field is the Job field, as messages name it ("Job.Workers").
	Field string
	// Key is its key in a job spec file: "workers", or "source.table"
	// under a mapping; "" when a spec file cannot give it.
	Key string
	// Flag is the command's flag for it ("workers"), "" for none; Usage
	// its help, where a `WORD` names the value and a Job field (Job.Rate)
	// stands for that field's flag; DefaultText the default as the help
	// says it, when the default value does not say it.
	Flag, Usage, DefaultText string
	// Env is the environment variable the command falls back to after the
	// flag and the spec file; "" for none.
	Env string
	// Repeated says the flag of a list may be given more than once, a value
	// each (--replica A --replica B).
	Repeated bool
	// FromText says the flag takes text, which Give reads as the spec
	// file's key would give it (--rate auto:5000), whatever the Job
	// field's type.
	FromText bool
	Scope    Scope
	// Stored is its name in the stored spec (ScopeSpec), which a refused
	// resume names.
	Stored string

	value settingValue
}

// Default is the setting's default as the command shows it, of the Job
// field's type; the zero value when it has none.
func (s Setting) Default() any { return s.value.defaultValue() }

// Give sets the value a user gave for the setting (a flag, a spec file's
// key) in j, whose Mode is set. v has the Job field's type; a zero value,
// which the Job reads as "not given", is turned into the value it means
// (a rate of 0 is Unlimited) or refused. A setting read FromText takes its
// text too (Job.Rate: "auto:5000", or a Rate). The error, wrapping
// ErrInvalidJob, names the setting as its Job field. Give panics when v has
// another type.
func (s Setting) Give(j *Job, v any) error { return s.value.give(j, v) }

// Settings declares every setting of a Job, in the order the command's
// help lists them.
func Settings() []Setting {
	return []Setting{
		declare(Setting{Key: "source.url", Flag: "source", Env: "BACKFILL_SOURCE", Scope: ScopeTarget,
			Usage: "source database `URL` (default: the spec file's source.url, $BACKFILL_SOURCE, then the PG* variables)"},
			typed[string]{field: func(j *Job) *string { return &j.SourceURL }}),
		declare(Setting{Key: "dest.url", Flag: "dest", Env: "BACKFILL_DEST", Scope: ScopeTarget,
			Usage: "destination database `URL` (default: the spec file's dest.url, $BACKFILL_DEST, then the source)"},
			typed[string]{field: func(j *Job) *string { return &j.DestURL }, def: func(j Job) string { return j.SourceURL }}),
		declare(Setting{Key: "job", Flag: "job", Scope: ScopeTarget, Usage: "job `NAME`, the key of its checkpoint"},
			typed[string]{field: func(j *Job) *string { return &j.Name }, required: always, check: checkJobName}),
		declare(Setting{Key: "state_schema", Flag: "state-schema", Scope: ScopeTarget, Usage: "`SCHEMA` in the destination holding job state"},
			typed[string]{field: func(j *Job) *string { return &j.StateSchema }, def: constant(DefaultStateSchema)}),

		declare(Setting{Key: "source.table", Flag: "from", Scope: ScopeSpec,
			Usage: "source `TABLE` (schema.table; quote mixed case: 'sales.\"Order Items\"')"},
			typed[string]{field: func(j *Job) *string { return &j.From }, spec: func(s *Spec) *string { return &s.From }, required: onStart}),
		declare(Setting{Key: "dest.table", Flag: "to", Scope: ScopeSpec, Usage: "destination `TABLE`"},
			typed[string]{field: func(j *Job) *string { return &j.To }, spec: func(s *Spec) *string { return &s.To }, required: onStart}),
		declare(Setting{Key: "source.key", Flag: "key", Scope: ScopeSpec, Usage: "source key `COL[,COL…]` to page by (default: the primary key)"},
			typed[[]string]{field: func(j *Job) *[]string { return &j.Key }, spec: func(s *Spec) *[]string { return &s.Key },
				text: func(k []string) string { return strings.Join(k, ",") }}),
		declare(Setting{Key: "source.where", Flag: "where", Scope: ScopeSpec, Usage: "SQL `PREDICATE` over source rows: only matching rows are copied"},
			typed[string]{field: func(j *Job) *string { return &j.Where }, spec: func(s *Spec) *string { return &s.Where }, text: quoted}),
		declare(Setting{Key: "chunk_size", Flag: "chunk-size", Scope: ScopeSpec, Usage: "fixed rows per chunk (`N`)",
			DefaultText: fmt.Sprintf("sized by time (Job.TargetChunkTime) between %d and %d rows with Job.Rate 0, %d with a cap",
				DefaultChunkSize, MaxTimedChunkSize, DefaultChunkSize)},
			// a resume keeps the stored size: a job stored before chunks were
			// sized by time has the size it ran with (1000 by default)
			typed[int]{field: func(j *Job) *int { return &j.ChunkSize }, spec: func(s *Spec) *int { return &s.ChunkSize }, text: chunkSizeText,
				givenZero: refuse[int]("must be a positive number of rows"),
				check:     within(0, "must be a positive number of rows", 100000, "at most 100000 rows, so one chunk stays one short statement")}),
		declare(Setting{Key: "partitions", Flag: "partitions", Scope: ScopeSpec,
			Usage:       "split the key range into `N` partitions of about equal rows, each read by one runner at a time: more runners join with backfill join",
			DefaultText: "1: one runner"},
			typed[int]{field: func(j *Job) *int { return &j.Partitions }, spec: func(s *Spec) *int { return &s.Partitions },
				givenZero: refuse[int]("must be at least 1"),
				check:     within(0, "must be at least 1", MaxPartitions, fmt.Sprintf("at most %d", MaxPartitions))}),
		declare(Setting{Key: "follow", Flag: "follow", Scope: ScopeSpec,
			Usage: "read to the table's end as it is when the copy gets there, instead of the last key at start"},
			typed[bool]{field: func(j *Job) *bool { return &j.Follow }, spec: func(s *Spec) *bool { return &s.Follow }}),
		// the expression transform is one thing: resume takes both halves
		// from the stored spec, or neither
		declare(Setting{Key: "columns", Scope: ScopeSpec},
			typed[[]transform.Mapping]{field: func(j *Job) *[]transform.Mapping { return &j.Columns },
				spec: func(s *Spec) *[]transform.Mapping { return &s.Columns }, text: mappingsText, keepIf: noTransformGiven}),
		declare(Setting{Key: "skip_if", Scope: ScopeSpec},
			typed[string]{field: func(j *Job) *string { return &j.SkipIf }, spec: func(s *Spec) *string { return &s.SkipIf }, text: quoted,
				keepIf: noTransformGiven}),

		declare(Setting{Key: "workers", Flag: "workers", Scope: ScopeTuning,
			Usage: "concurrent writers (`N`); under --rate auto, the most it uses, and 1 unless given"},
			typed[int]{field: func(j *Job) *int { return &j.Workers }, def: defaultWorkers, kept: func(r checkpoint.Job) int { return r.Workers },
				givenZero: refuse[int]("must be at least 1"), check: workerCount}),
		declare(Setting{Key: "autoscale", Flag: "autoscale", Scope: ScopeTuning,
			Usage: "size the pool by the bottleneck while the job runs, from Job.Workers, between Job.MinWorkers and Job.MaxWorkers"},
			typed[bool]{field: func(j *Job) *bool { return &j.Autoscale }}),
		declare(Setting{Key: "min_workers", Flag: "min-workers", Scope: ScopeTuning, Usage: "fewest workers Job.Autoscale keeps (`N`)",
			DefaultText: fmt.Sprint(DefaultMinWorkers)},
			typed[int]{field: func(j *Job) *int { return &j.MinWorkers }, def: autoscaled(DefaultMinWorkers),
				givenZero: refuse[int]("must be at least 1"), check: workerCount, against: onlyAutoscaled}),
		declare(Setting{Key: "max_workers", Flag: "max-workers", Scope: ScopeTuning, Usage: "most workers Job.Autoscale adds (`N`)",
			DefaultText: fmt.Sprint(DefaultMaxWorkers)},
			typed[int]{field: func(j *Job) *int { return &j.MaxWorkers }, def: autoscaled(DefaultMaxWorkers),
				givenZero: refuse[int]("must be at least 1"), check: workerCount, against: func(most int, j Job) string {
					if problem := onlyAutoscaled(most, j); problem != "" {
						return problem
					}
					if most < j.MinWorkers {
						return fmt.Sprintf("below Job.MinWorkers %d", j.MinWorkers)
					}
					return ""
				}}),
		declare(Setting{Key: "queue_depth", Flag: "queue-depth", Scope: ScopeTuning, Usage: "chunks read ahead of the workers (`N`)"},
			typed[int]{field: func(j *Job) *int { return &j.QueueDepth }, def: constant(DefaultQueueDepth), check: below(1, "must be at least 1")}),
		withAutoRate(declare(Setting{Key: "rate", Flag: "rate", FromText: true, Scope: ScopeTuning,
			Usage: "cap in `ROWS_PER_S` across all workers; 0 for none; auto, or auto:MAX, lets the job find the rate production " +
				"tolerates (see Job.MaxProbeLatency)"},
			typed[float64]{field: func(j *Job) *float64 { return &j.Rate }, def: constant(DefaultRate), kept: func(r checkpoint.Job) float64 {
				if r.Rate == 0 {
					return Unlimited
				}
				return r.Rate
			}, givenZero: func(r *float64) string { *r = Unlimited; return "" }, check: func(r float64, _ Mode) string {
				if r < 0 || math.IsNaN(r) {
					return "must be rows per second, not negative"
				}
				return ""
			}})),
		declare(Setting{Key: "target_chunk_time", Flag: "target-chunk-time", Scope: ScopeTuning,
			Usage: "how long a chunk's write should take when chunks are sized by time (no Job.ChunkSize, no rate cap)"},
			typed[time.Duration]{field: func(j *Job) *time.Duration { return &j.TargetChunkTime }, def: constant(DefaultTargetChunkTime),
				givenZero: refuse[time.Duration]("must be a positive duration"), check: below[time.Duration](0, "must be a positive duration")}),
		declare(Setting{Key: "progress_interval", Flag: "progress-interval", Scope: ScopeTuning, Usage: "how often to log progress when stderr is not a terminal, which gets a live progress line instead"},
			typed[time.Duration]{field: func(j *Job) *time.Duration { return &j.ProgressInterval }, def: constant(DefaultProgressInterval)}),
		declare(Setting{Key: "statement_timeout", Flag: "statement-timeout", Scope: ScopeTuning, Usage: "statement_timeout of every connection"},
			typed[time.Duration]{field: func(j *Job) *time.Duration { return &j.StatementTimeout }, def: constant(DefaultStatementTimeout),
				check: below[time.Duration](0, "must not be negative")}),
		declare(Setting{Key: "lock_timeout", Flag: "lock-timeout", Scope: ScopeTuning, Usage: "lock_timeout of every connection"},
			typed[time.Duration]{field: func(j *Job) *time.Duration { return &j.LockTimeout }, def: constant(DefaultLockTimeout),
				check: below[time.Duration](0, "must not be negative")}),
		declare(Setting{Key: "connect_timeout", Flag: "connect-timeout", Scope: ScopeTuning, Usage: "give up connecting after this long"},
			typed[time.Duration]{field: func(j *Job) *time.Duration { return &j.ConnectTimeout }, def: constant(DefaultConnectTimeout),
				check: below[time.Duration](0, "must not be negative")}),
		declare(Setting{Key: "max_retries", Flag: "max-retries", Scope: ScopeTuning,
			Usage: "attempts of one chunk on transient errors (`N`) before the job fails"},
			typed[int]{field: func(j *Job) *int { return &j.MaxRetries }, def: constant(DefaultMaxRetries), check: below(0, "must not be negative")}),
		declare(Setting{Key: "max_failed_rows", Flag: "max-failed-rows", Scope: ScopeTuning,
			Usage: "stop the job once more than `N` rows have failed; -1 for no limit"},
			typed[int64]{field: func(j *Job) *int64 { return &j.MaxFailedRows }, def: constant[int64](DefaultMaxFailedRows),
				givenZero: refuse[int64]("give a positive limit, or -1 for none")}),
		declare(Setting{Key: "lease_timeout", Flag: "lease-timeout", Scope: ScopeTuning,
			Usage: "a partitioned job's runner that has not renewed its lease on a partition for `DURATION` loses it to another runner"},
			typed[time.Duration]{field: func(j *Job) *time.Duration { return &j.LeaseTimeout }, def: constant(DefaultLeaseTimeout),
				check: below[time.Duration](time.Second, "must be at least 1s")}),
		declare(Setting{Key: "metrics_addr", Flag: "metrics-addr", Env: "BACKFILL_METRICS_ADDR", Scope: ScopeTuning,
			Usage: "serve the run's metrics on `HOST:PORT` (default: $BACKFILL_METRICS_ADDR, else none)"},
			typed[string]{field: func(j *Job) *string { return &j.MetricsAddr }, check: func(addr string, _ Mode) string {
				if _, _, err := net.SplitHostPort(addr); err != nil {
					return fmt.Sprintf("must be HOST:PORT (%v)", err)
				}
				return ""
			}}),

		// What the job waits for (throttling.go): tunings, which a resume
		// takes as given again, like the timeouts; none is stored.
		declare(Setting{Key: "replicas", Flag: "replica", Repeated: true, Scope: ScopeTuning,
			Usage: "a standby's connection `URL` whose replica lag the job waits for; repeat for each " +
				"(default: the destination's own standbys, from pg_stat_replication)"},
			typed[[]string]{field: func(j *Job) *[]string { return &j.Replicas }}),
		declare(Setting{Key: "max_replica_lag", Flag: "max-replica-lag", Scope: ScopeTuning,
			Usage: "wait while a standby lags more than this", DefaultText: throttle.DefaultMaxReplicaLag.String()},
			typed[time.Duration]{field: func(j *Job) *time.Duration { return &j.MaxReplicaLag }, check: below[time.Duration](0, "must not be negative")}),
		declare(Setting{Key: "max_active_sessions", Flag: "max-active-sessions", Scope: ScopeTuning,
			Usage: "wait while the source or the destination has more than `N` active sessions not the job's", DefaultText: "off"},
			typed[int]{field: func(j *Job) *int { return &j.MaxActiveSessions }, check: below(0, "must not be negative")}),
		declare(Setting{Key: "critical_active_sessions", Flag: "critical-active-sessions", Scope: ScopeTuning,
			Usage: "pause the job (resumable) once the source or the destination has more than `N` active sessions not the job's", DefaultText: "off"},
			typed[int]{field: func(j *Job) *int { return &j.CriticalActiveSessions }, check: below(0, "must not be negative")}),
		declare(Setting{Key: "probe_query", Flag: "probe-query", Scope: ScopeTuning,
			Usage:       "`SQL` each side runs each second, timed: a cheap read of the application's measures what its users feel",
			DefaultText: throttle.DefaultProbeQuery},
			typed[string]{field: func(j *Job) *string { return &j.ProbeQuery }}),
		declare(Setting{Key: "max_probe_latency", Flag: "max-probe-latency", Scope: ScopeTuning,
			Usage:       "wait while the probe's latency over the last few seconds exceeds this; with Job.Rate auto, the latency it cuts the rate at",
			DefaultText: "off"},
			typed[time.Duration]{field: func(j *Job) *time.Duration { return &j.MaxProbeLatency }, check: below[time.Duration](0, "must not be negative")}),
		declare(Setting{Key: "throttle_query", Flag: "throttle-query", Scope: ScopeTuning,
			Usage: "`SQL` run each second (see Job.ThrottleQueryOn): a true or non-zero first column means wait; refused at start if it does not run"},
			typed[string]{field: func(j *Job) *string { return &j.ThrottleQuery }}),
		declare(Setting{Key: "throttle_query_on", Flag: "throttle-query-on", Scope: ScopeTuning,
			Usage: "`SIDE` Job.ThrottleQuery runs on: destination or source", DefaultText: sideDestination},
			typed[string]{field: func(j *Job) *string { return &j.ThrottleQueryOn }, check: func(on string, _ Mode) string {
				if on != sideDestination && on != sideSource {
					return "must be destination or source"
				}
				return ""
			}}),

		declare(Setting{Flag: "retry-failed", Scope: ScopeResume, Usage: "first try the rows recorded in failed_rows again (after fixing their cause)"},
			typed[bool]{field: func(j *Job) *bool { return &j.RetryFailed }, check: func(retry bool, m Mode) string {
				if retry && m != ModeResume {
					return "only on resume, of a job that has some"
				}
				return ""
			}}),
	}
}

// Rate is a --rate: a fixed cap, or auto under an optional ceiling. The
// Job holds it as Rate and AutoRate.
type Rate = throttle.Rate

// ParseRate reads a --rate: ROWS_PER_S (0 for no cap), auto, or auto:MAX.
func ParseRate(s string) (Rate, error) { return throttle.ParseRate(s) }

// rateValue is the rate's setting: Job.Rate, declared as any float64
// setting, and Job.AutoRate beside it, which the same --rate (or the
// spec's rate) sets: auto is a Rate given as text, or as itself.
type rateValue struct{ *declared[float64] }

// withAutoRate makes the declaration of Job.Rate the rate's, auto
// included.
func withAutoRate(s Setting) Setting {
	s.value = rateValue{s.value.(*declared[float64])}
	return s
}

func (r rateValue) give(j *Job, v any) error {
	var given Rate
	switch v := v.(type) {
	case float64:
		given = Rate{PerSecond: v}
	case Rate:
		given = v
	case string:
		var err error
		if given, err = ParseRate(v); err != nil {
			return kind(ErrInvalidJob, fmt.Errorf("%s: %w", r.name, err))
		}
	default:
		panic(fmt.Sprintf("%s takes a float64, a Rate or its text, given %T", r.name, v))
	}
	// auto's ceiling, like a fixed cap, is none when 0
	if err := r.declared.give(j, given.PerSecond); err != nil {
		return err
	}
	j.AutoRate = given.Auto
	return nil
}

// setDefault: auto without a ceiling has none, rather than the default
// cap.
func (r rateValue) setDefault(j *Job) {
	if j.AutoRate && j.Rate == 0 {
		j.Rate = Unlimited
		return
	}
	r.declared.setDefault(j)
}

// resume keeps the row's rate, auto or not, unless a rate is given.
func (r rateValue) resume(j *Job, given Job, stored Spec, row checkpoint.Job) {
	if given.Rate != 0 || given.AutoRate {
		return
	}
	r.declared.resume(j, given, stored, row)
	if row.AutoRateMax != nil {
		j.AutoRate, j.Rate = true, Unlimited
		if *row.AutoRateMax > 0 {
			j.Rate = *row.AutoRateMax
		}
	}
}

// typed is the half of a Setting that knows its Job field's type T: how to
// reach the field, and the rules the Setting's text does not say.
type typed[T any] struct {
	field func(*Job) *T
	// def gives an unset field its default; nil for none. A setting kept
	// in the job's row (kept) takes it on start only.
	def func(Job) T
	// required says in which modes the field must be set.
	required func(Mode) bool
	// check says what is wrong with a set value, "" when nothing.
	check func(T, Mode) string
	// against says what is wrong with a set value given the job's other
	// settings, "" when nothing; Run's validation asks it, after the
	// defaults.
	against func(T, Job) string
	// givenZero handles a zero value a user gave, which the Job would read
	// as unset: it turns it into the value meant, or says why it cannot be
	// given.
	givenZero func(*T) string
	// spec reaches the stored spec's field (ScopeSpec).
	spec func(*Spec) *T
	// kept is a resumed job's value from its row, where an operator may
	// have changed it (SetRate), when none is given.
	kept func(checkpoint.Job) T
	// keepIf says whether resume keeps the stored value: by default, when
	// the field was not given.
	keepIf func(given Job) bool
	// text shows a value in a refused resume's message; nil is fmt's %v.
	text func(T) string
}

// settingValue is a typed setting with its type erased, for Settings'
// slice and the loops over it.
type settingValue interface {
	defaultValue() any
	give(j *Job, v any) error
	setDefault(j *Job)
	validate(j Job) error
	resume(j *Job, given Job, stored Spec, row checkpoint.Job)
	store(j Job, s *Spec)
	difference(stored, given Spec) string
}

// declare completes a setting's text with the names its accessors reach.
func declare[T any](s Setting, t typed[T]) Setting {
	s.Field = fieldOf(t.field).Name
	if t.spec != nil {
		s.Stored, _, _ = strings.Cut(fieldOf(t.spec).Tag.Get("json"), ",")
	}
	s.value = &declared[T]{typed: t, name: "Job." + s.Field, stored: s.Stored}
	return s
}

// fieldOf is the field of S that at returns. The declarations name fields
// by accessor, which the compiler checks, and take the name from it rather
// than writing it again beside it.
func fieldOf[S, T any](at func(*S) *T) reflect.StructField {
	var s S
	p := reflect.ValueOf(at(&s)).Pointer()
	v := reflect.ValueOf(&s).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Addr().Pointer() == p && f.Type() == reflect.TypeFor[T]() {
			return v.Type().Field(i)
		}
	}
	panic(fmt.Sprintf("a setting's accessor does not return a field of %T", s))
}

// declared is a typed setting with the names its messages use: its Job
// field as "Job.Workers", and its name in the stored spec.
type declared[T any] struct {
	typed[T]
	name, stored string
}

func (t *declared[T]) defaultValue() any {
	if t.def == nil {
		var zero T
		return zero
	}
	return t.def(Job{})
}

func (t *declared[T]) give(j *Job, v any) error {
	given, ok := v.(T)
	if !ok {
		panic(fmt.Sprintf("%s takes a %T, given %T", t.name, *new(T), v))
	}
	if isZero(given) && t.givenZero != nil {
		if problem := t.givenZero(&given); problem != "" {
			return t.invalid(given, problem)
		}
	}
	if t.check != nil && !isZero(given) {
		if problem := t.check(given, j.Mode); problem != "" {
			return t.invalid(given, problem)
		}
	}
	*t.field(j) = given
	return nil
}

func (t *declared[T]) setDefault(j *Job) {
	if f := t.field(j); isZero(*f) && t.def != nil && (t.kept == nil || j.Mode == ModeStart) {
		*f = t.def(*j)
	}
}

func (t *declared[T]) validate(j Job) error {
	v := *t.field(&j)
	switch {
	case isZero(v):
		if t.required != nil && t.required(j.Mode) {
			return kind(ErrInvalidJob, fmt.Errorf("%s: missing", t.name))
		}
	case t.check != nil && t.check(v, j.Mode) != "":
		return t.invalid(v, t.check(v, j.Mode))
	case t.against != nil:
		if problem := t.against(v, j); problem != "" {
			return t.invalid(v, problem)
		}
	}
	return nil
}

// invalid says what is wrong with value v, naming the field.
func (t *declared[T]) invalid(v T, problem string) error {
	text := fmt.Sprint(v)
	if s, ok := any(v).(string); ok {
		text = fmt.Sprintf("%q", s)
	}
	return kind(ErrInvalidJob, fmt.Errorf("%s %s: %s", t.name, text, problem))
}

func (t *declared[T]) resume(j *Job, given Job, stored Spec, row checkpoint.Job) {
	keep := isZero(*t.field(&given))
	if t.keepIf != nil {
		keep = t.keepIf(given)
	}
	switch {
	case !keep:
	case t.spec != nil:
		*t.field(j) = *t.spec(&stored)
	case t.kept != nil:
		*t.field(j) = t.kept(row)
	}
}

func (t *declared[T]) store(j Job, s *Spec) {
	if t.spec != nil {
		*t.spec(s) = *t.field(&j)
	}
}

func (t *declared[T]) difference(stored, given Spec) string {
	if t.spec == nil {
		return ""
	}
	text := t.text
	if text == nil {
		text = func(v T) string { return fmt.Sprint(v) }
	}
	a, b := text(*t.spec(&stored)), text(*t.spec(&given))
	if a == b {
		return ""
	}
	return fmt.Sprintf("%s: stored %s, given %s", t.stored, a, b)
}

func isZero[T any](v T) bool { return reflect.ValueOf(&v).Elem().IsZero() }

func constant[T any](v T) func(Job) T { return func(Job) T { return v } }

// defaultWorkers is DefaultWorkers, or DefaultAutoWorkers for a job whose
// rate --rate auto sets and whose pool no autoscaler sizes.
func defaultWorkers(j Job) int {
	if j.AutoRate && !j.Autoscale {
		return DefaultAutoWorkers
	}
	return DefaultWorkers
}

func always(Mode) bool    { return true }
func onStart(m Mode) bool { return m == ModeStart }

// refuse is a givenZero that refuses the zero value.
func refuse[T any](problem string) func(*T) string { return func(*T) string { return problem } }

// below is a check that refuses a value below least.
func below[T int | int64 | time.Duration](least T, problem string) func(T, Mode) string {
	return func(v T, _ Mode) string {
		if v < least {
			return problem
		}
		return ""
	}
}

// within is a check that refuses a value below least or above most.
func within(least int, tooFew string, most int, tooMany string) func(int, Mode) string {
	return func(v int, m Mode) string {
		if v > most {
			return tooMany
		}
		return below(least, tooFew)(v, m)
	}
}

func quoted(s string) string { return fmt.Sprintf("%q", s) }

// workerCount checks a number of workers: each holds a destination
// connection.
func workerCount(n int, m Mode) string {
	return within(0, "must be at least 1", WorkersLimit, fmt.Sprintf("at most %d (each holds a destination connection)", WorkersLimit))(n, m)
}

// autoscaled is the default of an autoscale bound: v for a job that
// autoscales, none for one that does not.
func autoscaled(v int) func(Job) int {
	return func(j Job) int {
		if j.Autoscale {
			return v
		}
		return 0
	}
}

// onlyAutoscaled refuses an autoscale bound given to a job that does not
// autoscale, where it would do nothing.
func onlyAutoscaled(_ int, j Job) string {
	if !j.Autoscale {
		return "only with Job.Autoscale"
	}
	return ""
}

// noTransformGiven: a resume given no transform keeps the stored one.
func noTransformGiven(j Job) bool { return len(j.Columns) == 0 && j.SkipIf == "" && j.Transform == nil }

var jobName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

func checkJobName(name string, _ Mode) string {
	if !jobName.MatchString(name) {
		return "a job name is 1-128 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
	}
	return ""
}

// checkGiven checks v as a value given for the Job field named field, as
// Give does: the error names the field.
func checkGiven(field string, v any) error {
	for _, s := range Settings() {
		if s.Field == field {
			var j Job
			return s.Give(&j, v)
		}
	}
	panic("no setting declares Job." + field)
}

// withDefaults gives every unset setting its default.
func (j Job) withDefaults() Job {
	for _, s := range Settings() {
		s.value.setDefault(&j)
	}
	if j.Now == nil {
		j.Now = time.Now
	}
	return j
}

// validate checks the settings, which need no database. It reports every
// problem, each naming the field and what is wrong.
func (j Job) validate() error {
	var errs []error
	for _, s := range Settings() {
		if err := s.value.validate(j); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidJob, errors.Join(errs...))
}

// resumeFrom fills in what a resumed job was not given: its spec from the
// stored one, and the tunings an operator may have changed from its row.
func (j *Job) resumeFrom(stored Spec, row checkpoint.Job) {
	given := *j
	for _, s := range Settings() {
		s.value.resume(j, given, stored, row)
	}
}

// storedSpec is the job's spec as given; the plan resolves its names.
func (j Job) storedSpec() Spec {
	var s Spec
	for _, st := range Settings() {
		st.value.store(j, &s)
	}
	return s
}

// differences lists what changed from s to t, naming each field.
func (s Spec) differences(t Spec) []string {
	var d []string
	for _, st := range Settings() {
		if diff := st.value.difference(s, t); diff != "" {
			d = append(d, diff)
		}
	}
	return d
}
