package benchdata

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Execer is what building a table needs: a *pgx.Conn or a *pgxpool.Pool.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Column is one column of the table, as the engine's packages describe
// columns: each benchmark turns it into its own package's type.
type Column struct {
	Name string
	Type string // format_type, without typmod
	OID  uint32
	// Text: the engine reads and writes the value as its text form (jsonb).
	Text bool
}

// Columns are the table's columns in order.
var Columns = []Column{
	{Name: "id", Type: "bigint", OID: pgtype.Int8OID},
	{Name: "name", Type: "text", OID: pgtype.TextOID},
	{Name: "email", Type: "text", OID: pgtype.TextOID},
	{Name: "city", Type: "text", OID: pgtype.TextOID},
	{Name: "qty", Type: "integer", OID: pgtype.Int4OID},
	{Name: "created_at", Type: "timestamp with time zone", OID: pgtype.TimestamptzOID},
	{Name: "attrs", Type: "jsonb", OID: pgtype.JSONBOID, Text: true},
}

var cities = []string{"Berlin", "Lisbon", "Osaka", "Toronto", "Nairobi", "Lima", "Oslo", "Hanoi"}

var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Row is the row Fill writes for key id, as the paginator hands it to the
// workers: Go values, jsonb as its text. Micro-benchmarks that need no
// database use it; TestRowMatchesFill keeps it equal to what Fill writes.
func Row(id int64) []any {
	var email, city any
	if id%50 != 0 {
		email = fmt.Sprintf("user%d@example.com", id)
	}
	if id%20 != 0 {
		city = cities[id%8]
	}
	return []any{
		id,
		fmt.Sprintf("customer %d", id),
		email,
		city,
		int32(id * 7919 % 100000),
		epoch.Add(time.Duration(id) * 17 * time.Second),
		// jsonb prints keys shortest first, then in byte order
		fmt.Sprintf(`{"n": %d, "tag": "t%d", "gift": %t}`, id%1000, id%7, id%3 == 0),
	}
}

// Create makes an empty table of the benchmark's shape, primary key
// included. Autovacuum is off on it: a vacuum that wakes up during one
// method's run would charge that method, or the next, for another's rows.
func Create(ctx context.Context, db Execer, table pgx.Identifier) error {
	q := fmt.Sprintf(`CREATE TABLE %s (
	id         bigint PRIMARY KEY,
	name       text NOT NULL,
	email      text,
	city       text,
	qty        integer NOT NULL,
	created_at timestamptz NOT NULL,
	attrs      jsonb
) WITH (autovacuum_enabled = off, toast.autovacuum_enabled = off)`, table.Sanitize())
	if _, err := db.Exec(ctx, q); err != nil {
		return fmt.Errorf("create benchmark table %s: %w", table.Sanitize(), err)
	}
	return nil
}

// Fill inserts the rows with keys first…last (dense keys, so "every 100th
// row" is id % 100 = 0). Values vary by key: texts of 6–25 characters,
// one email in 50 and one city in 20 NULL, a three-key jsonb object.
func Fill(ctx context.Context, db Execer, table pgx.Identifier, first, last int64) error {
	q := fmt.Sprintf(`INSERT INTO %s
SELECT g,
       'customer ' || g,
       CASE WHEN g %% 50 <> 0 THEN 'user' || g || '@example.com' END,
       CASE WHEN g %% 20 <> 0 THEN (ARRAY['Berlin', 'Lisbon', 'Osaka', 'Toronto', 'Nairobi', 'Lima', 'Oslo', 'Hanoi'])[1 + g %% 8] END,
       (g * 7919 %% 100000)::integer,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '17 seconds',
       jsonb_build_object('n', g %% 1000, 'tag', 't' || g %% 7, 'gift', g %% 3 = 0)
FROM generate_series($1::bigint, $2::bigint) AS g`, table.Sanitize())
	if _, err := db.Exec(ctx, q, first, last); err != nil {
		return fmt.Errorf("fill %s with keys %d…%d: %w", table.Sanitize(), first, last, err)
	}
	return nil
}

// Settle makes a freshly filled table read like a table that has been
// there a while: hint bits set and pages frozen (or the first method to
// read it pays for writing them), statistics current.
func Settle(ctx context.Context, db Execer, table pgx.Identifier) error {
	if _, err := db.Exec(ctx, "VACUUM (FREEZE, ANALYZE) "+table.Sanitize()); err != nil {
		return fmt.Errorf("vacuum %s: %w", table.Sanitize(), err)
	}
	return nil
}
