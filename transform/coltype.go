package transform

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr/types"
	"github.com/jackc/pgx/v5/pgtype"
)

// kind is what this package needs to know about a PostgreSQL type: which Go
// value pgx hands over, how an expression sees it, and what a destination
// column of the type accepts.
type kind uint8

const (
	kindOther   kind = iota // enums, domains, extension types: anything not below
	kindInt                 // smallint, integer, bigint
	kindFloat               // real, double precision
	kindNumeric             // numeric(p,s)
	kindText                // text, character varying(n), character(n), name
	kindBool                // boolean
	kindTime                // timestamp with or without time zone, date
	kindUUID                // uuid
	kindJSON                // json, jsonb
	kindBytea               // bytea
	kindArray               // any array type, handed over in PostgreSQL's text form
)

// pgType is a column type as format_type reports it, typmod included,
// classified once at Compile so the per-row code only switches on small
// integers.
type pgType struct {
	name   string // as given: "character(8)"
	base   string // without the typmod: "character"
	kind   kind
	bits   int // integer and float width
	length int // the n of character varying(n) and character(n); 0 when unlimited
}

func parsePGType(name string) pgType {
	// "character varying(20)" → "character varying" with modifier "20";
	// "timestamp(3) with time zone" → "timestamp with time zone";
	// "character(6)[]" → "character[]".
	t := pgType{name: name}
	base, mod := withoutModifier(strings.TrimSpace(name))
	t.base = base
	if strings.HasSuffix(base, "[]") {
		t.kind = kindArray
		return t
	}
	switch strings.ToLower(base) {
	case "smallint", "int2":
		t.kind, t.bits = kindInt, 16
	case "integer", "int", "int4":
		t.kind, t.bits = kindInt, 32
	case "bigint", "int8":
		t.kind, t.bits = kindInt, 64
	case "real", "float4":
		t.kind, t.bits = kindFloat, 32
	case "double precision", "float8":
		t.kind, t.bits = kindFloat, 64
	case "numeric", "decimal":
		t.kind = kindNumeric
	case "text", "name", "bpchar":
		t.kind = kindText
	case "character varying", "varchar", "character", "char":
		t.kind = kindText
		t.length, _ = strconv.Atoi(mod)
	case "boolean", "bool":
		t.kind = kindBool
	case "timestamp with time zone", "timestamptz", "timestamp without time zone", "timestamp", "date":
		t.kind = kindTime
	case "uuid":
		t.kind = kindUUID
	case "json", "jsonb":
		t.kind = kindJSON
	case "bytea":
		t.kind = kindBytea
	}
	return t
}

// withoutModifier splits the first parenthesised modifier off a type name.
func withoutModifier(name string) (base, mod string) {
	if i := strings.IndexByte(name, '('); i >= 0 {
		if j := strings.IndexByte(name[i:], ')'); j >= 0 {
			return name[:i] + name[i+j+1:], name[i+1 : i+j]
		}
	}
	return name, ""
}

// envType is the static type an expression sees for a source column of this
// type. Integers are int64 because pgx already hands bigint over as int64, so
// the commonest key type enters the environment without a copy, and expr's
// checker mixes int64 with int literals (score >= 500) freely. numeric is
// float64 so that arithmetic and comparisons with literals just work; a
// numeric column copied bare (amount: amount) skips the environment and
// keeps every digit.
func (t pgType) envType() types.Type {
	switch t.kind {
	case kindInt:
		return types.Int64
	case kindFloat, kindNumeric:
		return types.Float64
	case kindText, kindUUID, kindArray:
		return types.String
	case kindBool:
		return types.Bool
	case kindTime:
		return types.TypeOf(time.Time{})
	case kindBytea:
		return types.TypeOf([]byte(nil))
	}
	return types.Any // json (decoded: map, slice, float64, string, bool) and unknown types
}

