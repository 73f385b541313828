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
