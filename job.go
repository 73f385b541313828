package backfill

import (
	"cmp"
	"math"
	"time"

	"github.com/rs/zerolog"

	"github.com/backfill/backfill/catalog"
	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/progress"
	"github.com/backfill/backfill/retry"
	"github.com/backfill/backfill/transform"
)

// Defaults, named so the CLI's help and the library agree.
const (
	// DefaultChunkSize is the fixed size of a job given no chunk size while
	// it has a rate cap, and the smallest size of one sized by time.
	DefaultChunkSize = 1000
	// MaxTimedChunkSize is the largest chunk of a job sized by time: it
	// bounds the rows in memory at MaxTimedChunkSize × (queue depth +
	// workers), and keeps one chunk one short statement.
	MaxTimedChunkSize = 50000
	// TimedChunksMemory bounds the memory the chunks of a job sized by time
	// take at once (those queued, those being written and the page being
	// read): each chunk is kept to its share by the bytes its rows have
	// taken, so wide rows make smaller chunks rather than a larger process.
	// 12 MiB, with the command's 34 MiB memory limit, keeps a straight
	// copy's peak RSS under 48 MiB at any table size: the binary's own
	// pages take about 15 MiB of it. At 16 MiB the peak of a 10,000,000-row
	// copy reached 50–51 MiB; the time-sized chunks (about 10,000 rows of
	// the benchmark's table) fit either share (BENCHMARKS.md).
	TimedChunksMemory = 12 << 20
	// DefaultTargetChunkTime is how long a chunk's write should take when
	// chunks are sized by time, as pt-online-schema-change's --chunk-time
	// and spirit's target-chunk-time default to.
	DefaultTargetChunkTime = 500 * time.Millisecond
	DefaultWorkers         = 8
	// DefaultAutoWorkers is the most workers --rate auto uses unless told
	// more: one worker, reading its next chunk only once its last is
	// written, keeps one of the job's sessions busy at a time. On two
	// cores beside pgbench it copied as fast as the pool --rate auto sized
	// up to eight, at a third of the cost to the workload's 95th-percentile
	// latency (BENCHMARKS.md, issue 12); a server with cores to spare is
	// given more with --workers.
	DefaultAutoWorkers = 1
	// WorkersLimit is the most workers a job may have, each holding a
	// destination connection.
	WorkersLimit = 256
	// DefaultMinWorkers and DefaultMaxWorkers bound the pool of a job that
	// autoscales (Job.Autoscale).
	DefaultMinWorkers       = 1
	DefaultMaxWorkers       = 32
	DefaultQueueDepth       = 4
	DefaultRate             = 1000.0 // rows per second
	DefaultProgressInterval = 30 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultStatementTimeout = 30 * time.Second
	DefaultLockTimeout      = 5 * time.Second
	// DefaultLeaseTimeout is how long a runner's lease on a partition
	// lasts unrenewed; it renews it every third of that.
	DefaultLeaseTimeout = 30 * time.Second
	// MaxPartitions bounds Job.Partitions: each is a row of the state
	// schema and a claim now and then, not a connection.
	MaxPartitions = 10000
	// DefaultHeartbeat is how often the runner proves it is alive and
	// reads an operator's requests (pause, a new rate).
	DefaultHeartbeat     = 2 * time.Second
	DefaultMaxRetries    = retry.DefaultMaxRetries
	DefaultMaxFailedRows = 1000
	// DefaultStateSchema is the destination's schema holding job state.
	DefaultStateSchema = checkpoint.DefaultSchema
	// StaleHeartbeat is how old a running job's heartbeat may be before
	// status reports the job as interrupted: its runner is gone.
	StaleHeartbeat = 30 * time.Second
)

// Unlimited as Job.Rate removes the rate cap.
var Unlimited = math.Inf(1)

// Mode says whether Run starts a new job or resumes an existing one.
type Mode int

const (
	// ModeStart runs a new job; an unfinished job of that name is refused.
	ModeStart Mode = iota
	// ModeResume continues an existing job from its checkpoint.
	ModeResume
	// ModeJoin adds a runner to a partitioned job, running or not: it
	// resumes the job as ModeResume does, and is refused for a job of one
	// runner.
	ModeJoin
)

