// Package backfill copies and transforms rows from one PostgreSQL table into
// another, in chunks, resumably, at a controlled rate.
//
// The pipeline is a map of the packages: the paginator reads the source in
// key order into a bounded channel; workers transform each chunk and write it
// with INSERT … ON CONFLICT DO NOTHING in the same statement that records the
// chunk in the checkpoint; a shared token bucket caps rows per second.
//
// The backfill command is a thin wrapper over the entry points below; a Go
// program can do everything the command does.
//
// This package holds no global state: pools, logger and clock belong to one
// call.
//
// # Run
//
// Run is the whole job, started (ModeStart) or resumed (ModeResume): it
// validates the Job, then both tables, before writing anything, takes the
// job's runner lock, and records the job's state in the destination's state
// schema. It returns when the job is done, failed, interrupted (its context
// cancelled) or paused, with a Report; every way but done is resumable.
//
// # Throttling
//
// Besides its rate cap, a run waits before each chunk's commit while
// production says it hurts (package throttle): a standby's replica lag
// (Job.Replicas, else the destination's own standbys), active sessions
// that are not the job's, a probe's latency, the user's throttle query,
// or an operator's throttle by hand (SetThrottle). A signal past its
// critical limit pauses the job. Job.AutoRate lets the run find its rate
// from the same signals and the probe, and its number of workers, from
// one up to Job.Workers (unless Job.Autoscale sizes the pool). Status says why a running job
// waits, and DryRun reads every signal once.
//
// While it runs, Run reports its progress: a live line on Job.Console when
// that is a terminal's, else a log line every Job.ProgressInterval; and
// with Job.MetricsAddr it serves its Prometheus metrics and the runner's
// health (observe.go says what the counters count).
//
// # Settings
//
// A Job's settings are declared once, in Settings: each one's Job field,
// spec file key, flag, default, check, and Scope, which says what resume
// does with it. Run's defaults and validation, the merge of a resumed job
// with its stored one, the stored Spec and the command's flags all come
// from those declarations. Zero values mean the default, and on resume the
// stored value; a setting given explicitly as zero goes through
// Setting.Give, which turns it into what it means or refuses it.
//
// # DryRun
//
// DryRun rehearses a job on the real databases: every check of Run,
// estimates, and a sample pushed through the real paginator and worker code
// inside a transaction that is rolled back. It writes nothing that outlives
// it; its DryRunReport lists every problem that would stop the job.
//
// # Verify
//
// Verify compares a copy job's destination with its source over the job's
// whole key range, by row counts and md5 digests each database computes,
// and says what is not copied yet. It reads only.
//
// # Status, Pause, SetRate and SetThrottle
//
// The operator commands act on a job from outside its runner, wherever that
// runs. Each takes a Target: the job's name, its databases, its state schema
// and how to connect (Job.Target gives a job's). Status reports jobs and
// their counters (a running job whose runner is gone as interrupted), and
// StatusDetail one job with its spec, its slowest recent chunks and its
// first failed rows; Pause
// asks a running job to finish its in-flight chunks and stop as paused;
// SetRate changes a job's rate cap, which a running job applies within a
// heartbeat; SetThrottle holds or releases its commits by hand. Verify
// takes a Target too.
//
// # Errors
//
// The errors a caller tells apart with errors.Is are this package's Err
// variables: ErrInvalidJob (the Job itself is wrong), ErrRefused (the
// databases say no), ErrJobExists, ErrJobNotFound, ErrJobBusy, and the
// resumable ends ErrInterrupted, ErrPaused and ErrJobFailed. Messages name settings as Job
// fields ("Job.MaxRetries") or in plain words; the command words each field
// as its flag.
package backfill
