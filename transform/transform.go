package transform

import (
	"errors"
	"fmt"
	"slices"
)

// Column is one column of a table as the catalog reports it.
type Column struct {
	Name    string // the column name, exactly as stored in the catalog
	Type    string // format_type(atttypid, atttypmod), the exact type: "bigint", "character(8)", "numeric(10,2)"
	OID     uint32 // the type's OID
	NotNull bool
	// HasDefault is true when the column has a default, is an identity column
	// or is generated, so leaving it out of an insert is not an error.
	HasDefault bool
}

// A Transformer maps source rows to destination rows. Apply is called by
// many workers at once and must be safe for concurrent use.
type Transformer interface {
	// Columns names the destination columns, in the order Apply fills dst.
	Columns() []string
	// Apply reads src (values in the order of the source columns the
	// transformer was built for, as pgx decodes them) and writes one value per
	// destination column into dst, which has len(Columns()) elements. keep is
	// false when the row is filtered out. A row that cannot be transformed
	// returns a *RowError; the caller records the row as failed and goes on.
	Apply(src, dst []any) (keep bool, err error)
}

// A PartialReader is a Transformer that reads only some of the source
// columns it was built for. Compile's transformers are: the engine then
// reads just those columns from the source, so a mapping of three columns
// of a wide table does not pull every other column across the network.
type PartialReader interface {
	Transformer
	// Reads names the source columns Apply reads, in source order.
	Reads() []string
}

// A Passthrough is a Transformer that copies some source values to
// destination columns untouched, so they need never be decoded: the engine
// reads each such column as the source sends it (in its binary form when
// both columns have one built-in type, as its text form otherwise) and
// lets the destination read that, and no value is changed on the way by a
// decode and an encode.
// Identity and Compile's transformers are.
type Passthrough interface {
	Transformer
	// Passes returns, for each destination column in the order of
	// Columns(), the index of the source column whose value Apply copies
	// there untouched, or -1 where Apply computes the value.
	Passes() []int
	// Decodes names the source columns whose values Apply looks at, in
	// source order: they must come decoded, as the package documentation
	// lists. The values of the others Apply only moves, in whatever form
	// they come.
	Decodes() []string
}

// RowError is the single way a transformer reports that one row failed.
type RowError struct {
	Column string // destination column whose value could not be computed ("" for the row filter)
	Err    error
}

func (e *RowError) Error() string {
	if e.Column == "" {
		return fmt.Sprintf("transform row: %v", e.Err)
	}
	return fmt.Sprintf("transform column %q: %v", e.Column, e.Err)
}

func (e *RowError) Unwrap() error { return e.Err }

// ErrNoCommonColumns is returned by Identity, and by Compile for a spec
// without columns, when the tables share no column.
var ErrNoCommonColumns = errors.New("source and destination share no column name")

// identity copies same-named columns.
type identity struct {
	columns []string
	from    []int // from[i] is the source index of destination column i
}

// Identity copies every destination column that has a same-named source
// column. Destination columns without a source column are left out of the
// insert, so they take their defaults.
func Identity(source, dest []Column) (Transformer, error) {
	bySourceName := make(map[string]int, len(source))
	for i, c := range source {
		bySourceName[c.Name] = i
	}
	t := &identity{}
	for _, d := range dest {
		i, ok := bySourceName[d.Name]
		if !ok {
			continue
		}
		t.columns = append(t.columns, d.Name)
		t.from = append(t.from, i)
	}
	if len(t.columns) == 0 {
		return nil, ErrNoCommonColumns
	}
	return t, nil
}

func (t *identity) Columns() []string { return t.columns }

func (t *identity) Passes() []int { return slices.Clone(t.from) }

func (t *identity) Decodes() []string { return nil }

func (t *identity) Apply(src, dst []any) (bool, error) {
	for i, from := range t.from {
		dst[i] = src[from]
	}
	return true, nil
}
