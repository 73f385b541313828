package jobspec

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/backfill/backfill/throttle"
)

// File is a decoded spec file. Pointers tell "absent" from a zero value, so
// that only keys present in the file override defaults.
type File struct {
	Job    string `yaml:"job"`
	Source struct {
		URL   string   `yaml:"url"`
		Table string   `yaml:"table"`
		Key   []string `yaml:"key"`
		Where string   `yaml:"where"`
	} `yaml:"source"`
	Dest struct {
		URL   string `yaml:"url"`
		Table string `yaml:"table"`
	} `yaml:"dest"`
	// Columns maps destination columns to expressions, in file order.
	Columns    yaml.MapSlice `yaml:"columns"`
	SkipIf     string        `yaml:"skip_if"`
	ChunkSize  *int          `yaml:"chunk_size"`
	Workers    *int          `yaml:"workers"`
	Autoscale  *bool         `yaml:"autoscale"`
	MinWorkers *int          `yaml:"min_workers"`
	MaxWorkers *int          `yaml:"max_workers"`
	QueueDepth *int          `yaml:"queue_depth"`
	// Rate is a number of rows per second, auto or auto:MAX.
	Rate             *throttle.Rate `yaml:"rate"`
	StateSchema      string         `yaml:"state_schema"`
	Follow           *bool          `yaml:"follow"`
	Partitions       *int           `yaml:"partitions"`
	LeaseTimeout     *Duration      `yaml:"lease_timeout"`
	MaxRetries       *int           `yaml:"max_retries"`
	MaxFailedRows    *int64         `yaml:"max_failed_rows"`
	StatementTimeout *Duration      `yaml:"statement_timeout"`
	LockTimeout      *Duration      `yaml:"lock_timeout"`
	ConnectTimeout   *Duration      `yaml:"connect_timeout"`
	ProgressInterval *Duration      `yaml:"progress_interval"`
	TargetChunkTime  *Duration      `yaml:"target_chunk_time"`
	MetricsAddr      string         `yaml:"metrics_addr"`
	// What the job waits for (package throttle).
	Replicas               []string  `yaml:"replicas"`
	MaxReplicaLag          *Duration `yaml:"max_replica_lag"`
	MaxActiveSessions      *int      `yaml:"max_active_sessions"`
	CriticalActiveSessions *int      `yaml:"critical_active_sessions"`
	ProbeQuery             string    `yaml:"probe_query"`
	MaxProbeLatency        *Duration `yaml:"max_probe_latency"`
	ThrottleQuery          string    `yaml:"throttle_query"`
	ThrottleQueryOn        string    `yaml:"throttle_query_on"`
	SampleChunks           *int      `yaml:"sample_chunks"`
	LogFormat              string    `yaml:"log_format"`
	LogLevel               string    `yaml:"log_level"`

	path   string
	source []byte
	ast    *ast.File
}

// Duration is a time.Duration written as "30s" or "1m30s". Parse checks
// it, so that a bad one is reported with its key and line.
type Duration struct {
	D   time.Duration
	raw string
}

// UnmarshalYAML keeps the text for Parse to check.
func (d *Duration) UnmarshalYAML(b []byte) error {
	return yaml.Unmarshal(b, &d.raw)
}

// Mapping is one destination column and its expression.
type Mapping struct {
	Column string
	Expr   string
	Line   int
}

