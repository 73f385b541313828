package sql

import (
	"embed"
	"fmt"
	"sort"
	"strings"
	"sync"
)

//go:embed *.sql
var files embed.FS

// Statements is the set of named statements for one state schema.
type Statements struct {
	byName map[string]string
}

// Migration is one step of the state schema, applied in Version order.
type Migration struct {
	Version int
	SQL     string
}

const namePrefix = "-- name: "

// raw parses the embedded files once; the text is immutable.
var raw = sync.OnceValues(func() (map[string]string, error) {
	entries, err := files.ReadDir(".")
	if err != nil {
		return nil, fmt.Errorf("list embedded sql files: %w", err)
	}
	byName := map[string]string{}
	for _, e := range entries {
		body, err := files.ReadFile(e.Name())
		if err != nil {
			return nil, fmt.Errorf("read embedded %s: %w", e.Name(), err)
		}
		if err := parseBlocks(e.Name(), string(body), byName); err != nil {
			return nil, err
		}
	}
	return byName, nil
})

// For returns the statements with {{schema}} replaced by quotedSchema, which
// must already be quoted (pgx.Identifier{name}.Sanitize()).
func For(quotedSchema string) (*Statements, error) {
	all, err := raw()
	if err != nil {
		return nil, err
	}
	s := &Statements{byName: make(map[string]string, len(all))}
	for name, q := range all {
		s.byName[name] = strings.ReplaceAll(q, "{{schema}}", quotedSchema)
	}
	return s, nil
}

func parseBlocks(file, body string, into map[string]string) error {
	var name string
	var text strings.Builder
	flush := func() error {
		if name == "" {
			return nil
		}
		if _, dup := into[name]; dup {
			return fmt.Errorf("%s: statement %q defined twice", file, name)
		}
		into[name] = withoutComments(text.String())
		text.Reset()
		return nil
	}
	for _, line := range strings.SplitAfter(body, "\n") {
		if rest, ok := strings.CutPrefix(line, namePrefix); ok {
			if err := flush(); err != nil {
				return err
			}
			name = strings.TrimSpace(rest)
			continue
		}
		if name != "" {
			text.WriteString(line)
		}
	}
	return flush()
}

// withoutComments trims a block's text and drops its comment lines: those
// at its end stand before the next "-- name:" line and speak of the next
// statement (dry-run prints statements as they are), and none is for the
// server, which would have to take their characters in its encoding (a
// LATIN1 database has no "…").
func withoutComments(block string) string {
	var kept []string
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			kept = append(kept, line)
		}
	}
	return strings.TrimSpace(strings.Join(kept, "\n"))
}

// Get returns the named statement. A missing name is a programming error.
func (s *Statements) Get(name string) string {
	q, ok := s.byName[name]
	if !ok {
		panic(fmt.Sprintf("sql: no statement named %q", name))
	}
	return q
}

// Migrations returns the blocks named "migration-N" in version order.
func (s *Statements) Migrations() []Migration {
	var out []Migration
	for name, q := range s.byName {
		var v int
		if _, err := fmt.Sscanf(name, "migration-%d", &v); err == nil {
			out = append(out, Migration{Version: v, SQL: q})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out
}

// Static returns a named statement that does not mention the state schema,
// such as the catalog queries.
func Static(name string) string {
	all, err := raw()
	if err != nil {
		panic(err) // the embedded files are part of the binary: a build defect
	}
	q, ok := all[name]
	if !ok {
		panic(fmt.Sprintf("sql: no statement named %q", name))
	}
	if strings.Contains(q, "{{schema}}") {
		panic(fmt.Sprintf("sql: statement %q needs a schema; use For", name))
	}
	return q
}