// envValue turns the value pgx decoded into what expressions see; see
// envType for the choices.
func (t pgType) envValue(v any) (any, error) {
	switch t.kind {
	case kindInt:
		switch x := v.(type) {
		case int16:
			return int64(x), nil
		case int32:
			return int64(x), nil
		case int:
			return int64(x), nil
		}
	case kindFloat:
		if x, ok := v.(float32); ok {
			return widen(x), nil
		}
	case kindNumeric:
		if x, ok := v.(pgtype.Numeric); ok {
			if !x.Valid {
				return nil, nil
			}
			f, err := x.Float64Value()
			if err != nil {
				return nil, err
			}
			return f.Float64, nil
		}
	case kindUUID:
		if x, ok := v.([16]byte); ok {
			return formatUUID(x), nil
		}
	case kindJSON:
		var text []byte
		switch x := v.(type) {
		case string:
			text = []byte(x)
		case []byte:
			text = x
		default:
			return v, nil
		}
		var decoded any
		if err := json.Unmarshal(text, &decoded); err != nil {
			return nil, err
		}
		return decoded, nil
	}
	return v, nil
}

// widen turns a real into the float64 with the same shortest decimal form,
// so that 0.1 stays 0.1 rather than becoming 0.10000000149011612.
func widen(f float32) float64 {
	var buf [32]byte
	g, err := strconv.ParseFloat(string(strconv.AppendFloat(buf[:0], float64(f), 'g', -1, 32)), 64)
	if err != nil { // ±Inf and NaN
		return float64(f)
	}
	return g
}

// rawValue is the value a Go function and a bare column copy see: what pgx
// decoded, except that json and jsonb text becomes JSON, so that writing it
// back to a json column stores it as is.
func (t pgType) rawValue(v any) any {
	if t.kind == kindJSON {
		switch x := v.(type) {
		case string:
			return JSON(x)
		case []byte:
			return JSON(x)
		}
	}
	return v
}

// class groups value types by the destination columns that accept them.
type class uint8

const (
	classAny     class = iota // not known before run time: checked row by row
	classInt                  // Go integers
	classFloat                // float32, float64
	classNumeric              // a numeric column's pgtype.Numeric
	classString
	classJSON // JSON text: a json column, or json(...)
	classBool
	classTime
	classUUID // a uuid column's [16]byte
	classBytes
	classList      // slices and arrays
	classMap       // maps
	classArrayText // an array column: its text form
	classTypeText  // a column of a type this package does not know
	classOther     // anything else, time.Duration for one
)

var (
	jsonType     = reflect.TypeFor[JSON]()
	timeType     = reflect.TypeFor[time.Time]()
	durationType = reflect.TypeFor[time.Duration]()
	uuidType     = reflect.TypeFor[[16]byte]()
	bytesType    = reflect.TypeFor[[]byte]()
)

func classOf(t reflect.Type) class {
	switch {
	case t == nil || t.Kind() == reflect.Interface:
		return classAny
	case t == jsonType:
		return classJSON
	case t == timeType:
		return classTime
	case t == durationType:
		return classOther
	case t == uuidType:
		return classUUID
	case t == bytesType:
		return classBytes
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return classInt
	case reflect.Float32, reflect.Float64:
		return classFloat
	case reflect.String:
		return classString
	case reflect.Bool:
		return classBool
	case reflect.Slice, reflect.Array:
		return classList
	case reflect.Map:
		return classMap
	}
	return classOther
}

// class is the class of a bare column copy's value (see rawValue).
func (t pgType) class() class {
	switch t.kind {
	case kindInt:
		return classInt
	case kindFloat:
		return classFloat
	case kindNumeric:
		return classNumeric
	case kindText:
		return classString
	case kindBool:
		return classBool
	case kindTime:
		return classTime
	case kindUUID:
		return classUUID
	case kindJSON:
		return classJSON
	case kindBytea:
		return classBytes
	case kindArray:
		return classArrayText
	}
	return classTypeText
}

