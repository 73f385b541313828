package pgcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// replayPollInterval is how often the standby's helpers look again for the
// state they wait for: short next to the seconds a test measures lag in.
const replayPollInterval = 20 * time.Millisecond

// Standby is a streaming hot standby of a Cluster, a Cluster of its own:
// URL, Port, Restart and Stop work on it as on the primary.
type Standby struct {
	*Cluster
	primary *Cluster
	// name is the standby's cluster_name, the application_name its WAL
	// receiver shows in the primary's pg_stat_replication.
	name string
}

// StartStandby copies c with pg_basebackup -R into a new directory beside
// c's, starts it as a hot standby on a free port and waits until it
// streams from c. The caller must Stop it; stopping c does not.
func (c *Cluster) StartStandby(ctx context.Context) (*Standby, error) {
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		return nil, fmt.Errorf("start a standby of the cluster in %s: cluster already stopped", c.dir)
	}
	dir, err := os.MkdirTemp(filepath.Dir(c.dir), "pgstandby-")
	if err != nil {
		return nil, fmt.Errorf("create standby directory: %w", err)
	}
	sc := &Cluster{binDir: c.binDir, dir: dir, cred: c.cred, logf: c.logf}
	s := &Standby{Cluster: sc, primary: c, name: filepath.Base(dir)}
	sc.settings = []string{"cluster_name=" + s.name}
	if err := sc.prepareDir(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}

	c.logf("pgcluster: pg_basebackup of 127.0.0.1:%d into %s", c.port, sc.dataDir())
	// -c fast: a spread checkpoint would keep us waiting for minutes;
	// -X stream: the copy holds the WAL it needs to become consistent.
	out, err := sc.run(ctx, "pg_basebackup", "-D", sc.dataDir(), "-R", "-c", "fast", "-X", "stream",
		"--no-sync", "-h", "127.0.0.1", "-p", strconv.Itoa(c.port), "-U", "postgres")
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_basebackup of the cluster on port %d: %w\n%s", c.port, err, out)
	}
	if err := sc.startOnFreePort(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start standby: %w", err)
	}
	if err := s.WaitStreaming(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = sc.Stop(stopCtx)
		return nil, err
	}
	c.logf("pgcluster: standby %s streams from 127.0.0.1:%d on 127.0.0.1:%d", s.name, c.port, sc.port)
	return s, nil
}

// Name is the standby's cluster_name, which is the application_name of its
// row in the primary's pg_stat_replication.
func (s *Standby) Name() string { return s.name }

// WaitStreaming returns once the standby's WAL receiver streams and the
// primary lists it as streaming in pg_stat_replication.
func (s *Standby) WaitStreaming(ctx context.Context) error {
	err := poll(ctx, s.URL("postgres"), "SELECT coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false)")
	if err != nil {
		return fmt.Errorf("wait for standby %s to stream: %w\nserver log:\n%s", s.name, err, s.logTail(0))
	}
	err = poll(ctx, s.primary.URL("postgres"), "SELECT EXISTS (SELECT FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming')", s.name)
	if err != nil {
		return fmt.Errorf("wait for the primary to list standby %s as streaming: %w", s.name, err)
	}
	return nil
}

// PauseReplay stops the standby applying WAL (it still receives it) and
// returns once replay has paused, so that from then on the standby's lag
// grows with every write on the primary.
func (s *Standby) PauseReplay(ctx context.Context) error {
	url := s.URL("postgres")
	if err := execSQL(ctx, url, "SELECT pg_wal_replay_pause()"); err != nil {
		return fmt.Errorf("pause replay on standby %s: %w", s.name, err)
	}
	if err := poll(ctx, url, "SELECT pg_get_wal_replay_pause_state() = 'paused'"); err != nil {
		return fmt.Errorf("wait for replay to pause on standby %s: %w", s.name, err)
	}
	return nil
}

// ResumeReplay lets the standby apply WAL again.
func (s *Standby) ResumeReplay(ctx context.Context) error {
	if err := execSQL(ctx, s.URL("postgres"), "SELECT pg_wal_replay_resume()"); err != nil {
		return fmt.Errorf("resume replay on standby %s: %w", s.name, err)
	}
	return nil
}

func execSQL(ctx context.Context, url, stmt string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, stmt)
	return err
}

// poll runs the boolean query until it answers true or ctx ends. It
// connects anew each time: a server still starting refuses connections.
func poll(ctx context.Context, url, query string, args ...any) error {
	for {
		ok, err := queryBool(ctx, url, query, args...)
		if ok {
			return nil
		}
		t := time.NewTimer(replayPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			if err != nil {
				return fmt.Errorf("%w (last try: %w)", ctx.Err(), err)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

func queryBool(ctx context.Context, url, query string, args ...any) (bool, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var ok bool
	err = conn.QueryRow(ctx, query, args...).Scan(&ok)
	return ok, err
}
