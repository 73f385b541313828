package backfill

import (
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/transform"
)

// TestSettingsAreDeclaredOnce: each Job field, spec key, flag and stored
// name belongs to one setting, and the rules of each scope hold.
func TestSettingsAreDeclaredOnce(t *testing.T) {
	seen := map[string]string{}
	for _, s := range Settings() {
		for _, name := range []string{"field " + s.Field, "key " + s.Key, "flag " + s.Flag, "stored " + s.Stored} {
			if strings.HasSuffix(name, " ") {
				continue
			}
			if other, dup := seen[name]; dup {
				t.Errorf("%s is declared by Job.%s and Job.%s", name, other, s.Field)
			}
			seen[name] = s.Field
		}
		if (s.Scope == ScopeSpec) != (s.Stored != "") {
			t.Errorf("Job.%s: scope %d, stored as %q: a setting is stored exactly when it is part of the spec", s.Field, s.Scope, s.Stored)
		}
		if s.Scope == ScopeSpec && !reflect.ValueOf(s.Default()).IsZero() {
			t.Errorf("Job.%s is part of the spec and has a default (%v): on resume its zero value means the stored one", s.Field, s.Default())
		}
		if f, ok := reflect.TypeFor[Job]().FieldByName(s.Field); !ok || f.Type != reflect.TypeOf(s.Default()) {
			t.Errorf("Job.%s: the default %T is not of the field's type", s.Field, s.Default())
		}
	}
}

func TestWithDefaults(t *testing.T) {
	start := Job{Mode: ModeStart, SourceURL: "postgres://db/src"}.withDefaults()
	want := Job{Mode: ModeStart, SourceURL: "postgres://db/src", DestURL: "postgres://db/src", StateSchema: "backfill",
		Workers: DefaultWorkers, QueueDepth: DefaultQueueDepth, Rate: DefaultRate, TargetChunkTime: DefaultTargetChunkTime,
		ProgressInterval: DefaultProgressInterval, StatementTimeout: DefaultStatementTimeout, LockTimeout: DefaultLockTimeout,
		ConnectTimeout: DefaultConnectTimeout, MaxRetries: DefaultMaxRetries, MaxFailedRows: DefaultMaxFailedRows,
		LeaseTimeout: DefaultLeaseTimeout}
	start.Now, want.Now = nil, nil
	if !reflect.DeepEqual(start, want) {
		t.Errorf("start's defaults:\n got %+v\nwant %+v", start, want)
	}
	resume := Job{Mode: ModeResume, DestURL: "postgres://db/dst", MaxFailedRows: -1}.withDefaults()
	if resume.Workers != 0 || resume.Rate != 0 || resume.DestURL != "postgres://db/dst" || resume.MaxFailedRows != -1 || resume.QueueDepth != DefaultQueueDepth {
		t.Errorf("resume's defaults: workers and rate are the job's own, a given value stays: %+v", resume)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	ok := Job{Name: "j", Mode: ModeStart, From: "a", To: "b"}
	for _, c := range []struct {
		name string
		edit func(*Job)
		want string
	}{
		{"bad name", func(j *Job) { j.Name = "no spaces" }, `Job.Name "no spaces": a job name is`},
		{"no name", func(j *Job) { j.Name = "" }, "Job.Name: missing"},
		{"no source table on start", func(j *Job) { j.From = "" }, "Job.From: missing"},
		{"negative chunk size", func(j *Job) { j.ChunkSize = -1 }, "Job.ChunkSize -1: must be a positive number of rows"},
		{"huge chunk size", func(j *Job) { j.ChunkSize = 100001 }, "Job.ChunkSize 100001: at most 100000 rows"},
		{"negative target chunk time", func(j *Job) { j.TargetChunkTime = -time.Second }, "Job.TargetChunkTime -1s: must be a positive duration"},
		{"negative workers", func(j *Job) { j.Workers = -1 }, "Job.Workers -1: must be at least 1"},
		{"too many workers", func(j *Job) { j.Workers = 257 }, "Job.Workers 257: at most 256"},
		{"negative queue depth", func(j *Job) { j.QueueDepth = -1 }, "Job.QueueDepth -1: must be at least 1"},
		{"negative rate", func(j *Job) { j.Rate = -1 }, "Job.Rate -1: must be rows per second"},
		{"NaN rate", func(j *Job) { j.Rate = math.NaN() }, "Job.Rate NaN"},
		{"negative retries", func(j *Job) { j.MaxRetries = -1 }, "Job.MaxRetries -1: must not be negative"},
		{"retry failed on start", func(j *Job) { j.RetryFailed = true }, "Job.RetryFailed true: only on resume"},
		{"negative timeout", func(j *Job) { j.LockTimeout = -time.Second }, "Job.LockTimeout -1s: must not be negative"},
		{"metrics address without a port", func(j *Job) { j.MetricsAddr = "localhost" }, `Job.MetricsAddr "localhost": must be HOST:PORT`},
		{"an autoscale bound without autoscale", func(j *Job) { j.MinWorkers = 2 }, "Job.MinWorkers 2: only with Job.Autoscale"},
		{"autoscale bounds the wrong way round", func(j *Job) { j.Autoscale, j.MinWorkers, j.MaxWorkers = true, 4, 2 },
			"Job.MaxWorkers 2: below Job.MinWorkers 4"},
		{"too many autoscaled workers", func(j *Job) { j.Autoscale, j.MaxWorkers = true, 300 }, "Job.MaxWorkers 300: at most 256"},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := ok
			c.edit(&j)
			err := j.withDefaults().validate()
			if !errors.Is(err, ErrInvalidJob) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an invalid job saying %q, got %v", c.want, err)
			}
		})
	}
	if err := ok.withDefaults().validate(); err != nil {
		t.Fatalf("a valid job: %v", err)
	}
	resume := Job{Name: "j", Mode: ModeResume}
	if err := resume.withDefaults().validate(); err != nil {
		t.Fatalf("a resume needs no tables, workers or rate: %v", err)
	}
}