// accepts reports whether a value of class c can be written to a column of
// this type. Nothing lossy or surprising is accepted: an int is not silently
// turned into text, nor a float into an integer.
func (t pgType) accepts(c class) bool {
	var ok []class
	switch t.kind {
	case kindInt:
		ok = []class{classInt}
	case kindFloat:
		ok = []class{classInt, classFloat, classNumeric}
	case kindNumeric:
		ok = []class{classInt, classFloat, classNumeric, classString}
	case kindText:
		ok = []class{classString, classJSON, classUUID, classArrayText, classTypeText}
	case kindBool:
		ok = []class{classBool}
	case kindTime:
		ok = []class{classTime}
	case kindUUID:
		ok = []class{classString, classUUID}
	case kindJSON:
		ok = []class{classInt, classFloat, classNumeric, classString, classJSON, classBool, classTime, classUUID, classList, classMap}
	case kindBytea:
		ok = []class{classBytes, classString}
	case kindArray:
		ok = []class{classString, classList, classArrayText}
	default:
		ok = []class{classString, classTypeText}
	}
	return c == classAny || slices.Contains(ok, c)
}

// hint says how to fix a refused type pair.
func (t pgType) hint() string {
	switch t.kind {
	case kindInt:
		return "convert with int(...), round(...) or floor(...)"
	case kindFloat, kindNumeric:
		return "convert with float(...)"
	case kindText:
		return "convert with string(...)"
	case kindBool:
		return "compare, for example x == ..."
	case kindTime:
		return "parse with date(...)"
	case kindUUID:
		return "produce a string such as uuid_v5(...)"
	case kindBytea:
		return "produce bytes or a string"
	case kindJSON:
		return "convert with string(...), or toBase64(...) for bytes"
	case kindArray:
		return "build a list [a, b] or a string in the array's text form"
	}
	return "produce a string in the type's text form"
}

// copyIsDirect reports whether a bare column copy can hand the source value
// to the destination untouched: the types are the same but for their
// typmods, which the destination's assignment applies as INSERT … SELECT
// would (failing a value too long, never cutting it), or both are JSON,
// whose text each reads as the other.
func copyIsDirect(src, dst pgType) bool {
	return src.base == dst.base || (src.kind == kindJSON && dst.kind == kindJSON)
}

// destConverts reports whether a bare copy from src to dst is better left
// to the destination's assignment, exactly as INSERT … SELECT converts,
// than converted through Go values: a float4 widened in Go gains digits
// (0.1 → 0.10000000149011612), a char(n) keeps its padding in text, an
// infinite timestamptz has no Go date. Any type reads into text; numbers
// into numbers and times into times have assignment casts. Strings into
// uuid, bytea, json or numeric have none (INSERT … SELECT refuses them),
// so those stay the transform's.
func destConverts(src, dst pgType) bool {
	number := func(k kind) bool { return k == kindInt || k == kindFloat || k == kindNumeric }
	switch {
	case dst.kind == kindText:
		return true
	case number(src.kind) && number(dst.kind):
		return true
	}
	return src.kind == kindTime && dst.kind == kindTime
}

