package transform

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr/vm"
)

// Spec is the transform section of a job spec.
type Spec struct {
	// Columns maps destination columns to expressions over the source row,
	// in the order the destination values are written. Empty means: copy
	// every source column to the same-named destination column.
	Columns []Mapping
	// SkipIf is an optional boolean expression; rows for which it is true
	// are filtered out.
	SkipIf string
}

// Mapping is one destination column and the expression that computes it.
type Mapping struct {
	Column string `json:"column"` // as the job's stored spec records it
	Expr   string `json:"expr"`
}

// Options are what Compile needs besides the spec and the two tables.
type Options struct {
	// Now is the job's start time, what now() returns for every row of
	// every run. Required only when an expression calls now().
	Now time.Time
	// Funcs are Go functions callable from expressions, beside the helpers.
	Funcs map[string]Func
}

// errNull is a nil value for a NOT NULL column: refused here, one row fails;
// refused by the database, the whole chunk would.
var errNull = errors.New("null value for a NOT NULL column")

// destColumn is a destination column as the per-row code needs it.
type destColumn struct {
	name    string
	typ     pgType
	notNull bool
}

func newDestColumn(c Column) destColumn {
	return destColumn{name: c.Name, typ: parsePGType(c.Type), notNull: c.NotNull}
}

// put is the one way a value reaches dst.
func (d destColumn) put(v any) (any, error) {
	if v == nil {
		if d.notNull {
			return nil, errNull
		}
		return nil, nil
	}
	return d.typ.value(v)
}

// checkNotNull refuses a table whose NOT NULL columns without a default are
// not all written: every insert would fail.
func checkNotNull(dest []Column, written []string) []error {
	var errs []error
	for _, d := range dest {
		if d.NotNull && !d.HasDefault && !slices.Contains(written, d.Name) {
			errs = append(errs, fmt.Errorf("destination column %q is NOT NULL and has no default, but nothing writes it", d.Name))
		}
	}
	return errs
}

