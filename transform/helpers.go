package transform

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm/runtime"
)

// JSON is JSON text. Written to a json or jsonb column it is stored as is,
// where a plain string is stored as a JSON string: json("x") and "x" both
// store the JSON string "x", json({"a": 1}) and {"a": 1} both store an object.
// The json(...) helper returns it, and Row.Get returns json and jsonb source
// values as JSON.
type JSON string

// Func is a Go function callable from expressions under the name it is
// registered with in Options.Funcs. Fn receives the call's arguments; Types
// are optional function values, such as new(func(string, int) string), whose
// signatures the checker uses to refuse bad calls at Compile and to know the
// result type (a call's result is otherwise only known at run time). Fn must
// be pure and deterministic, like the built-in helpers, and safe for
// concurrent use. An expression that calls a Func allocates the argument
// slice on every row.
type Func struct {
	Fn    func(args ...any) (any, error)
	Types []any
}

// helpers returns the helper functions, built per Compile because now()
// captures the job's start time.
func helpers(now time.Time) map[string]Func {
	return map[string]Func{
		"now": {
			Fn:    func(...any) (any, error) { return now, nil },
			Types: []any{new(func() time.Time)},
		},
		"coalesce": {
			Fn: coalesce,
			Types: []any{
				new(func(...string) string),
				new(func(...int64) int64),
				new(func(...float64) float64),
				new(func(...bool) bool),
				new(func(...time.Time) time.Time),
				new(func(...any) any),
			},
		},
		"nullif": {
			Fn: nullif,
			Types: []any{
				new(func(string, string) string),
				new(func(int64, int64) int64),
				new(func(float64, float64) float64),
				new(func(any, any) any),
			},
		},
		"sha256": {
			Fn:    sha256Hex,
			Types: []any{new(func(string) string), new(func([]byte) string)},
		},
		"mask_email": {
			Fn:    maskEmail,
			Types: []any{new(func(string) string)},
		},
		"json": {
			Fn:    toJSON,
			Types: []any{new(func(any) JSON)},
		},
		"parse_json": {
			Fn:    parseJSON,
			Types: []any{new(func(string) any)},
		},
		"uuid_v5": {
			Fn:    uuidV5,
			Types: []any{new(func(string, string) string)},
		},
		// expr's own keys, values and toPairs follow Go's random map order;
		// these sort by key so a redone chunk writes the same lists.
		"keys": {
			Fn:    sortedKeys,
			Types: []any{new(func(map[string]any) []any)},
		},
		"values": {
			Fn:    sortedValues,
			Types: []any{new(func(map[string]any) []any)},
		},
		"toPairs": {
			Fn:    sortedPairs,
			Types: []any{new(func(map[string]any) [][2]any)},
		},
	}
}

func coalesce(args ...any) (any, error) {
	for _, a := range args {
		if a != nil {
			return a, nil
		}
	}
	return nil, nil
}

func nullif(args ...any) (any, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("nullif takes 2 arguments, got %d", len(args))
	}
	if args[0] != nil && args[1] != nil && runtime.Equal(args[0], args[1]) {
		return nil, nil
	}
	return args[0], nil
}

func sha256Hex(args ...any) (any, error) {
	var sum [sha256.Size]byte
	switch x := args[0].(type) {
	case nil:
		return nil, nil
	case string:
		sum = sha256.Sum256([]byte(x))
	case []byte:
		sum = sha256.Sum256(x)
	default:
		return nil, fmt.Errorf("sha256 takes a string or bytes, got %T", x)
	}
	return hex.EncodeToString(sum[:]), nil
}

func maskEmail(args ...any) (any, error) {
	if args[0] == nil {
		return nil, nil
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("mask_email takes a string, got %T", args[0])
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return "***", nil
	}
	local, domain := s[:at], s[at:]
	for _, r := range local {
		return string(r) + "***" + domain, nil
	}
	return "***" + domain, nil
}

func toJSON(args ...any) (any, error) {
	text, err := marshalJSON(args[0])
	if err != nil {
		return nil, err
	}
	return JSON(text), nil
}

