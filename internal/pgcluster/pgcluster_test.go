package pgcluster_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/internal/pgcluster"
)

func TestClusterLifecycle(t *testing.T) {
	if _, err := pgcluster.FindBinaries(); err != nil {
		// CI promised a PostgreSQL install; a missing one there is a broken
		// image, not a reason to go green.
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %v", err)
		}
		t.Skipf("no local PostgreSQL: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	c, err := pgcluster.Start(ctx, pgcluster.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	port := c.Port()
	if got, want := c.URL("app"), fmt.Sprintf("postgres://postgres@127.0.0.1:%d/app?sslmode=disable", port); got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}

	selectOne(ctx, t, c.URL("postgres"))
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Errorf("port after restart = %d, want %d", c.Port(), port)
	}
	selectOne(ctx, t, c.URL("postgres"))

	if err := c.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(c.Dir()); !os.IsNotExist(err) {
		t.Errorf("cluster directory %s still there after Stop (stat: %v)", c.Dir(), err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if err := c.Restart(ctx); err == nil {
		t.Error("restart after stop succeeded; want an error")
	}
}

func selectOne(ctx context.Context, t *testing.T, url string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("SELECT 1: %v", err)
	}
	if one != 1 {
		t.Fatalf("SELECT 1 = %d", one)
	}
}

func TestStandbyStreamsPausesAndStops(t *testing.T) {
	if _, err := pgcluster.FindBinaries(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %v", err)
		}
		t.Skipf("no local PostgreSQL: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })

	began := time.Now()
	s, err := c.StartStandby(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	t.Logf("standby streaming %v after StartStandby began", time.Since(began).Round(time.Millisecond))
	if s.Port() == c.Port() {
		t.Fatalf("standby listens on the primary's port %d", c.Port())
	}

	primary, standby := connect(ctx, t, c.URL("postgres")), connect(ctx, t, s.URL("postgres"))
	var inRecovery bool
	if err := standby.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || !inRecovery {
		t.Fatalf("pg_is_in_recovery() on the standby = %v, %v; want true", inRecovery, err)
	}
	exec(ctx, t, primary, "CREATE TABLE marks (n int)")
	waitRows(ctx, t, standby, 0) // the table reached the standby

	if err := s.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	exec(ctx, t, primary, "INSERT INTO marks VALUES (1)")
	// The standby receives the insert but must not apply it while paused.
	pause := time.NewTimer(500 * time.Millisecond)
	<-pause.C
	if n := countRows(ctx, t, standby); n != 0 {
		t.Fatalf("paused standby shows %d rows; want 0", n)
	}
	if err := s.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	waitRows(ctx, t, standby, 1)

	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, s.URL("postgres")); err == nil {
		_ = conn.Close(ctx)
		t.Fatal("a stopped standby still takes connections")
	}
	selectOne(ctx, t, c.URL("postgres")) // the primary is untouched
}

func connect(ctx context.Context, t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func exec(ctx context.Context, t *testing.T, conn *pgx.Conn, stmt string) {
	t.Helper()
	if _, err := conn.Exec(ctx, stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

func countRows(ctx context.Context, t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM marks").Scan(&n); err != nil {
		t.Fatalf("count marks: %v", err)
	}
	return n
}

// waitRows waits until the standby has replayed marks with n rows.
func waitRows(ctx context.Context, t *testing.T, conn *pgx.Conn, n int) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var got int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM marks").Scan(&got)
		if err == nil && got == n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("standby never showed %d rows in marks (last: %d, %v)", n, got, err)
		case <-tick.C:
		}
	}
}
