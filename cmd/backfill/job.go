package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/catalog"
	"github.com/backfill/backfill/jobspec"
	"github.com/backfill/backfill/transform"
)

// settings resolves each setting from, in order: the flag when given on
// the command line, the spec file, then the flag's default.
type settings struct {
	c    *cli.Context
	spec *jobspec.File
}

func (s settings) str(flag, fromFile string) string {
	if s.c.IsSet(flag) || fromFile == "" {
		return s.c.String(flag)
	}
	return fromFile
}

func pick[T any](s settings, flag string, fromFile *T, get func(string) T) T {
	if s.c.IsSet(flag) || fromFile == nil {
		return get(flag)
	}
	return *fromFile
}

func duration(s settings, flag string, fromFile *jobspec.Duration) time.Duration {
	if s.c.IsSet(flag) || fromFile == nil {
		return s.c.Duration(flag)
	}
	return fromFile.D
}

// jobFromFlags builds the Job from the spec file (--config) and the flags.
// Missing or bad input is a usageError naming the flag or the file's key.
func jobFromFlags(c *cli.Context, mode backfill.Mode) (backfill.Job, *jobspec.File, error) {
	s := settings{c: c, spec: &jobspec.File{}}
	var spec *jobspec.File
	if path := c.String("config"); path != "" {
		var err error
		if spec, err = jobspec.Load(path); err != nil {
			return backfill.Job{}, nil, usageError{err}
		}
		s.spec = spec
	}
	f := s.spec
	j := backfill.Job{
		Name:             s.str("job", f.Job),
		Mode:             mode,
		SourceURL:        firstSet(s.str("source", f.Source.URL), os.Getenv("BACKFILL_SOURCE")),
		StateSchema:      s.str("state-schema", f.StateSchema),
		QueueDepth:       pick(s, "queue-depth", f.QueueDepth, c.Int),
		ProgressInterval: duration(s, "progress-interval", f.ProgressInterval),
		TargetChunkTime:  duration(s, "target-chunk-time", f.TargetChunkTime),
		StatementTimeout: duration(s, "statement-timeout", f.StatementTimeout),
		LockTimeout:      duration(s, "lock-timeout", f.LockTimeout),
		ConnectTimeout:   duration(s, "connect-timeout", f.ConnectTimeout),
		MaxRetries:       pick(s, "max-retries", f.MaxRetries, c.Int),
		MaxFailedRows:    pick(s, "max-failed-rows", f.MaxFailedRows, c.Int64),
		RetryFailed:      mode == backfill.ModeResume && c.Bool("retry-failed"),
	}
	j.DestURL = firstSet(s.str("dest", f.Dest.URL), os.Getenv("BACKFILL_DEST"), j.SourceURL)
	if j.Name == "" {
		if spec != nil {
			return j, spec, usageError{errors.New(spec.Missing("job") + " (or pass --job)")}
		}
		return j, spec, usagef("--job is required: the job's name, the key of its checkpoint")
	}
	if j.TargetChunkTime <= 0 {
		return j, spec, usagef("--target-chunk-time %v: must be a positive duration", j.TargetChunkTime)
	}
	if j.MaxRetries < 0 {
		return j, spec, usagef("--max-retries %d: must not be negative", j.MaxRetries)
	}
	if j.MaxFailedRows == 0 {
		return j, spec, usagef("--max-failed-rows 0: give a positive limit, or -1 for none")
	}
	// On resume, absent tunables keep the job's stored values (0 in Job).
	if mode == backfill.ModeStart || c.IsSet("workers") || f.Workers != nil {
		j.Workers = pick(s, "workers", f.Workers, c.Int)
		if j.Workers < 1 {
			return j, spec, usagef("--workers %d: must be at least 1", j.Workers)
		}
	}
	if mode == backfill.ModeStart || c.IsSet("rate") || f.Rate != nil {
		j.Rate = pick(s, "rate", f.Rate, c.Float64)
		if j.Rate < 0 {
			return j, spec, usagef("--rate %v: must be rows per second, 0 for no cap", j.Rate)
		}
		if j.Rate == 0 {
			j.Rate = backfill.Unlimited
		}
	}
	if mode == backfill.ModeResume && spec == nil {
		return j, spec, nil
	}
	// The spec proper: on resume it must match the stored one, so it is
	// only read from a file (or, on start, flags).
	j.From, j.To = s.strOf("from", f.Source.Table), s.strOf("to", f.Dest.Table)
	if mode == backfill.ModeStart {
		for _, req := range []struct{ value, flag, key string }{{j.From, "--from", "source.table"}, {j.To, "--to", "dest.table"}} {
			if req.value != "" {
				continue
			}
			if spec != nil {
				return j, spec, usageError{fmt.Errorf("%s (or pass %s)", spec.Missing(req.key), req.flag)}
			}
			return j, spec, usagef("--from and --to are required: the source and destination tables")
		}
	}
	j.Where = s.strOf("where", f.Source.Where)
	j.Follow = pick(s, "follow", f.Follow, c.Bool)
	// Without --chunk-size or chunk_size, chunks are sized by time (0),
	// on start and resume alike: resume (which has no --chunk-size) then
	// keeps the size the job was started with, 1000 for a job started
	// before sizing by time.
	if c.IsSet("chunk-size") || f.ChunkSize != nil {
		j.ChunkSize = pick(s, "chunk-size", f.ChunkSize, c.Int)
		if j.ChunkSize < 1 {
			return j, spec, usagef("--chunk-size %d: must be a positive number of rows", j.ChunkSize)
		}
	}
	var err error
	if k := c.String("key"); c.IsSet("key") && k != "" {
		if j.Key, err = catalog.ParseColumnList(k); err != nil {
			return j, spec, usagef("--key: %v", err)
		}
	} else {
		for _, k := range f.Source.Key {
			name, err := catalog.ParseColumnName(k)
			if err != nil {
				return j, spec, usageError{errors.New(f.At("source.key: "+err.Error(), "$.source.key"))}
			}
			j.Key = append(j.Key, name)
		}
	}
	for _, m := range f.Mappings() {
		name, err := catalog.ParseColumnName(m.Column)
		if err != nil {
			return j, spec, usageError{errors.New(f.At("columns: "+err.Error(), "$.columns."+m.Column))}
		}
		j.Columns = append(j.Columns, transform.Mapping{Column: name, Expr: m.Expr})
	}
	j.SkipIf = f.SkipIf
	return j, spec, nil
}

// strOf is str for flags that only start has: on resume they are absent.
func (s settings) strOf(flag, fromFile string) string {
	if s.c.IsSet(flag) {
		return s.c.String(flag)
	}
	return fromFile
}

func firstSet(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// annotated adds the spec file's line numbers to an error that names a
// mapped column or skip_if, so the reader can go straight to the line.
type annotated struct {
	msg string
	err error
}

func (a *annotated) Error() string { return a.msg }
func (a *annotated) Unwrap() error { return a.err }

func annotate(err error, spec *jobspec.File) error {
	if err == nil || spec == nil {
		return err
	}
	msg := err.Error()
	for _, m := range spec.Mappings() {
		if m.Line > 0 {
			q := fmt.Sprintf("column %q", m.Column)
			msg = strings.ReplaceAll(msg, q, fmt.Sprintf("%s (%s line %d)", q, spec.Path(), m.Line))
		}
	}
	if line := spec.Line("$.skip_if"); line > 0 {
		msg = strings.ReplaceAll(msg, "skip_if:", fmt.Sprintf("skip_if (%s line %d):", spec.Path(), line))
	}
	if msg == err.Error() {
		return err
	}
	return &annotated{msg: msg, err: err}
}