// Job is everything Run needs. Settings declares each setting among its
// fields: its default, its check, its spec file key and flag, and what
// resume does with it. Zero values take the defaults above; on resume,
// zero Rate and Workers keep the values the job last ran with, and a zero
// part of the spec (From, To, Key, Where, ChunkSize, Follow, Columns,
// SkipIf) the stored one.
type Job struct {
	Name string
	Mode Mode
	// SourceURL and DestURL are PostgreSQL connection strings (URL or
	// keyword/value form); PG* environment variables apply as in pgx.
	// An empty DestURL means the source database.
	SourceURL string
	DestURL   string
	// From and To are table names as SQL reads them: `schema.table`,
	// `sales."Order Items"`. Not needed on resume: the job remembers them.
	From string
	To   string
	// Key lists the source key columns (names already unquoted); empty
	// means the source's primary key.
	Key   []string
	Where string // optional SQL predicate over source rows
	// ChunkSize fixes the rows per chunk. 0 sizes chunks by time while the
	// job has no rate cap (TargetChunkTime, from DefaultChunkSize up to
	// MaxTimedChunkSize rows) and fixes them at DefaultChunkSize while it
	// has one; on resume, 0 keeps what the job was started with.
	ChunkSize int
	// TargetChunkTime is how long a chunk's write should take when chunks
	// are sized by time; 0 means DefaultTargetChunkTime.
	TargetChunkTime time.Duration
	Workers         int
	// Autoscale sizes the pool while the job runs, starting from Workers:
	// a worker more while the workers are the bottleneck, one fewer while
	// the reader is, within MinWorkers and MaxWorkers (0: the defaults).
	Autoscale              bool
	MinWorkers, MaxWorkers int
	QueueDepth             int
	// Rate caps rows read per second across all workers: 0 means the
	// default (start) or the job's last rate (resume); Unlimited removes it.
	Rate        float64
	StateSchema string
	// Follow reads to the end of the table as it is when the copy gets
	// there, instead of stopping at the last key seen at job start.
	Follow bool
	// Partitions splits the key range at start into this many ranges of
	// about equal row counts, each read by one runner at a time (a process
	// of Run, on any host): 0 or 1 is one runner for the whole job.
	Partitions int
	// LeaseTimeout is how long a partitioned job's runner may go without
	// renewing its lease on a partition before another runner may take
	// it over; 0 means DefaultLeaseTimeout.
	LeaseTimeout time.Duration
	// MaxRetries bounds the attempts of one chunk or page on transient
	// errors; 0 means DefaultMaxRetries.
	MaxRetries int
	// MaxFailedRows stops the job once more rows than this have failed;
	// 0 means DefaultMaxFailedRows, negative means no limit.
	MaxFailedRows int64
	// RetryFailed, on resume, first tries the recorded failed rows again.
	RetryFailed bool
	// MetricsAddr is the host:port the run serves its metrics on; ""
	// serves none.
	MetricsAddr string
	// AutoRate lets the job set its own rate (--rate auto): it starts low,
	// raises the rate while production feels unloaded, halves it when a
	// throttle signal trips or the probe's latency passes MaxProbeLatency.
	// Rate is then its ceiling (Unlimited or 0: none). It sizes the pool
	// too, from one worker up to Workers, unless Autoscale does.
	AutoRate bool

	// What the job waits for, besides its rate (see package throttle); the
	// zero value of each is its default.
	//
	// Replicas are standbys' connection strings whose replica lag the job
	// waits for; none watches the destination's own standbys in
	// pg_stat_replication. A standby that cannot be read stops the job's
	// commits, as one too far behind does.
	Replicas []string
	// MaxReplicaLag is the lag past which the job waits; 0 means
	// throttle.DefaultMaxReplicaLag.
	MaxReplicaLag time.Duration
	// MaxActiveSessions makes the job wait while the source or the
	// destination has more active sessions than this that are not the
	// job's; CriticalActiveSessions pauses it (Run returns ErrPaused)
	// past that many. 0 switches either off.
	MaxActiveSessions      int
	CriticalActiveSessions int
	// ProbeQuery is run and timed each second on each side, on a
	// connection of its own; "" means throttle.DefaultProbeQuery. The job
	// waits while its latency passes MaxProbeLatency (0: never).
	ProbeQuery      string
	MaxProbeLatency time.Duration
	// ThrottleQuery is the user's own: run each second on ThrottleQueryOn
	// ("destination", the default, or "source"), a true or non-zero first
	// column makes the job wait. Run refuses one that does not run.
	ThrottleQuery   string
	ThrottleQueryOn string

	// Columns maps destination columns to expressions over the source row
	// (see package transform); empty copies same-named columns. SkipIf
	// filters rows out: they are counted as filtered.
	Columns []transform.Mapping
	SkipIf  string
	// Transform, when set, builds the row transform in Go from the tables'
	// columns (transform.FromFunc), instead of Columns and SkipIf.
	Transform func(source, dest []transform.Column) (transform.Transformer, error)

	Logger zerolog.Logger
	// Console, a terminal's, is where Run draws its live progress line;
	// Logger should then write through it, so that log lines print above
	// the line. Without one (nil, or not a terminal's), progress is logged
	// every ProgressInterval.
	Console          *progress.Console
	ProgressInterval time.Duration
	ConnectTimeout   time.Duration
	StatementTimeout time.Duration
	LockTimeout      time.Duration
	DrainTimeout     time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// autoscaleTiming is zero but in tests, which shorten the autoscale
	// controller's minute.
	autoscaleTiming autoscaleTiming
}

// ParseColumnList reads a comma-separated list of column names as SQL reads
// them (`tenant_id, "Order No"`), into the unquoted names Job.Key takes.
func ParseColumnList(s string) ([]string, error) { return catalog.ParseColumnList(s) }

// ParseColumnName reads one column name as SQL reads it, into the unquoted
// name Job.Key and transform.Mapping take.
func ParseColumnName(s string) (string, error) { return catalog.ParseColumnName(s) }

// setDefault sets *v to d when *v is its zero value.
func setDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// fixedChunkSize is the rows per chunk when chunks are not sized by time:
// the job's chunk size, or the default for a job that sizes by time while
// it has a rate cap.
func (j Job) fixedChunkSize() int {
	return cmp.Or(j.ChunkSize, DefaultChunkSize)
}
