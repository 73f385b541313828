package throttle

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Rate is a --rate setting: a fixed cap, or auto under an optional
// ceiling.
type Rate struct {
	// Auto says the AutoRate sets the cap.
	Auto bool
	// PerSecond is the fixed cap in rows per second, or the ceiling of
	// auto; zero means none.
	PerSecond float64
}

const autoRate = "auto"

// ParseRate reads a --rate: ROWS_PER_S (0 for no cap), auto, or
// auto:MAX.
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, autoRate); ok {
		if rest == "" {
			return Rate{Auto: true}, nil
		}
		ceiling, ok := strings.CutPrefix(rest, ":")
		if !ok {
			return Rate{}, fmt.Errorf("rate %q: want ROWS_PER_S, auto or auto:MAX", s)
		}
		n, err := parseRows(ceiling)
		if err != nil || n == 0 {
			return Rate{}, fmt.Errorf("rate %q: MAX must be rows per second above 0 (auto alone has no ceiling)", s)
		}
		return Rate{Auto: true, PerSecond: n}, nil
	}
	n, err := parseRows(s)
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: want ROWS_PER_S (0 for no cap), auto or auto:MAX", s)
	}
	return Rate{PerSecond: n}, nil
}

func parseRows(s string) (float64, error) {
	n, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	if n < 0 || n != n || n > 1e15 {
		return 0, errors.New("out of range")
	}
	return n, nil
}

// String writes r as ParseRate reads it.
func (r Rate) String() string {
	n := strconv.FormatFloat(r.PerSecond, 'f', -1, 64)
	switch {
	case r.Auto && r.PerSecond > 0:
		return autoRate + ":" + n
	case r.Auto:
		return autoRate
	}
	return n
}

// MarshalText implements encoding.TextMarshaler, for specs and flags.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Rate) UnmarshalText(b []byte) error {
	parsed, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = parsed
	return nil
}
