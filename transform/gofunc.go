package transform

import (
	"errors"
	"fmt"
	"slices"
)

// RowFunc is a transform written in Go. It reads the source row and sets
// destination values through r, and returns keep false to filter the row
// out. An error fails this row only; return a *RowError to name the
// destination column at fault. A RowFunc is called by many workers at once
// and must be pure and deterministic, like an expression.
type RowFunc func(r Row) (keep bool, err error)

// Row is one row as a RowFunc sees it. It is a small value, valid only
// during the call; passing it does not allocate.
type Row struct {
	src, dst []any
	t        *funcTransformer
}

// Get returns the value of a source column as pgx decoded it (int64, string,
// time.Time, [16]byte for uuid, pgtype.Numeric, nil for NULL, ...), except
// that json and jsonb values are JSON, so that setting one on a json column
// stores it unchanged. Get panics when the table has no such column.
func (r Row) Get(column string) any {
	i, ok := r.t.source[column]
	if !ok {
		panic(fmt.Sprintf("transform: Row.Get(%q): no such source column", column))
	}
	return r.t.sourceTypes[i].rawValue(r.src[i])
}

// Set sets the value of a destination column; columns not set are NULL. The
// value is converted to the column's type as expression results are (see
// the package documentation). Set panics when column is not one of the
// columns the transformer was built with.
func (r Row) Set(column string, v any) {
	i, ok := r.t.dest[column]
	if !ok {
		panic(fmt.Sprintf("transform: Row.Set(%q): not one of the transformer's columns", column))
	}
	r.dst[i] = v
}

// FromFunc returns a Transformer that runs fn on every row and writes the
// destination columns named in columns, in that order; the other
// destination columns take their defaults. It is the Go counterpart of
// Compile, for programs that embed backfill; to call Go code from
// expressions instead, see Options.Funcs.
func FromFunc(source, dest []Column, columns []string, fn RowFunc) (Transformer, error) {
	var errs []error
	if fn == nil {
		errs = append(errs, errors.New("FromFunc: fn is nil"))
	}
	if len(columns) == 0 {
		errs = append(errs, errors.New("FromFunc: no destination columns"))
	}
	t := &funcTransformer{
		fn:          fn,
		columns:     columns,
		source:      make(map[string]int, len(source)),
		sourceTypes: make([]pgType, len(source)),
		dest:        make(map[string]int, len(columns)),
	}
	for i, c := range source {
		t.source[c.Name] = i
		t.sourceTypes[i] = parsePGType(c.Type)
	}
	for i, name := range columns {
		j := slices.IndexFunc(dest, func(c Column) bool { return c.Name == name })
		switch _, dup := t.dest[name]; {
		case j < 0:
			errs = append(errs, fmt.Errorf("column %q: no such column in the destination table", name))
			continue
		case dup:
			errs = append(errs, fmt.Errorf("column %q: listed twice", name))
			continue
		}
		t.dest[name] = i
		t.outputs = append(t.outputs, newDestColumn(dest[j]))
	}
	errs = append(errs, checkNotNull(dest, columns)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

type funcTransformer struct {
	fn          RowFunc
	columns     []string
	source      map[string]int
	sourceTypes []pgType
	dest        map[string]int
	outputs     []destColumn
}

func (t *funcTransformer) Columns() []string { return t.columns }

// Apply runs the function. A panic in it (a bug, or a misspelt column in
// Get or Set) is not recovered here: the worker recovers it, logs its stack
// and retries the chunk with a fresh worker, and the job's trial of the
// first chunk turns a panic on every row into a refusal before any write.
func (t *funcTransformer) Apply(src, dst []any) (keep bool, err error) {
	clear(dst)
	keep, err = t.fn(Row{src: src, dst: dst, t: t})
	if err != nil {
		if re, ok := errors.AsType[*RowError](err); ok {
			return false, re
		}
		return false, &RowError{Err: err}
	}
	if !keep {
		return false, nil
	}
	for i, d := range t.outputs {
		v, err := d.put(dst[i])
		if err != nil {
			return false, &RowError{Column: d.name, Err: err}
		}
		dst[i] = v
	}
	return true, nil
}