// Load reads and strictly decodes the spec file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read spec file: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes spec text; path only names it in errors.
func Parse(path string, data []byte) (*File, error) {
	f := &File{path: path, source: data}
	var err error
	if err = yaml.UnmarshalWithOptions(data, f, yaml.DisallowUnknownField()); err != nil {
		return nil, decodeError(path, err)
	}
	if f.ast, err = parser.ParseBytes(data, 0); err != nil {
		return nil, decodeError(path, err)
	}
	var errs []string
	durations := []struct {
		key string
		d   *Duration
	}{{"statement_timeout", f.StatementTimeout}, {"lock_timeout", f.LockTimeout},
		{"connect_timeout", f.ConnectTimeout}, {"progress_interval", f.ProgressInterval}, {"target_chunk_time", f.TargetChunkTime},
		{"max_replica_lag", f.MaxReplicaLag}, {"max_probe_latency", f.MaxProbeLatency}}
	for _, kd := range durations {
		key, d := kd.key, kd.d
		if d == nil {
			continue
		}
		v, perr := time.ParseDuration(d.raw)
		if perr != nil || v < 0 {
			errs = append(errs, f.At(fmt.Sprintf("%s: want a duration such as \"30s\", got %q", key, d.raw), "$."+key))
		}
		d.D = v
	}
	for _, item := range f.Columns {
		name, ok := item.Key.(string)
		if !ok {
			errs = append(errs, f.At(fmt.Sprintf("columns: the column name %v must be a string", item.Key), "$.columns"))
			continue
		}
		if _, ok := item.Value.(string); !ok {
			errs = append(errs, f.At(fmt.Sprintf("columns.%s: the expression must be a string (quote it), got %v", name, item.Value), "$.columns."+name))
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return f, nil
}

// position is the "[line:column]" that starts the YAML decoder's messages.
var position = regexp.MustCompile(`^\[(\d+):(\d+)\] `)

// decodeError words a decoding error as the rest of the tool does
// ("line 4, column 3: …") and keeps the decoder's excerpt of the file.
func decodeError(path string, err error) error {
	msg := position.ReplaceAllString(yaml.FormatError(err, false, true), "line $1, column $2: ")
	return fmt.Errorf("spec file %s, %s", path, msg)
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Line returns the line of the YAML path (e.g. "$.columns.email"), or 0.
func (f *File) Line(path string) int {
	p, err := yaml.PathString(path)
	if err != nil || f.ast == nil {
		return 0
	}
	node, err := p.FilterFile(f.ast)
	if err != nil || node == nil || node.GetToken() == nil {
		return 0
	}
	return node.GetToken().Position.Line
}

// At prefixes msg with the file and the line of the YAML path, when known.
func (f *File) At(msg, path string) string {
	if line := f.Line(path); line > 0 {
		return fmt.Sprintf("spec file %s, line %d: %s", f.path, line, msg)
	}
	return fmt.Sprintf("spec file %s: %s", f.path, msg)
}

// Mappings returns the columns in file order, with their lines.
func (f *File) Mappings() []Mapping {
	out := make([]Mapping, 0, len(f.Columns))
	for _, item := range f.Columns {
		name, _ := item.Key.(string)
		expr, _ := item.Value.(string)
		out = append(out, Mapping{Column: name, Expr: expr, Line: f.Line("$.columns." + name)})
	}
	return out
}

// Value is the value the file gives key ("workers", "source.table"), and
// whether it gives one: a key absent, or an empty string or list, gives
// none. A duration comes as a time.Duration, every other value as the Go
// type of its field. Value panics on a key the file format does not have.
func (f *File) Value(key string) (any, bool) {
	v := reflect.ValueOf(f).Elem()
	for part := range strings.SplitSeq(key, ".") {
		field := -1
		for i := 0; v.Kind() == reflect.Struct && i < v.NumField(); i++ {
			if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); name == part {
				field = i
			}
		}
		if field < 0 {
			panic(fmt.Sprintf("a job spec file has no key %q", key))
		}
		v = v.Field(field)
	}
	switch {
	case v.Kind() == reflect.Pointer && v.IsNil(), v.Kind() != reflect.Pointer && v.IsZero():
		return nil, false
	case v.Kind() == reflect.Pointer:
		v = v.Elem()
	}
	if d, ok := v.Interface().(Duration); ok {
		return d.D, true
	}
	if v.Kind() == reflect.Slice && v.Len() == 0 {
		return nil, false
	}
	return v.Interface(), true
}

// Missing names a required key absent from the file, with the line of its
// parent when the parent is there.
func (f *File) Missing(key string) string {
	parent := "$"
	if i := strings.LastIndex(key, "."); i > 0 {
		parent = "$." + key[:i]
	}
	if line := f.Line(parent); line > 0 && parent != "$" {
		return fmt.Sprintf("spec file %s: missing required key %s (in the mapping at line %d)", f.path, key, line)
	}
	return fmt.Sprintf("spec file %s: missing required key %s", f.path, key)
}