// value turns v into what the worker writes to a column of this type (see
// the package documentation for the table). It is the single place where
// expression results, bare copies and Go function results meet the
// destination's type.
func (t pgType) value(v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch t.kind {
	case kindInt:
		return t.intValue(v)
	case kindFloat:
		return t.floatValue(v)
	case kindNumeric:
		return numericValue(v)
	case kindText:
		return t.textValue(v)
	case kindBool:
		if _, ok := v.(bool); ok {
			return v, nil
		}
	case kindTime:
		if _, ok := v.(time.Time); ok {
			return v, nil
		}
	case kindUUID:
		return uuidValue(v)
	case kindJSON:
		return jsonValue(v)
	case kindBytea:
		switch x := v.(type) {
		case []byte:
			return v, nil
		case string:
			return []byte(x), nil
		}
	case kindArray:
		if _, ok := v.(string); ok {
			return v, nil
		}
		if rv := reflect.ValueOf(v); (rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array) && rv.Type() != bytesType && rv.Type() != uuidType {
			b, err := appendArray(nil, rv)
			if err != nil {
				return nil, err
			}
			return string(b), nil
		}
	default:
		switch x := v.(type) {
		case string:
			return v, nil
		case JSON:
			return string(x), nil
		}
		return nil, fmt.Errorf("cannot write %T to %s: it needs a string in the type's text form", v, t.name)
	}
	return nil, fmt.Errorf("cannot write %T to %s", v, t.name)
}

func (t pgType) intValue(v any) (any, error) {
	var n int64
	switch x := v.(type) {
	case int64:
		n = x
	case int:
		n = int64(x)
	case int32:
		n = int64(x)
	case int16:
		n = int64(x)
	case int8:
		n = int64(x)
	case uint8:
		n = int64(x)
	case uint16:
		n = int64(x)
	case uint32:
		n = int64(x)
	case uint:
		if uint64(x) > math.MaxInt64 {
			return nil, fmt.Errorf("value %d out of range for %s", x, t.name)
		}
		n = int64(x)
	case uint64:
		if x > math.MaxInt64 {
			return nil, fmt.Errorf("value %d out of range for %s", x, t.name)
		}
		n = int64(x)
	case float64:
		// JSON numbers are float64; whole ones are welcome in integer columns.
		if x != math.Trunc(x) || x < math.MinInt64 || x >= math.MaxInt64 {
			return nil, fmt.Errorf("value %v is not an integer in range for %s", x, t.name)
		}
		n = int64(x)
	case float32:
		return t.intValue(float64(x))
	default:
		return nil, fmt.Errorf("cannot write %T to %s", v, t.name)
	}
	if t.bits < 64 && (n < -1<<(t.bits-1) || n >= 1<<(t.bits-1)) {
		return nil, fmt.Errorf("value %d out of range for %s", n, t.name)
	}
	if _, ok := v.(int64); ok {
		return v, nil // no new box
	}
	return n, nil
}

func (t pgType) floatValue(v any) (any, error) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case float32:
		return float64(x), nil
	case pgtype.Numeric:
		g, err := x.Float64Value()
		if err != nil {
			return nil, err
		}
		if !g.Valid {
			return nil, nil
		}
		f = g.Float64
	default:
		n, err := pgType{name: t.name, kind: kindInt, bits: 64}.intValue(v)
		if err != nil {
			return nil, err
		}
		return float64(n.(int64)), nil
	}
	if t.bits == 32 && !math.IsInf(f, 0) && math.Abs(f) > math.MaxFloat32 {
		return nil, fmt.Errorf("value %v out of range for %s", f, t.name)
	}
	if _, ok := v.(float64); ok {
		return v, nil
	}
	return f, nil
}

func numericValue(v any) (any, error) {
	switch x := v.(type) {
	case int64, float64, pgtype.Numeric:
		return v, nil
	case float32:
		return float64(x), nil
	case string:
		var n pgtype.Numeric
		if err := n.Scan(x); err != nil {
			return nil, fmt.Errorf("%q is not a numeric: %w", x, err)
		}
		return n, nil
	}
	n, err := pgType{name: "numeric", kind: kindInt, bits: 64}.intValue(v)
	if err != nil {
		return nil, fmt.Errorf("cannot write %T to numeric", v)
	}
	return n, nil
}

