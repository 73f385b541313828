package integration_test

import (
	"fmt"
	"testing"

	"github.com/backfill/backfill/internal/pgtest"
)

// itemsDDL is a table with the types users copy: NULLs in every nullable
// column, unicode, jsonb (including JSON null and a bare string, which a
// naive decode-and-reencode would lose), arrays, timestamptz, numeric,
// bytea, uuid.
const itemsDDL = `CREATE TABLE %s (
	id       bigint PRIMARY KEY,
	name     text,
	note     varchar(40),
	price    numeric(14,4),
	ratio    double precision,
	active   boolean,
	created  timestamptz,
	day      date,
	payload  jsonb,
	tags     text[],
	ref      uuid,
	blob     bytea
)`

func createItems(t *testing.T, url, table string) {
	t.Helper()
	sql(t, url, fmt.Sprintf(itemsDDL, table))
}

// fillItems inserts rows with ids 1..n.
func fillItems(t *testing.T, url, table string, n int) {
	t.Helper()
	sql(t, url, fmt.Sprintf(`INSERT INTO %s
SELECT g,
       CASE WHEN g %% 17 = 0 THEN NULL ELSE 'naïve ☃ 日本 ' || g END,
       CASE WHEN g %% 13 = 0 THEN NULL ELSE 'note ' || (g %% 1000) END,
       CASE WHEN g %% 11 = 0 THEN NULL ELSE (g * 1.0001)::numeric(14,4) END,
       CASE WHEN g %% 7 = 0 THEN NULL ELSE g / 3.0 END,
       CASE WHEN g %% 5 = 0 THEN NULL ELSE g %% 2 = 0 END,
       CASE WHEN g %% 19 = 0 THEN NULL ELSE timestamptz '2024-01-01 00:00:00.123456+00' + g * interval '1.000001 second' END,
       CASE WHEN g %% 23 = 0 THEN NULL ELSE date '2000-01-01' + (g %% 10000) END,
       CASE g %% 29 WHEN 0 THEN NULL WHEN 1 THEN 'null'::jsonb WHEN 2 THEN '"just a string"'::jsonb
            ELSE jsonb_build_object('n', g, 'nested', jsonb_build_object('ü', array[g, g + 1]), 'f', 1.5) END,
       CASE WHEN g %% 31 = 0 THEN NULL ELSE array['a', 'b,c', 'q"' || g, NULL] END,
       CASE WHEN g %% 37 = 0 THEN NULL ELSE md5(g::text)::uuid END,
       CASE WHEN g %% 41 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END
FROM generate_series(1, %d) g`, table, n), "ANALYZE "+table)
}

// itemsDatabase is the common set-up: a fresh database with n items in src
// and an empty dst of the same shape.
func itemsDatabase(t *testing.T, n int) string {
	t.Helper()
	db := pgtest.NewDatabase(t)
	createItems(t, db, "src")
	fillItems(t, db, "src", n)
	createItems(t, db, "dst")
	return db
}
