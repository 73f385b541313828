package sql

import (
	"strings"
	"testing"
)

func TestStatementsSubstituteTheSchema(t *testing.T) {
	s, err := For(`"my ""state"""`)
	if err != nil {
		t.Fatal(err)
	}
	q := s.Get(JobGet)
	if !strings.Contains(q, `FROM "my ""state""".jobs`) || strings.Contains(q, "{{schema}}") {
		t.Fatalf("job-get not rendered for the schema:\n%s", q)
	}
	if strings.Contains(q, "-- name:") {
		t.Fatalf("a statement swallowed the next block's header:\n%s", q)
	}
}

func TestMigrationsAreOrderedAndComplete(t *testing.T) {
	s, err := For(`"backfill"`)
	if err != nil {
		t.Fatal(err)
	}
	ms := s.Migrations()
	if len(ms) == 0 {
		t.Fatal("no migrations")
	}
	for i, m := range ms {
		if m.Version != i+1 {
			t.Fatalf("migration %d has version %d: versions must run 1, 2, 3…", i, m.Version)
		}
	}
}

// TestStaticRefusesSchemaStatements: a statement that mentions the state
// schema is a Name, which only Statements renders; Static returns only
// those that mention none.
func TestStaticRefusesSchemaStatements(t *testing.T) {
	if q := Static(CatalogColumns); !strings.Contains(q, "pg_attribute") {
		t.Fatalf("catalog-columns: %s", q)
	}
	for n := range StaticName(len(staticNames)) {
		if strings.Contains(Static(n), "{{schema}}") {
			t.Errorf("static statement %q needs a schema", n)
		}
	}
	all, err := raw()
	if err != nil {
		t.Fatal(err)
	}
	for n := range Name(len(names)) {
		if !strings.Contains(all[n.String()], "{{schema}}") {
			t.Errorf("statement %q of the state schema does not mention it", n)
		}
	}
}

func TestParseBlocksRejectsDuplicates(t *testing.T) {
	into := map[string]string{}
	err := parseBlocks("x.sql", "-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n", into)
	if err == nil || !strings.Contains(err.Error(), `"a" defined twice`) {
		t.Fatalf("duplicate block: %v", err)
	}
}

// TestNoStatementCarriesComments: the comment before a "-- name:" line
// speaks of the statement it heads (dry-run printed it at the end of the
// statement before), and no comment line is sent: a LATIN1 database
// refused the "…" of one. Every statement is ASCII, which any server
// encoding takes.
func TestNoStatementCarriesComments(t *testing.T) {
	into := map[string]string{}
	if err := parseBlocks("x.sql", "-- name: a\nSELECT 1\n-- About b.\n\n-- name: b\n-- Inside b.\nSELECT 2 -- two\n", into); err != nil {
		t.Fatal(err)
	}
	if into["a"] != "SELECT 1" || into["b"] != "SELECT 2 -- two" {
		t.Fatalf("blocks: %q", into)
	}
	all, err := raw()
	if err != nil {
		t.Fatal(err)
	}
	for name, q := range all {
		for _, line := range strings.Split(q, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "--") {
				t.Errorf("statement %q holds a comment line: %q", name, line)
			}
		}
		for i, r := range q {
			if r > 127 {
				t.Errorf("statement %q holds %q at byte %d: not every server encoding has it", name, r, i)
				break
			}
		}
	}
}
