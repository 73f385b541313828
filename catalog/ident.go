package catalog

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// maxIdentifierBytes is PostgreSQL's NAMEDATALEN - 1.
const maxIdentifierBytes = 63

// TableName is a possibly schema-qualified table name.
type TableName struct {
	Schema string // "" means: resolve through search_path
	Name   string
}

// Identifier returns the name as pgx quotes it.
func (t TableName) Identifier() pgx.Identifier {
	if t.Schema == "" {
		return pgx.Identifier{t.Name}
	}
	return pgx.Identifier{t.Schema, t.Name}
}

// String returns the name quoted for SQL.
func (t TableName) String() string { return t.Identifier().Sanitize() }

// ParseTableName reads "table", "schema.table" or quoted forms such as
// `sales."Order Items"`.
func ParseTableName(s string) (TableName, error) {
	parts, err := splitIdentifiers(s, '.')
	if err != nil {
		return TableName{}, fmt.Errorf("table name %q: %w", s, err)
	}
	switch len(parts) {
	case 1:
		return TableName{Name: parts[0]}, nil
	case 2:
		return TableName{Schema: parts[0], Name: parts[1]}, nil
	default:
		return TableName{}, fmt.Errorf("table name %q: expected table or schema.table, got %d dot-separated parts", s, len(parts))
	}
}

// ParseColumnList reads a comma-separated list of column names, such as
// `tenant_id, "Order No"`.
func ParseColumnList(s string) ([]string, error) {
	cols, err := splitIdentifiers(s, ',')
	if err != nil {
		return nil, fmt.Errorf("column list %q: %w", s, err)
	}
	seen := map[string]bool{}
	for _, c := range cols {
		if seen[c] {
			return nil, fmt.Errorf("column list %q: column %q appears twice", s, c)
		}
		seen[c] = true
	}
	return cols, nil
}

// ParseColumnName reads one column name.
func ParseColumnName(s string) (string, error) {
	cols, err := splitIdentifiers(s, 0)
	if err != nil {
		return "", fmt.Errorf("column name %q: %w", s, err)
	}
	return cols[0], nil
}

// splitIdentifiers splits s on sep (0: no separator allowed) outside double
// quotes and normalises each part as PostgreSQL does.
func splitIdentifiers(s string, sep rune) ([]string, error) {
	var parts []string
	var cur strings.Builder
	quoted, inQuotes, started := false, false, false
	finish := func() error {
		if !started {
			return fmt.Errorf("empty name")
		}
		p := cur.String()
		if !quoted {
			p = strings.TrimSpace(p)
			if err := checkUnquoted(p); err != nil {
				return err
			}
			p = foldASCII(p)
		}
		if len(p) > maxIdentifierBytes {
			return fmt.Errorf("name %q is longer than %d bytes", p, maxIdentifierBytes)
		}
		parts = append(parts, p)
		cur.Reset()
		quoted, started = false, false
		return nil
	}
	runes := []rune(s)
	for i := 0; i < len(runes); i++ {
		r := runes[i]
		switch {
		case inQuotes && r == '"':
			if i+1 < len(runes) && runes[i+1] == '"' {
				cur.WriteRune('"')
				i++
			} else {
				inQuotes = false
			}
		case inQuotes:
			cur.WriteRune(r)
		case r == '"':
			if started && strings.TrimSpace(cur.String()) != "" || quoted {
				return nil, fmt.Errorf("quote in the middle of a name")
			}
			cur.Reset()
			quoted, inQuotes, started = true, true, true
		case sep != 0 && r == sep:
			if err := finish(); err != nil {
				return nil, err
			}
		case quoted:
			if r != ' ' && r != '\t' {
				return nil, fmt.Errorf("unexpected %q after a quoted name", r)
			}
		default:
			if r == ' ' || r == '\t' {
				if !started {
					continue
				}
			}
			cur.WriteRune(r)
			started = true
		}
	}
	if inQuotes {
		return nil, fmt.Errorf("unterminated double quote")
	}
	if quoted && cur.Len() == 0 {
		return nil, fmt.Errorf("zero-length quoted name")
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return parts, nil
}

// checkUnquoted accepts what PostgreSQL accepts as an unquoted identifier:
// a letter, underscore or non-ASCII character first, then those, digits or $.
func checkUnquoted(p string) error {
	if p == "" {
		return fmt.Errorf("empty name")
	}
	for i, r := range p {
		ok := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= utf8.RuneSelf ||
			i > 0 && (r >= '0' && r <= '9' || r == '$')
		if !ok {
			return fmt.Errorf("%q is not a valid unquoted name (character %q); put it in double quotes if that is its real name", p, r)
		}
	}
	return nil
}

// foldASCII lower-cases ASCII letters only, as PostgreSQL does for unquoted
// identifiers in a UTF-8 database.
func foldASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