func (t pgType) textValue(v any) (any, error) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case JSON:
		s = string(x)
		v = s
	case [16]byte:
		return formatUUID(x), nil
	default:
		return nil, fmt.Errorf("cannot write %T to %s", v, t.name)
	}
	// PostgreSQL refuses a too long value unless the excess is all spaces,
	// which it cuts; refusing it here fails one row instead of the chunk.
	if t.length > 0 && len(s) > t.length {
		if i := runeOffset(s, t.length); i < len(s) && strings.TrimLeft(s[i:], " ") != "" {
			return nil, fmt.Errorf("value of %d characters too long for %s", utf8.RuneCountInString(s), t.name)
		}
	}
	return v, nil
}

// runeOffset is the byte offset of the n-th rune of s, or len(s).
func runeOffset(s string, n int) int {
	for i := range s {
		if n == 0 {
			return i
		}
		n--
	}
	return len(s)
}

func uuidValue(v any) (any, error) {
	switch x := v.(type) {
	case [16]byte:
		return v, nil
	case string:
		u, err := parseUUID(x)
		if err != nil {
			return nil, err
		}
		return u, nil
	case pgtype.UUID:
		if !x.Valid {
			return nil, nil
		}
		return x.Bytes, nil
	}
	return nil, fmt.Errorf("cannot write %T to uuid", v)
}

// jsonValue produces the JSON text the worker writes to a json or jsonb
// column. A JSON value is already JSON text; a plain string is a JSON string.
func jsonValue(v any) (any, error) {
	switch x := v.(type) {
	case JSON:
		if !json.Valid([]byte(x)) {
			return nil, fmt.Errorf("invalid JSON text %.40q", string(x))
		}
		return string(x), nil
	case [16]byte:
		v = formatUUID(x)
	case []byte:
		return nil, fmt.Errorf("cannot write []byte to json: encode it with toBase64(...) first")
	}
	text, err := marshalJSON(v)
	if err != nil {
		return nil, err
	}
	return string(text), nil
}

// appendArray writes a list in PostgreSQL's array text form: {1,2,NULL},
// {"a b","c\"d"}, {{1,2},{3,4}}.
func appendArray(b []byte, rv reflect.Value) ([]byte, error) {
	b = append(b, '{')
	for i := range rv.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		e := rv.Index(i)
		for e.Kind() == reflect.Interface && !e.IsNil() {
			e = e.Elem()
		}
		if (e.Kind() == reflect.Slice || e.Kind() == reflect.Array) && e.Type() != bytesType && e.Type() != uuidType {
			var err error
			if b, err = appendArray(b, e); err != nil {
				return nil, err
			}
			continue
		}
		if !e.IsValid() || e.Kind() == reflect.Interface || (e.Kind() == reflect.Map && e.IsNil()) {
			b = append(b, "NULL"...)
			continue
		}
		var err error
		if b, err = appendArrayElement(b, e.Interface()); err != nil {
			return nil, fmt.Errorf("array element %d: %w", i, err)
		}
	}
	return append(b, '}'), nil
}

func appendArrayElement(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case bool:
		if x {
			return append(b, 't'), nil
		}
		return append(b, 'f'), nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Append(b, x), nil
	case float32:
		return appendFloat(b, float64(x)), nil
	case float64:
		return appendFloat(b, x), nil
	case string:
		return appendQuoted(b, x), nil
	case JSON:
		return appendQuoted(b, string(x)), nil
	case time.Time:
		return appendQuoted(b, x.Format(time.RFC3339Nano)), nil
	case [16]byte:
		return appendQuoted(b, formatUUID(x)), nil
	case []byte:
		return appendQuoted(b, `\x`+fmt.Sprintf("%x", x)), nil
	case map[string]any:
		text, err := marshalJSON(x)
		if err != nil {
			return nil, err
		}
		return appendQuoted(b, string(text)), nil
	}
	return nil, fmt.Errorf("cannot write %T into an array", v)
}

func appendFloat(b []byte, f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return append(b, "Infinity"...)
	case math.IsInf(f, -1):
		return append(b, "-Infinity"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64) // NaN prints as NaN
}

func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}
