package integration_test

import (
	"strings"
	"testing"

	"github.com/backfill/backfill/internal/pgtest"
)

// TestQuotedNamesAndSecrets: schema-qualified, mixed-case, spaced and
// unicode names are read as SQL reads them; a password in the URL appears
// nowhere: not in logs, status or the stored spec.
func TestQuotedNamesAndSecrets(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sql(t, db,
		`CREATE SCHEMA sales`,
		`CREATE TABLE sales."Order Items" ("Order No" bigint PRIMARY KEY, "Ünïcode ""col""" text, qty int)`,
		`INSERT INTO sales."Order Items" SELECT g, 'v' || g, g FROM generate_series(1, 1500) g`,
		`CREATE TABLE sales.order_items_v2 ("Order No" bigint PRIMARY KEY, "Ünïcode ""col""" text, qty int, added timestamptz DEFAULT now())`,
	)
	const secret = "s3cr3t-pa55"
	withPassword := strings.Replace(db, "postgres://postgres@", "postgres://postgres:"+secret+"@", 1)
	if withPassword == db {
		t.Fatalf("test URL %q has an unexpected form", db)
	}
	r := mustSucceed(t, "start", "--source", withPassword, "--job", "quoted", "--from", `sales."Order Items"`,
		"--to", "SALES.Order_Items_V2", "--key", `"Order No"`, "--rate", "0", "--log-format", "json", "--log-level", "debug")
	st := mustSucceed(t, "status", "--dest", withPassword, "--json")
	spec := queryInt(t, db, "SELECT count(*) FROM backfill.jobs WHERE spec::text LIKE '%' || $1 || '%'", secret)
	if strings.Contains(r.stdout+r.stderr+st.stdout+st.stderr, secret) || spec != 0 {
		t.Fatalf("the password leaked: logs %q, status %q, %d stored specs", r.stderr, st.stdout, spec)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM sales."Order Items" s JOIN sales.order_items_v2 d USING ("Order No") WHERE s."Ünïcode ""col""" = d."Ünïcode ""col""" AND s.qty = d.qty AND d.added IS NOT NULL`); n != 1500 {
		t.Fatalf("%d of 1500 rows copied with their values and the default filled", n)
	}
	r = cli(t, "start", "--source", strings.Replace(withPassword, "127.0.0.1", "127.0.0.1:1", 1), "--job", "x", "--from", "a", "--to", "b", "--connect-timeout", "2s")
	if r.code == 0 || strings.Contains(r.stdout+r.stderr, secret) {
		t.Fatalf("a bad URL must fail without printing the password: %s", r)
	}
}
