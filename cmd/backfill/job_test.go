package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/backfill/backfill"
	"github.com/backfill/backfill/jobspec"
)

// TestEveryStartFlagHasASpecKey: issue 3 promises that a spec file can say
// everything start's flags can.
func TestEveryStartFlagHasASpecKey(t *testing.T) {
	keys := specFileKeys()
	moved := map[string]string{ // flags whose key sits under source: or dest:
		"source": "source.url", "dest": "dest.url", "from": "source.table", "to": "dest.table",
		"key": "source.key", "where": "source.where", "replica": "replicas", // repeated, a list in the file
	}
	for _, f := range startFlags() {
		name := f.Names()[0]
		if name == "config" {
			continue
		}
		key, ok := moved[name]
		if !ok {
			key = strings.ReplaceAll(name, "-", "_")
		}
		if _, ok := keys[key]; !ok {
			t.Errorf("start's --%s has no spec file key %q", name, key)
		}
	}
}

// TestEverySettingKeyIsInTheSpecFile: each declared spec key is a key of
// the file format, of the Job field's type, so that the generic reading
// of jobFromFlags can give it.
func TestEverySettingKeyIsInTheSpecFile(t *testing.T) {
	fields := specFileKeys()
	for _, s := range backfill.Settings() {
		if s.Key == "" || s.Field == "Columns" { // columns: a mapping, read by jobFromFlags itself
			continue
		}
		want := reflect.TypeOf(s.Default())
		if s.FromText { // the file's text, parsed: the rate, auto or not
			want = reflect.TypeFor[backfill.Rate]()
		}
		if got := fields[s.Key]; got != want {
			t.Errorf("Job.%s: spec key %q is a %v in jobspec.File, want %v", s.Field, s.Key, got, want)
		}
		if _, ok := (&jobspec.File{}).Value(s.Key); ok {
			t.Errorf("Job.%s: an empty file gives %q", s.Field, s.Key)
		}
	}
}

func TestFlagWords(t *testing.T) {
	for in, want := range map[string]string{
		"more than Job.MaxFailedRows 50; raise Job.MaxRetries": "more than --max-failed-rows 50; raise --max-retries",
		"Job.Name is required":                                 "--job is required",
		"Job.Transform and Job.Columns have no flag":           "Job.Transform and Job.Columns have no flag",
		"(Job.From)": "(--from)",
	} {
		if got := flagWords(in); got != want {
			t.Errorf("flagWords(%q) = %q, want %q", in, got, want)
		}
	}
}

// specFileKeys are the keys of the spec file format, with the Go type a
// key's value comes as (jobspec.File.Value).
func specFileKeys() map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft == reflect.TypeFor[jobspec.Duration]() {
				ft = reflect.TypeFor[time.Duration]()
			}
			keys[prefix+tag] = ft
			if ft.Kind() == reflect.Struct && ft.PkgPath() == "" {
				walk(prefix+tag+".", ft)
			}
		}
	}
	walk("", reflect.TypeFor[jobspec.File]())
	return keys
}
