package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/jobspec"
	"github.com/backfill/backfill/transform"
)

// jobFromFlags builds the Job from the spec file (--config) and the flags,
// each setting as its declaration says (settings.go). Missing or bad input
// is a usageError naming the flag or the file's key.
func jobFromFlags(c *cli.Context, mode backfill.Mode) (backfill.Job, *jobspec.File, error) {
	var spec *jobspec.File
	if path := c.String("config"); path != "" {
		var err error
		if spec, err = jobspec.Load(path); err != nil {
			return backfill.Job{}, nil, usageError{err}
		}
	}
	j := backfill.Job{Mode: mode}
	for _, s := range backfill.Settings() {
		switch s.Default().(type) {
		case []string, []transform.Mapping:
			if !s.Repeated {
				continue // names as SQL reads them: parsed below
			}
		}
		if v, ok := given(c, s, spec); ok {
			if err := s.Give(&j, v); err != nil {
				return j, spec, usageError{err}
			}
		}
	}
	if j.Name == "" {
		if spec != nil {
			return j, spec, usageError{errors.New(spec.Missing(setting("Name").Key) + " (or pass Job.Name)")}
		}
		return j, spec, usagef("Job.Name is required: the job's name, the key of its checkpoint")
	}
	if mode == backfill.ModeStart {
		for _, field := range []string{"From", "To"} {
			if _, ok := given(c, setting(field), spec); ok {
				continue
			}
			if spec != nil {
				return j, spec, usageError{fmt.Errorf("%s (or pass Job.%s)", spec.Missing(setting(field).Key), field)}
			}
			return j, spec, usagef("Job.From and Job.To are required: the source and destination tables")
		}
	}
	key := setting("Key")
	var names []string
	switch v, _ := given(c, key, spec); v := v.(type) {
	case string: // the flag's list
		var err error
		if names, err = backfill.ParseColumnList(v); err != nil {
			return j, spec, usagef("Job.Key: %v", err)
		}
	case []string: // the file's
		for _, k := range v {
			name, err := backfill.ParseColumnName(k)
			if err != nil {
				return j, spec, usageError{errors.New(spec.At(key.Key+": "+err.Error(), "$."+key.Key))}
			}
			names = append(names, name)
		}
	}
	if err := key.Give(&j, names); err != nil {
		return j, spec, usageError{err}
	}
	if spec == nil {
		return j, spec, nil
	}
	for _, m := range spec.Mappings() {
		name, err := backfill.ParseColumnName(m.Column)
		if err != nil {
			return j, spec, usageError{errors.New(spec.At("columns: "+err.Error(), "$.columns."+m.Column))}
		}
		j.Columns = append(j.Columns, transform.Mapping{Column: name, Expr: m.Expr})
	}
	return j, spec, nil
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