// TestAutoscaleBoundsDefaultOnlyWhenAutoscaling: a job that does not
// autoscale has no bounds, so one given to it can be told and refused.
func TestAutoscaleBoundsDefaultOnlyWhenAutoscaling(t *testing.T) {
	if j := (Job{Mode: ModeStart}).withDefaults(); j.MinWorkers != 0 || j.MaxWorkers != 0 {
		t.Errorf("bounds of a fixed pool: %d and %d, want none", j.MinWorkers, j.MaxWorkers)
	}
	j := Job{Mode: ModeResume, Autoscale: true, MaxWorkers: 10}.withDefaults()
	if j.MinWorkers != DefaultMinWorkers || j.MaxWorkers != 10 {
		t.Errorf("bounds of an autoscaled pool: %d and %d, want %d and 10", j.MinWorkers, j.MaxWorkers, DefaultMinWorkers)
	}
}

// TestGiveTurnsZeroIntoWhatItMeans: a zero a user gives is not "unset".
func TestGiveTurnsZeroIntoWhatItMeans(t *testing.T) {
	settings := map[string]Setting{}
	for _, s := range Settings() {
		settings[s.Field] = s
	}
	var j Job
	if err := settings["Rate"].Give(&j, 0.0); err != nil || !math.IsInf(j.Rate, 1) {
		t.Errorf("a rate of 0 is no cap: %v, %v", j.Rate, err)
	}
	for field, v := range map[string]any{"Workers": 0, "ChunkSize": 0, "MaxFailedRows": int64(0), "TargetChunkTime": time.Duration(0)} {
		if err := settings[field].Give(&j, v); !errors.Is(err, ErrInvalidJob) || !strings.HasPrefix(err.Error(), "Job."+field+" 0") {
			t.Errorf("Job.%s given 0: want it refused, naming the field, got %v", field, err)
		}
	}
	if err := settings["Workers"].Give(&j, 3); err != nil || j.Workers != 3 {
		t.Errorf("workers given 3: %v, %v", j.Workers, err)
	}
	if err := settings["QueueDepth"].Give(&j, 0); err != nil || j.QueueDepth != 0 {
		t.Errorf("queue depth given 0 is its default: %v, %v", j.QueueDepth, err)
	}
}

// TestResumeFrom: what a resume is not given comes from the stored spec,
// the rate and workers from the job's row; the transform as a whole.
func TestResumeFrom(t *testing.T) {
	stored := Spec{From: `"public"."src"`, To: `"public"."dst"`, Key: []string{"id"}, Where: "v > 0", ChunkSize: 500, Follow: true,
		Columns: []transform.Mapping{{Column: "id", Expr: "id"}}, SkipIf: "v == 3"}
	row := checkpoint.Job{Rate: 0, Workers: 3}

	j := Job{Mode: ModeResume}
	j.resumeFrom(stored, row)
	if j.From != stored.From || j.To != stored.To || !slices.Equal(j.Key, stored.Key) || j.Where != stored.Where ||
		j.ChunkSize != 500 || !j.Follow || len(j.Columns) != 1 || j.SkipIf != stored.SkipIf || !math.IsInf(j.Rate, 1) || j.Workers != 3 {
		t.Errorf("nothing given: %+v", j)
	}

	given := Job{Mode: ModeResume, From: "src", ChunkSize: 20, Rate: 50, Workers: 2, SkipIf: "v == 4"}
	given.resumeFrom(stored, checkpoint.Job{Rate: 100, Workers: 3})
	if given.From != "src" || given.To != stored.To || given.ChunkSize != 20 || given.Rate != 50 || given.Workers != 2 ||
		given.SkipIf != "v == 4" || given.Columns != nil {
		t.Errorf("given values stay, and a transform given is taken whole: %+v", given)
	}
}