func parseJSON(args ...any) (any, error) {
	var text []byte
	switch x := args[0].(type) {
	case nil:
		return nil, nil
	case string:
		text = []byte(x)
	case JSON:
		text = []byte(x)
	case []byte:
		text = x
	default:
		return nil, fmt.Errorf("parse_json takes a string, got %T", x)
	}
	var v any
	if err := json.Unmarshal(text, &v); err != nil {
		return nil, fmt.Errorf("parse_json: %w", err)
	}
	return v, nil
}

// marshalJSON is encoding/json without HTML escaping: json columns keep
// their text verbatim, and <, > and & need no escaping there. Map keys come
// out sorted.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// uuidNamespace resolves the well-known namespace names of RFC 4122
// appendix C; anything else must be a UUID.
func uuidNamespace(name string) string {
	switch strings.ToLower(name) {
	case "dns":
		return "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	case "url":
		return "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
	case "oid":
		return "6ba7b812-9dad-11d1-80b4-00c04fd430c8"
	case "x500":
		return "6ba7b814-9dad-11d1-80b4-00c04fd430c8"
	}
	return name
}

// uuidV5 is the name-based UUID of RFC 4122 section 4.3 (SHA-1).
func uuidV5(args ...any) (any, error) {
	if args[0] == nil || args[1] == nil {
		return nil, nil
	}
	ns, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("uuid_v5 takes a namespace string, got %T", args[0])
	}
	space, err := parseUUID(uuidNamespace(ns))
	if err != nil {
		return nil, fmt.Errorf("uuid_v5 namespace: %w", err)
	}
	var name []byte
	switch x := args[1].(type) {
	case string:
		name = []byte(x)
	case []byte:
		name = x
	default:
		return nil, fmt.Errorf("uuid_v5 takes a name string, got %T", x)
	}
	h := sha1.New()
	h.Write(space[:])
	h.Write(name)
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return formatUUID(u), nil
}

func formatUUID(u [16]byte) string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// parseUUID accepts the canonical form, 32 bare hex digits, and either in
// braces, in any case.
func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	in := s
	if len(in) >= 2 && in[0] == '{' && in[len(in)-1] == '}' {
		in = in[1 : len(in)-1]
	}
	if len(in) == 36 {
		if in[8] != '-' || in[13] != '-' || in[18] != '-' || in[23] != '-' {
			return u, fmt.Errorf("invalid UUID %q", s)
		}
		in = in[0:8] + in[9:13] + in[14:18] + in[19:23] + in[24:]
	}
	if len(in) != 32 {
		return u, fmt.Errorf("invalid UUID %q", s)
	}
	if _, err := hex.Decode(u[:], []byte(in)); err != nil {
		return u, fmt.Errorf("invalid UUID %q", s)
	}
	return u, nil
}

func sortedMap(arg any, name string) (reflect.Value, []reflect.Value, error) {
	v := reflect.ValueOf(arg)
	if v.Kind() != reflect.Map {
		return v, nil, fmt.Errorf("%s takes a map, got %T", name, arg)
	}
	keys := v.MapKeys()
	slices.SortFunc(keys, func(a, b reflect.Value) int {
		return strings.Compare(fmt.Sprint(a.Interface()), fmt.Sprint(b.Interface()))
	})
	return v, keys, nil
}

func sortedKeys(args ...any) (any, error) {
	_, keys, err := sortedMap(args[0], "keys")
	if err != nil {
		return nil, err
	}
	out := make([]any, len(keys))
	for i, k := range keys {
		out[i] = k.Interface()
	}
	return out, nil
}

func sortedValues(args ...any) (any, error) {
	m, keys, err := sortedMap(args[0], "values")
	if err != nil {
		return nil, err
	}
	out := make([]any, len(keys))
	for i, k := range keys {
		out[i] = m.MapIndex(k).Interface()
	}
	return out, nil
}

func sortedPairs(args ...any) (any, error) {
	m, keys, err := sortedMap(args[0], "toPairs")
	if err != nil {
		return nil, err
	}
	out := make([][2]any, len(keys))
	for i, k := range keys {
		out[i] = [2]any{k.Interface(), m.MapIndex(k).Interface()}
	}
	return out, nil
}
