package sql

import (
	"embed"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

//go:embed *.sql
var files embed.FS

//go:generate go test -run=^TestNamesFileDeclaresEveryBlock$ . -args -update

// Statements are the statements of one state schema, rendered for it.
type Statements struct {
	text       []string // by Name
	migrations []Migration
}

// Migration is one step of the state schema, applied in Version order.
type Migration struct {
	Version int
	SQL     string
}

// Name names a statement that mentions the state schema, which Statements
// renders for one. The constants of names.go are every name there is:
// code can ask for no statement that sql/ does not define.
type Name int

// StaticName names a statement that mentions no state schema, such as a
// catalog query, which Static returns as sql/ holds it.
type StaticName int

// String is the name of the statement's block ("-- name: …").
func (n Name) String() string { return names[n] }

// String is the name of the statement's block ("-- name: …").
func (n StaticName) String() string { return staticNames[n] }

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
	s := &Statements{text: make([]string, len(names))}
	for n, name := range names {
		q, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("sql: no statement named %q: names.go is older than the .sql files (go generate ./sql)", name)
		}
		s.text[n] = strings.ReplaceAll(q, "{{schema}}", quotedSchema)
	}
	for name, q := range all {
		var v int
		if _, err := fmt.Sscanf(name, "migration-%d", &v); err == nil {
			s.migrations = append(s.migrations, Migration{Version: v, SQL: strings.ReplaceAll(q, "{{schema}}", quotedSchema)})
		}
	}
	sort.Slice(s.migrations, func(i, j int) bool { return s.migrations[i].Version < s.migrations[j].Version })
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

// Get returns the named statement.
func (s *Statements) Get(n Name) string { return s.text[n] }

// Migrations returns the blocks named "migration-N" in version order.
func (s *Statements) Migrations() []Migration { return slices.Clone(s.migrations) }

// Static returns a statement that does not mention the state schema.
func Static(n StaticName) string {
	all, err := raw()
	if err != nil {
		panic(err) // the embedded files are part of the binary: a build defect
	}
	q, ok := all[staticNames[n]]
	if !ok {
		panic(fmt.Sprintf("sql: no statement named %q: names.go is older than the .sql files (go generate ./sql)", n))
	}
	return q
}
