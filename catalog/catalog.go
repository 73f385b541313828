package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	bfsql "github.com/backfill/backfill/sql"
	"github.com/backfill/backfill/transform"
)

// Querier is what the catalog needs from a connection or pool.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Column is one column of a table. Its Type is the exact type, typmod
// included, for messages and the transform's checks; values are cast to
// CastType.
type Column struct {
	transform.Column
	// CastType is the type without its typmod ("bpchar" for character(8),
	// "\"bit\"" for bit(5)), and for a domain its base type's: a value cast
	// to it keeps every character, and the column's own assignment then
	// applies the typmod and the domain's checks, failing a value that does
	// not fit (22001, 23514) instead of cutting it. CastOID is its OID.
	CastType string
	CastOID  uint32
	IsArray  bool
	// BinaryTravels: the cast type's binary form means the same in every
	// database (a built-in type, see catalog-columns), so a value can be
	// passed from one to another in it, undecoded.
	BinaryTravels bool
	// Generated columns cannot be written; IdentityAlways columns need
	// OVERRIDING SYSTEM VALUE to be written.
	Generated      bool
	IdentityAlways bool
}

// UniqueIndex is a valid unique index (or the primary key) of a table.
type UniqueIndex struct {
	Name       string
	Primary    bool
	Partial    bool
	Expression bool // some key part is an expression, not a column
	Columns    []string
	Method     string
	// Deferrable: the index checks uniqueness at the end of the statement
	// or the transaction, not as each row goes in.
	Deferrable bool
}

// Table is a table as the catalog describes it.
type Table struct {
	Name TableName // resolved: schema and name as stored
	OID  uint32
	Kind string // pg_class.relkind
	// RowSecurity and HasRules tell what COPY into the table would not
	// honour as INSERT does: COPY refuses a table with row-level security
	// enabled, and ignores its rules.
	RowSecurity bool
	HasRules    bool
	// BeforeInsertTriggers: a BEFORE INSERT row trigger of the table, or
	// of a partition rows may go to, is enabled, and may change a row
	// (its key too) before the unique indexes see it.
	BeforeInsertTriggers bool
	Columns              []Column
	Unique               []UniqueIndex
}

// ErrNotFound is returned (wrapped) when a table does not exist.
var ErrNotFound = errors.New("does not exist")

// Load reads a table's columns and unique indexes. A table that does not
// exist (or is not visible through search_path) returns an error wrapping
// ErrNotFound that names it.
func Load(ctx context.Context, q Querier, name TableName) (*Table, error) {
	t := &Table{}
	var kind byte
	err := q.QueryRow(ctx, bfsql.Static(bfsql.CatalogResolve), name.String()).Scan(&t.OID, &t.Name.Schema, &t.Name.Name, &kind, &t.RowSecurity, &t.HasRules, &t.BeforeInsertTriggers)
	if errors.Is(err, pgx.ErrNoRows) || isInvalidSchema(err) {
		return nil, fmt.Errorf("table %s %w (check the name, its schema and the search_path; quote mixed-case names)", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("look up table %s: %w", name, err)
	}
	t.Kind = string(kind)

	rows, err := q.Query(ctx, bfsql.Static(bfsql.CatalogColumns), t.OID)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", t.Name, err)
	}
	t.Columns, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Column, error) {
		var c Column
		err := row.Scan(&c.Name, &c.Type, &c.OID, &c.CastType, &c.CastOID, &c.NotNull, &c.HasDefault, &c.IsArray, &c.Generated, &c.IdentityAlways, &c.BinaryTravels)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", t.Name, err)
	}

	rows, err = q.Query(ctx, bfsql.Static(bfsql.CatalogUniqueIndexes), t.OID)
	if err != nil {
		return nil, fmt.Errorf("read unique indexes of %s: %w", t.Name, err)
	}
	t.Unique, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (UniqueIndex, error) {
		var u UniqueIndex
		err := row.Scan(&u.Name, &u.Primary, &u.Partial, &u.Expression, &u.Columns, &u.Method, &u.Deferrable)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("read unique indexes of %s: %w", t.Name, err)
	}
	return t, nil
}

// isInvalidSchema: to_regclass raises for a schema that does not exist in
// some versions instead of returning NULL.
func isInvalidSchema(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "3F000"
}

// Column returns the named column, or nil.
func (t *Table) Column(name string) *Column {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

// PrimaryKey returns the primary key's columns, or nil.
func (t *Table) PrimaryKey() []string {
	for _, u := range t.Unique {
		if u.Primary {
			return u.Columns
		}
	}
	return nil
}

// IsTable reports whether rows can be inserted into it as a plain or
// partitioned table.
func (t *Table) IsTable() bool { return t.Kind == "r" || t.Kind == "p" }

// CheckKey verifies that key can drive keyset pagination over t: every
// column exists and is NOT NULL, and a valid, non-partial unique index covers
// the key (its columns are a subset of the key). Without that, paging by key
// silently skips or repeats rows.
func (t *Table) CheckKey(key []string) error {
	if len(key) == 0 {
		return fmt.Errorf("source table %s has no primary key: pass Job.Key with NOT NULL columns covered by a unique index", t.Name)
	}
	var problems []string
	for _, k := range key {
		c := t.Column(k)
		switch {
		case c == nil:
			problems = append(problems, fmt.Sprintf("key column %q does not exist in %s", k, t.Name))
		case !c.NotNull:
			problems = append(problems, fmt.Sprintf("key column %q of %s is nullable: keyset pagination would skip rows whose key is NULL; add NOT NULL or choose another key", k, t.Name))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	for _, u := range t.Unique {
		if u.Partial || u.Expression {
			continue
		}
		covered := true
		for _, c := range u.Columns {
			if !slices.Contains(key, c) {
				covered = false
				break
			}
		}
		if covered {
			return nil
		}
	}
	return fmt.Errorf("key (%s) of %s is not covered by a unique index: keyset pagination over a non-unique key silently loses or repeats rows; add a unique index on these columns or choose a unique key with Job.Key",
		strings.Join(key, ", "), t.Name)
}

// CheckConflictTarget verifies that t has a primary key or a unique
// index, without which INSERT … ON CONFLICT DO NOTHING can never make a
// re-run idempotent.
func (t *Table) CheckConflictTarget() error {
	if len(t.Unique) == 0 {
		return fmt.Errorf("destination table %s has no primary key or unique constraint: a re-run or resume would duplicate rows; add one (for example the source's key) before backfilling", t.Name)
	}
	return nil
}
