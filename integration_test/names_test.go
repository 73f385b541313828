package integration_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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

// TestConnectionRefusals: an invalid URL, an unreachable host and a wrong
// password each fail fast, naming the target, printing no password, and
// writing nothing.
func TestConnectionRefusals(t *testing.T) {
	if pgtest.Path() == "env" {
		t.Skip("this test rewrites pg_hba.conf: only on a server the harness started")
	}
	db := itemsDatabase(t, 10)
	hba := queryString(t, db, "SHOW hba_file")
	original := queryString(t, db, "SELECT pg_read_file($1)", hba)
	// scram for one role over TCP, before the harness's trust lines
	rule := "host all bf_pw 127.0.0.1/32 scram-sha-256\n"
	sql(t, db,
		"DROP ROLE IF EXISTS bf_pw",
		"SET password_encryption = 'scram-sha-256'",
		"CREATE ROLE bf_pw LOGIN SUPERUSER PASSWORD 'right-one'",
	)
	writeServerFile(t, db, hba, rule+original)
	t.Cleanup(func() {
		writeServerFile(t, db, hba, original)
		sql(t, db, "DROP ROLE IF EXISTS bf_pw")
	})

	wrong := strings.Replace(db, "postgres://postgres@", "postgres://bf_pw:wrong-secret@", 1)
	right := strings.Replace(db, "postgres://postgres@", "postgres://bf_pw:right-one@", 1)
	mustSucceed(t, "status", "--dest", right) // the rule works: the right password gets in

	cases := []struct {
		name, url string
		code      int
		mentions  []string
	}{
		{"wrong password", wrong, 1, []string{"bf_pw", "password authentication failed"}},
		{"unreachable host", "postgres://bf_pw:wrong-secret@127.0.0.1:1/x", 1, []string{"127.0.0.1"}},
		{"invalid URL", "postgres://bf_pw:wrong-secret@127.0.0.1:notaport/x", 2, []string{"source connection string"}},
		// the throwaway server has no TLS: sslmode=require must be honoured, not dropped
		{"sslmode honoured", strings.Replace(strings.Replace(wrong, "wrong-secret", "right-one", 1), "sslmode=disable", "sslmode=require", 1), 1, []string{"TLS"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			began := time.Now()
			r := cli(t, "start", "--source", c.url, "--dest", db, "--job", "conn", "--from", "src", "--to", "dst", "--connect-timeout", "3s")
			if r.code != c.code {
				t.Fatalf("want exit %d, got %s", c.code, r)
			}
			if took := time.Since(began); took > 15*time.Second {
				t.Fatalf("took %v to fail", took)
			}
			for _, m := range c.mentions {
				if !strings.Contains(r.stderr, m) {
					t.Errorf("message does not mention %q:\n%s", m, r.stderr)
				}
			}
			if strings.Contains(r.stdout+r.stderr, "wrong-secret") {
				t.Fatalf("the password was printed:\n%s", r)
			}
			if schemaExists(t, db, "backfill") || queryInt(t, db, "SELECT count(*) FROM dst") != 0 {
				t.Fatal("a refused connection wrote something")
			}
		})
	}
}

// writeServerFile replaces a server-side file (as the superuser the tests
// connect as) and reloads the configuration.
func writeServerFile(t *testing.T, db, path, content string) {
	t.Helper()
	conn := connect(t, db)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE f (line text)"); err != nil {
		t.Fatal(err)
	}
	// COPY's text format writes one row a line and escapes tabs,
	// backslashes and newlines: a row per line, and no tabs or backslashes
	if strings.ContainsAny(content, "\t\\") {
		t.Fatalf("%s holds tabs or backslashes; this helper cannot write it", path)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO f SELECT unnest($1::text[])", strings.Split(strings.TrimSuffix(content, "\n"), "\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("COPY (SELECT line FROM f) TO %s", quoteLiteral(path))); err != nil {
		t.Fatal(err)
	}
	var before time.Time
	if err := conn.QueryRow(ctx, "SELECT pg_conf_load_time()").Scan(&before); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	// The postmaster rereads the files asynchronously; a new session
	// reports the postmaster's load time, so wait until one reports a
	// newer one, rather than sleeping and hoping.
	deadline := time.Now().Add(10 * time.Second)
	for {
		fresh, err := pgx.Connect(ctx, db)
		if err != nil {
			t.Fatalf("connect after reloading the configuration: %v", err)
		}
		var loaded time.Time
		err = fresh.QueryRow(ctx, "SELECT pg_conf_load_time()").Scan(&loaded)
		fresh.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if loaded.After(before) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server had not reloaded its configuration 10 s after pg_reload_conf()")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
