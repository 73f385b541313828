// Package transform turns one source row into one destination row.
//
// The worker hands every row it reads to a Transformer, which fills the
// destination values or filters the row out. There are three:
//
//   - Identity copies same-named columns, untouched.
//   - Compile builds one from a Spec: each destination column computed by an
//     expression over the source row, plus an optional skip_if filter.
//     Without columns it copies same-named columns, with the checks below.
//   - FromFunc wraps a Go function (RowFunc), for programs that embed
//     backfill. Go functions can also be called from expressions, beside the
//     helpers: see Options.Funcs.
//
// # Expressions
//
// Expressions are github.com/expr-lang/expr. Compile compiles each one once;
// Apply runs it for every row against an environment that holds the source
// row by column name:
//
//	source column type              in expressions
//	smallint, integer, bigint       int64
//	real, double precision          float64
//	numeric                         float64
//	text, varchar(n), char(n)       string
//	boolean                         bool
//	timestamp[tz], date             time.Time
//	uuid                            string, canonical form
//	json, jsonb                     decoded: map[string]any, []any, float64, string, bool, nil
//	bytea                           []byte
//	arrays                          string, PostgreSQL's text form: {1,2,3}
//	other types (enums, ranges,     string, the type's text form
//	inet, interval, ...)
//	NULL                            nil
//
// numeric is float64 so that amount * 1.1 and amount > 100 work as written;
// that keeps about 15 significant digits. An expression that is just a
// source column's name (amount: amount) copies the value without going
// through the environment, so numeric keeps every digit and json keeps its
// text. When the two columns have the same type (their typmods may differ:
// the destination applies its own, failing a value that does not fit) the
// value is not even decoded: Passes and Decodes tell the engine, which
// moves it as the source sent it (its binary form for a built-in type, its
// text form for the others) and has the destination read that, so it
// arrives exactly as the source holds it. Identity passes every column so.
// Only the json columns that expressions read are decoded, once per row.
//
// The static types above are what the checker knows; it does not know which
// values are NULL. A NULL where a value is needed fails the row:
// first_name + " " + last_name fails when last_name is NULL; write
// (last_name ?? "") or coalesce(last_name, ""). A column whose name is not an
// identifier is $env["first name"]; a column named like a function hides the
// function in calls.
//
// # Helpers
//
// All of expr's builtins (https://expr-lang.org/docs/language-definition)
// are available, with now, keys, values and toPairs replaced, plus these.
// All are pure and deterministic, so a chunk redone after a crash writes the
// same values. sha256, mask_email, parse_json and uuid_v5 return nil for a
// nil argument: NULL in, NULL out.
//
//	now() time.Time
//	    Options.Now, the job's start time: the same for every row of every run.
//	coalesce(a, b, ...) any
//	    The first argument that is not nil, or nil. Typed when all arguments
//	    are: coalesce(nick, name) is a string.
//	nullif(a, b) any
//	    nil when a == b, else a: nullif(trim(code), "") turns blanks into NULL.
//	sha256(s string | b []byte) string
//	    The SHA-256 digest of s or b, as 64 lower-case hex digits.
//	mask_email(s string) string
//	    The first character of the local part, "***", and the domain:
//	    "ada@example.com" → "a***@example.com"; "***" when s has no "@".
//	json(v any) JSON
//	    v as JSON text (encoding/json, map keys sorted, no HTML escaping):
//	    json({"a": 1}) → {"a":1}, json(nil) → null.
//	parse_json(s string) any
//	    s decoded from JSON text; fails the row when s is not JSON.
//	uuid_v5(namespace string, name string) string
//	    The RFC 4122 name-based (SHA-1) UUID of name in namespace, canonical
//	    form. namespace is a UUID or one of "dns", "url", "oid", "x500":
//	    uuid_v5("dns", "python.org") → "886313e1-3b8a-5372-9b90-0c9aee199e5d".
//	keys(m), values(m), toPairs(m)
//	    As expr's, but ordered by key: Go's map order is random.
//
// # Destination types
//
// Before any row, Compile checks every expression's static type, and every
// bare copy's source column type, against the destination column's type and
// refuses what the column would not take, naming the column, the expression
// and both types. A type only known at run time (a json field, a ternary
// with mixed branches) is checked row by row, like values: Apply writes
//
//	smallint, integer, bigint       int64 from any integer, or a whole float64
//	                                (JSON numbers); out of range fails the row
//	real, double precision          float64 from integers and floats
//	numeric                         int64, float64 or pgtype.Numeric; also
//	                                from a string, parsed
//	text, varchar(n), char(n)       string, also from JSON and uuid; longer
//	                                than n characters (save trailing spaces)
//	                                fails the row
//	boolean                         bool
//	timestamp[tz], date             time.Time
//	uuid                            [16]byte, from a string (parsed) or [16]byte
//	json, jsonb                     a string holding JSON text: a JSON value
//	                                as is, anything else encoded as by json(),
//	                                so a string result becomes a JSON string
//	bytea                           []byte, also from a string
//	arrays                          a string in the array's text form: a
//	                                string result as is, a list encoded
//	other types                     a string, the type's text form
//
// nil is SQL NULL, and fails the row for a NOT NULL column. Compile also
// refuses a NOT NULL destination column without a default that nothing
// writes.
//
// # Failures
//
// Compile reports every problem it finds, not just the first. A row whose
// expression fails (a NULL operand, a conversion, a value the column does
// not take) makes Apply return a *RowError naming the destination column
// ("" for skip_if) and the expression; the worker records the row as failed
// and the rest of the chunk goes on.
//
// # Never
//
// This package never touches the database and keeps no global mutable
// state. Nothing an expression can call reads a clock, a random source, the
// machine's time zone or environment, or follows Go's map order, so what it
// writes depends on the row, the spec and Options alone; Go functions
// (Options.Funcs, FromFunc) must keep the same promise. Programs are shared by
// the workers; what one Apply call needs for itself comes from a sync.Pool.
package transform