func TestDifferencesNameTheStoredField(t *testing.T) {
	s := Spec{From: "a", To: "b", Key: []string{"id"}, ChunkSize: 10}
	d := s.differences(Spec{From: "a", To: "c", Key: []string{"id", "v"}, ChunkSize: 0, Where: "x", Follow: true})
	want := []string{"to: stored b, given c", "key: stored id, given id,v", `where: stored "", given "x"`,
		"chunk_size: stored 10, given sized by time", "follow: stored false, given true"}
	if !slices.Equal(d, want) {
		t.Errorf("differences:\n got %q\nwant %q", d, want)
	}
}

// TestAutoRate: the rate's one setting reads auto as text or as a Rate,
// keeps a ceiling as Job.Rate, and a resume keeps the row's auto unless a
// rate is given.
func TestAutoRate(t *testing.T) {
	var rateSetting Setting
	for _, s := range Settings() {
		if s.Field == "Rate" {
			rateSetting = s
		}
	}
	for given, want := range map[any]Job{
		"auto":                          {AutoRate: true, Rate: Unlimited},
		"auto:5000":                     {AutoRate: true, Rate: 5000},
		"250":                           {Rate: 250},
		"0":                             {Rate: Unlimited},
		Rate{Auto: true, PerSecond: 70}: {AutoRate: true, Rate: 70},
		1500.0:                          {Rate: 1500},
	} {
		j := Job{AutoRate: true}
		if err := rateSetting.Give(&j, given); err != nil || j.AutoRate != want.AutoRate || j.Rate != want.Rate {
			t.Errorf("rate given %v: auto %v, rate %v, %v; want auto %v, rate %v", given, j.AutoRate, j.Rate, err, want.AutoRate, want.Rate)
		}
	}
	j := Job{}
	if err := rateSetting.Give(&j, "auto:-1"); !errors.Is(err, ErrInvalidJob) || !strings.HasPrefix(err.Error(), "Job.Rate: ") {
		t.Errorf("a bad rate text: %v", err)
	}
	if d := (Job{Mode: ModeStart, AutoRate: true}).withDefaults(); !math.IsInf(d.Rate, 1) {
		t.Errorf("auto without a ceiling has none: %v", d.Rate)
	}
	// one worker under auto unless told more, or an autoscaler sizes the pool
	for _, c := range []struct {
		given Job
		want  int
	}{
		{Job{Mode: ModeStart, AutoRate: true}, DefaultAutoWorkers},
		{Job{Mode: ModeStart, AutoRate: true, Workers: 4}, 4},
		{Job{Mode: ModeStart, AutoRate: true, Autoscale: true}, DefaultWorkers},
		{Job{Mode: ModeStart, Rate: 5000}, DefaultWorkers},
	} {
		if d := c.given.withDefaults(); d.Workers != c.want {
			t.Errorf("workers of %+v: %d, want %d", c.given, d.Workers, c.want)
		}
	}

	ceiling, none := 4000.0, 0.0
	for _, c := range []struct {
		given Job
		row   checkpoint.Job
		auto  bool
		rate  float64
	}{
		{Job{}, checkpoint.Job{Rate: 1200, AutoRateMax: &ceiling}, true, 4000},
		{Job{}, checkpoint.Job{Rate: 1200, AutoRateMax: &none}, true, Unlimited},
		{Job{}, checkpoint.Job{Rate: 1200}, false, 1200},
		{Job{Rate: 300}, checkpoint.Job{Rate: 1200, AutoRateMax: &ceiling}, false, 300},
		{Job{AutoRate: true, Rate: Unlimited}, checkpoint.Job{Rate: 1200}, true, Unlimited},
	} {
		j := c.given
		j.Mode = ModeResume
		j = j.withDefaults()
		j.resumeFrom(Spec{}, c.row)
		if j.AutoRate != c.auto || j.Rate != c.rate {
			t.Errorf("resume given %+v of a row %+v: auto %v, rate %v; want %v, %v", c.given, c.row, j.AutoRate, j.Rate, c.auto, c.rate)
		}
	}
}
