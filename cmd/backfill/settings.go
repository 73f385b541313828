package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/jobspec"
)

// The command's flags and spec file reading come from the library's
// declarations of the Job's settings (backfill.Settings): a setting is
// declared there once, and this file only turns a declaration into a flag
// and a value given into the Job.

// setting is the declaration of the Job field named field.
func setting(field string) backfill.Setting {
	for _, s := range backfill.Settings() {
		if s.Field == field {
			return s
		}
	}
	panic("no setting declares Job." + field)
}

// settingFlags are the flags of the settings of a scope, in their order.
func settingFlags(scope backfill.Scope) []cli.Flag {
	var flags []cli.Flag
	for _, s := range backfill.Settings() {
		if s.Scope == scope && s.Flag != "" {
			flags = append(flags, flagOf(s, s.Usage))
		}
	}
	return flags
}

// flagOf is the flag of a declared setting, with usage as its help.
func flagOf(s backfill.Setting, usage string) cli.Flag {
	usage, text := flagWords(usage), flagWords(s.DefaultText)
	if s.FromText {
		return &cli.StringFlag{Name: s.Flag, Value: fmt.Sprint(s.Default()), Usage: usage, DefaultText: text}
	}
	switch d := s.Default().(type) {
	case string:
		return &cli.StringFlag{Name: s.Flag, Value: d, Usage: usage, DefaultText: text}
	case []string:
		if s.Repeated {
			return &cli.StringSliceFlag{Name: s.Flag, Usage: usage, DefaultText: text}
		}
		// a list of names, as SQL reads them
		return &cli.StringFlag{Name: s.Flag, Usage: usage, DefaultText: text}
	case int:
		return &cli.IntFlag{Name: s.Flag, Value: d, Usage: usage, DefaultText: text}
	case int64:
		return &cli.Int64Flag{Name: s.Flag, Value: d, Usage: usage, DefaultText: text}
	case float64:
		return &cli.Float64Flag{Name: s.Flag, Value: d, Usage: usage, DefaultText: text}
	case time.Duration:
		return &cli.DurationFlag{Name: s.Flag, Value: d, Usage: usage, DefaultText: text}
	case bool:
		return &cli.BoolFlag{Name: s.Flag, Value: d, Usage: usage, DefaultText: text}
	default:
		panic(fmt.Sprintf("Job.%s: no flag for a %T", s.Field, d))
	}
}

// given is the value the user gave for s, and whether there is one: its
// flag when on the command line, else the spec file's key (spec may be
// nil), else its environment variable. An empty string is none, as in the
// Job.
func given(c *cli.Context, s backfill.Setting, spec *jobspec.File) (any, bool) {
	if s.Flag != "" && c.IsSet(s.Flag) {
		var v any
		def := s.Default()
		if s.FromText {
			def = "" // the setting reads its text itself
		}
		switch def.(type) {
		case []string:
			if s.Repeated {
				v = c.StringSlice(s.Flag)
			} else {
				v = c.String(s.Flag)
			}
		case string:
			v = c.String(s.Flag)
		case int:
			v = c.Int(s.Flag)
		case int64:
			v = c.Int64(s.Flag)
		case float64:
			v = c.Float64(s.Flag)
		case time.Duration:
			v = c.Duration(s.Flag)
		case bool:
			v = c.Bool(s.Flag)
		}
		if v != "" {
			return v, true
		}
	}
	if spec != nil && s.Key != "" {
		if v, ok := spec.Value(s.Key); ok {
			return v, true
		}
	}
	if v := os.Getenv(s.Env); s.Env != "" && v != "" {
		return v, true
	}
	return nil, false
}

// givenString is given for a setting of text.
func givenString(c *cli.Context, field string, spec *jobspec.File) string {
	v, _ := given(c, setting(field), spec)
	s, _ := v.(string)
	return s
}

// jobField is how the library's messages name a setting: Job.MaxRetries.
var jobField = regexp.MustCompile(`\bJob\.([A-Z][A-Za-z0-9]*)\b`)

// flagWords words a library message for the command line: each Job field
// that has a flag becomes the flag (Job.MaxRetries: --max-retries).
func flagWords(msg string) string {
	if msg == "" {
		return ""
	}
	flags := map[string]string{}
	for _, s := range backfill.Settings() {
		if s.Flag != "" {
			flags[s.Field] = "--" + s.Flag
		}
	}
	return jobField.ReplaceAllStringFunc(msg, func(ref string) string {
		if flag, ok := flags[ref[len("Job."):]]; ok {
			return flag
		}
		return ref
	})
}

// flagWriter words what the library logs for the command line: zerolog
// writes each event in one Write.
type flagWriter struct{ w io.Writer }

func (f flagWriter) Write(p []byte) (int, error) {
	if !jobField.Match(p) {
		return f.w.Write(p)
	}
	if _, err := io.WriteString(f.w, flagWords(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