// Compile checks spec against the source and destination tables and returns
// a Transformer that evaluates it. Every expression is compiled here, once;
// a problem found here, in any mapping, is reported with the others: an
// unknown destination column, an unknown source column, an expression that
// does not compile, and an expression whose static type the destination
// column's type does not accept.
func Compile(spec Spec, source, dest []Column, opts Options) (Transformer, error) {
	var errs []error
	sourceTypes := make([]pgType, len(source))
	sourceIndex := make(map[string]int, len(source))
	for i, c := range source {
		sourceTypes[i] = parsePGType(c.Type)
		sourceIndex[c.Name] = i
	}
	destIndex := make(map[string]int, len(dest))
	for i, c := range dest {
		destIndex[c.Name] = i
	}

	funcs := helpers(opts.Now)
	for _, name := range slices.Sorted(maps.Keys(opts.Funcs)) {
		if err := checkFunc(name, opts.Funcs[name], funcs); err != nil {
			errs = append(errs, err)
			continue
		}
		funcs[name] = opts.Funcs[name]
	}
	exprs := newExprCompiler(source, sourceTypes, funcs)
	compile := func(what, input string, asBool bool) (compiledExpr, error) {
		ce, err := exprs.compile(input, asBool)
		if err != nil {
			return ce, fmt.Errorf("%s: %w", what, &exprError{expr: input, err: err})
		}
		if ce.usesNow && opts.Now.IsZero() {
			return ce, fmt.Errorf("%s: expression %q calls now(), but Options.Now (the job's start time) is not set", what, input)
		}
		return ce, nil
	}

	t := &compiled{}
	for _, c := range source {
		t.sourceNames = append(t.sourceNames, c.Name)
	}
	reads := make([]bool, len(source))
	mappings := spec.Columns
	if len(mappings) == 0 {
		for _, d := range dest {
			if _, ok := sourceIndex[d.Name]; ok {
				mappings = append(mappings, Mapping{Column: d.Name, Expr: d.Name})
			}
		}
		if len(mappings) == 0 {
			return nil, ErrNoCommonColumns
		}
	}
	for _, m := range mappings {
		what := fmt.Sprintf("column %q", m.Column)
		di, ok := destIndex[m.Column]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s (expression %q): no such column in the destination table", what, m.Expr))
			continue
		case slices.Contains(t.columns, m.Column):
			errs = append(errs, fmt.Errorf("%s (expression %q): listed twice", what, m.Expr))
			continue
		case strings.TrimSpace(m.Expr) == "":
			errs = append(errs, fmt.Errorf("%s: empty expression", what))
			continue
		}
		d := newDestColumn(dest[di])
		what = fmt.Sprintf("column %q (%s)", d.name, d.typ.name)
		o := output{dest: d, expr: strings.TrimSpace(m.Expr)}

		// An expression that is just a source column's name copies that
		// column's value without the detour through the environment: a
		// column of the same type (typmods aside, which the destination
		// applies) passes untouched, and need not even be decoded (see
		// Passes); numeric keeps every digit, json keeps its text.
		si, ok := sourceIndex[m.Expr]
		if !ok {
			si, ok = sourceIndex[o.expr]
		}
		if ok {
			st := sourceTypes[si]
			o.from, o.fromType, o.direct = si, st, copyIsDirect(st, d.typ)
			if !o.direct && !d.typ.accepts(st.class()) {
				errs = append(errs, fmt.Errorf("%s: source column %q of type %s cannot be written to %s; %s", what, o.expr, st.name, d.typ.name, d.typ.hint()))
				continue
			}
			o.byDest = !o.direct && destConverts(st, d.typ)
			t.add(o)
			continue
		}

		ce, err := compile(what, m.Expr, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !d.typ.accepts(classOf(ce.typ)) {
			errs = append(errs, fmt.Errorf("%s: expression %q has type %s, which cannot be written to %s; %s", what, m.Expr, ce.typ, d.typ.name, d.typ.hint()))
			continue
		}
		o.program, t.runs = ce.program, true
		for _, i := range ce.reads {
			reads[i] = true
		}
		t.add(o)
	}

	if strings.TrimSpace(spec.SkipIf) != "" {
		ce, err := compile("skip_if", spec.SkipIf, true)
		if err != nil {
			errs = append(errs, err)
		} else {
			t.skip, t.skipExpr, t.runs = ce.program, spec.SkipIf, true
			for _, i := range ce.reads {
				reads[i] = true
			}
		}
	}

	errs = append(errs, checkNotNull(dest, t.columns)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// A copy the destination converts gets the source's text form, so no
	// one else may need that column decoded: an expression reading it, or
	// a copy converting it in Go, takes it back to the Go conversion.
	for _, o := range t.outputs {
		if o.program == nil && !o.direct && !o.byDest {
			reads[o.from] = true
		}
	}
	for i := range t.outputs {
		if o := &t.outputs[i]; o.byDest && reads[o.from] {
			o.byDest = false
		}
	}
	for i, r := range reads {
		if r {
			t.inputs = append(t.inputs, input{index: i, name: source[i].Name, typ: sourceTypes[i]})
		}
	}
	t.pool.New = func() any { return newState(len(t.inputs)) }
	return t, nil
}

func checkFunc(name string, f Func, helpers map[string]Func) error {
	if _, ok := helpers[name]; ok {
		return fmt.Errorf("Options.Funcs[%q]: a built-in helper has that name; choose another", name)
	}
	if f.Fn == nil {
		return fmt.Errorf("Options.Funcs[%q]: Fn is nil", name)
	}
	for i, typ := range f.Types {
		rt := reflect.TypeOf(typ)
		if rt != nil && rt.Kind() == reflect.Pointer {
			rt = rt.Elem()
		}
		if rt == nil || rt.Kind() != reflect.Func {
			return fmt.Errorf("Options.Funcs[%q]: Types[%d] is %T, not a function value such as new(func(string) string)", name, i, typ)
		}
	}
	return nil
}

// compiled is the Transformer Compile returns.
type compiled struct {
	columns     []string
	outputs     []output
	skip        *vm.Program
	skipExpr    string
	inputs      []input   // the source columns the expressions read
	sourceNames []string  // every source column, in the order Apply gets them
	runs        bool      // some expression runs, so Apply needs a state
	pool        sync.Pool // *state
}

// input is a source column that expressions read.
type input struct {
	index int
	name  string
	typ   pgType
}

// output computes one destination value: by running program or, when
// program is nil, by copying source column from.
type output struct {
	dest     destColumn
	expr     string
	program  *vm.Program
	from     int
	fromType pgType
	direct   bool // the copy needs no conversion
	// byDest: the copy's conversion is the destination's, as INSERT …
	// SELECT converts: the value travels as its text form, never decoded.
	byDest bool
}

func (t *compiled) add(o output) {
	t.columns = append(t.columns, o.dest.name)
	t.outputs = append(t.outputs, o)
}

func (t *compiled) Columns() []string { return t.columns }

// Reads names the source columns that expressions read or outputs copy,
// in source order.
func (t *compiled) Reads() []string { return t.sourcesRead(func(output) bool { return true }) }

// Passes names the source column of each bare copy that needs no
// conversion; the other outputs are computed.
func (t *compiled) Passes() []int {
	passes := make([]int, len(t.outputs))
	for i, o := range t.outputs {
		passes[i] = -1
		if o.program == nil && (o.direct || o.byDest) {
			passes[i] = o.from
		}
	}
	return passes
}

// Decodes names the source columns that expressions read and those that a
// bare copy converts to another type, in source order.
func (t *compiled) Decodes() []string {
	return t.sourcesRead(func(o output) bool { return !o.direct && !o.byDest })
}

// sourcesRead names, in source order, the source columns that expressions
// read and those copied by the bare copies that copied selects.
func (t *compiled) sourcesRead(copied func(output) bool) []string {
	read := make(map[int]string, len(t.inputs)+len(t.outputs))
	for _, in := range t.inputs {
		read[in.index] = in.name
	}
	for _, o := range t.outputs {
		if o.program == nil && copied(o) {
			read[o.from] = t.sourceNames[o.from]
		}
	}
	names := make([]string, 0, len(read))
	for _, i := range slices.Sorted(maps.Keys(read)) {
		names = append(names, read[i])
	}
	return names
}

func (t *compiled) Apply(src, dst []any) (bool, error) {
	var st *state
	if t.runs {
		st = t.pool.Get().(*state)
		defer t.pool.Put(st)
		if err := st.load(t.inputs, src); err != nil {
			return false, &RowError{Err: err}
		}
	}
	if t.skip != nil {
		out, err := st.run(t.skip)
		if err != nil {
			return false, &RowError{Err: fmt.Errorf("skip_if: %w", &exprError{expr: t.skipExpr, err: err})}
		}
		if skip, _ := out.(bool); skip { // the compiled program casts to bool
			return false, nil
		}
	}
	for i := range t.outputs {
		v, err := t.outputs[i].eval(st, src)
		if err != nil {
			return false, &RowError{Column: t.outputs[i].dest.name, Err: &exprError{expr: t.outputs[i].expr, err: err}}
		}
		dst[i] = v
	}
	return true, nil
}

// load puts the source values the expressions read into the environment,
// each decoded once per row however many expressions read it.
func (s *state) load(inputs []input, src []any) error {
	for _, in := range inputs {
		v, err := in.typ.envValue(src[in.index])
		if err != nil {
			return fmt.Errorf("decode source column %q: %w", in.name, err)
		}
		s.env[in.name] = v
	}
	return nil
}

func (o *output) eval(st *state, src []any) (any, error) {
	if o.program == nil {
		v := src[o.from]
		if (o.direct || o.byDest) && (v != nil || !o.dest.notNull) {
			return v, nil
		}
		return o.dest.put(o.fromType.rawValue(v))
	}
	v, err := st.run(o.program)
	if err != nil {
		return nil, err
	}
	return o.dest.put(v)
}
