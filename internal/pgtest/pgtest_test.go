package pgtest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestNewDatabaseIsolatesParallelTests(t *testing.T) {
	// Several subtests at once also exercise concurrent CREATE DATABASE.
	for i := range 3 {
		t.Run(fmt.Sprint("sub", i), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			first, second := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
			if first == second {
				t.Fatalf("NewDatabase returned %s twice", first)
			}
			a, b := connect(t, first), connect(t, second)
			if nameA, nameB := currentDatabase(t, a), currentDatabase(t, b); nameA == nameB {
				t.Fatalf("both URLs lead to database %s", nameA)
			}

			if _, err := a.Exec(ctx, "CREATE TABLE only_in_first (id int)"); err != nil {
				t.Fatal(err)
			}
			if !tableExists(t, a, "only_in_first") {
				t.Fatal("only_in_first missing from the database that created it")
			}
			if tableExists(t, b, "only_in_first") {
				t.Error("only_in_first, created in the first database, is visible in the second")
			}
		})
	}
}

func TestNewDatabaseDropsItAfterTheTest(t *testing.T) {
	// AdminURL first: it skips this test, not just the subtest, without a server.
	admin := connect(t, pgtest.AdminURL(t))
	// The long name also checks that the database name is cut to fit.
	var name string
	t.Run("a_subtest_name_long_enough_that_its_database_name_must_be_shortened", func(t *testing.T) {
		name = currentDatabase(t, connect(t, pgtest.NewDatabase(t)))
	})
	if !strings.HasPrefix(name, "t_testnewdatabasedropsitafterthetest_a_") || len(name) > 63 {
		t.Errorf("database name %q: want a t_<test name> prefix and at most 63 bytes", name)
	}
	var exists bool
	if err := admin.QueryRow(t.Context(), "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func TestRestart(t *testing.T) {
	ctx := t.Context()
	before := connect(t, pgtest.NewDatabase(t))
	pgtest.Restart(t)
	if pgtest.Path() != pgtest.PathLocal {
		t.Fatalf("Restart ran on path %q; it must skip everywhere but %q", pgtest.Path(), pgtest.PathLocal)
	}
	if err := before.Ping(ctx); err == nil {
		t.Error("a session opened before Restart still answers; was the server restarted?")
	}
	if err := connect(t, pgtest.AdminURL(t)).Ping(ctx); err != nil {
		t.Errorf("no new session after Restart: %v", err)
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func currentDatabase(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var name string
	if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

func tableExists(t *testing.T, conn *pgx.Conn, table string) bool {
	t.Helper()
	var exists bool
	if err := conn.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}

// TestHarnessPath says which server this run's tests use and checks that it
// answers. `make test` runs it verbosely before the suite, whose passing
// packages print no log, so that the run's log names the path.
func TestHarnessPath(t *testing.T) {
	admin := connect(t, pgtest.AdminURL(t))
	var version string
	if err := admin.QueryRow(t.Context(), "SHOW server_version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	switch pgtest.Path() {
	case pgtest.PathEnv, pgtest.PathTestcontainers, pgtest.PathLocal:
		t.Logf("the tests run against PostgreSQL %s, harness path %q", version, pgtest.Path())
	default:
		t.Fatalf("a server answered on harness path %q", pgtest.Path())
	}
}

func TestNewStandbyReplaysTheTestDatabase(t *testing.T) {
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t)
	primary := connect(t, dbURL)
	if _, err := primary.Exec(ctx, "CREATE TABLE before_standby (n int); INSERT INTO before_standby VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	sb := pgtest.NewStandby(t)
	standby := connect(t, sb.URL(currentDatabase(t, primary)))
	var n int
	if err := standby.QueryRow(ctx, "SELECT n FROM before_standby").Scan(&n); err != nil || n != 7 {
		t.Fatalf("standby's before_standby: %d, %v; want 7", n, err)
	}
}
