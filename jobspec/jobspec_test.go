package jobspec

import (
	"strings"
	"testing"
	"time"
)

const full = `job: users_v2
source:
  table: public.users
  key: [id]
  where: "deleted_at IS NULL"
dest:
  table: public.users_v2
columns:
  id: id
  email: lower(trim(email))
  full_name: first_name + " " + last_name
  tier: 'score >= 500 ? "gold" : "basic"'
  region: payload?.region ?? "unknown"
skip_if: email == nil
chunk_size: 500
workers: 4
queue_depth: 2
rate: 0
statement_timeout: 1m
`

func TestParseFullSpec(t *testing.T) {
	f, err := Parse("users.yaml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if f.Job != "users_v2" || f.Source.Table != "public.users" || f.Source.Where != "deleted_at IS NULL" ||
		f.Dest.Table != "public.users_v2" || f.SkipIf != "email == nil" || *f.ChunkSize != 500 ||
		*f.Workers != 4 || *f.QueueDepth != 2 || f.Rate.PerSecond != 0 || f.Rate.Auto || f.StatementTimeout.D != time.Minute {
		t.Fatalf("decoded %+v", f)
	}
	var got []string
	for _, m := range f.Mappings() {
		got = append(got, m.Column+"="+m.Expr)
	}
	want := []string{"id=id", "email=lower(trim(email))", `full_name=first_name + " " + last_name`,
		`tier=score >= 500 ? "gold" : "basic"`, `region=payload?.region ?? "unknown"`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("mappings out of order or wrong:\n got %q\nwant %q", got, want)
	}
	if line := f.Mappings()[3].Line; line != 12 {
		t.Errorf("tier is on line 12, reported %d", line)
	}
	if f.Workers == nil || f.Follow != nil {
		t.Error("present and absent keys are not told apart")
	}
}

func TestParseErrorsNameKeyAndLine(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"unknown key", "job: a\nsource:\n  table: t\n  kee: [id]\n", []string{"line 4, column 3", `unknown field "kee"`, "kee: [id]"}},
		{"wrong type", "job: a\nworkers: many\n", []string{"line 2, column 10", "Workers"}},
		{"duplicate key", "job: a\njob: b\n", []string{"line 2, column 1", `"job" already defined`}},
		{"expression not a string", "job: a\ncolumns:\n  id: id\n  n: 3\n", []string{"line 4", "columns.n", "must be a string"}},
		{"bad duration", "job: a\nlock_timeout: soon\n", []string{"line 2", "lock_timeout", "duration"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(c.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestMissingNamesTheKey(t *testing.T) {
	f, err := Parse("m.yaml", []byte("job: a\nsource:\n  key: [id]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if msg := f.Missing("source.table"); !strings.Contains(msg, "source.table") || !strings.Contains(msg, "line 3") {
		t.Fatalf("Missing: %s", msg)
	}
	if msg := f.Missing("dest.table"); !strings.Contains(msg, "dest.table") {
		t.Fatalf("Missing: %s", msg)
	}
}
