package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/backfill/backfill/jobspec"
)

// TestEveryStartFlagHasASpecKey: issue 3 promises that a spec file can say
// everything start's flags can.
func TestEveryStartFlagHasASpecKey(t *testing.T) {
	keys := map[string]bool{}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			keys[prefix+tag] = true
			if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == "" {
				walk(prefix+tag+".", f.Type)
			}
		}
	}
	walk("", reflect.TypeOf(jobspec.File{}))
	moved := map[string]string{ // flags whose key sits under source: or dest:
		"source": "source.url", "dest": "dest.url", "from": "source.table", "to": "dest.table",
		"key": "source.key", "where": "source.where",
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
		if !keys[key] {
			t.Errorf("start's --%s has no spec file key %q", name, key)
		}
	}
}
