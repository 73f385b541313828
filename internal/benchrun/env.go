package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backfill/backfill/internal/benchdata"
	"github.com/backfill/backfill/internal/pgcluster"
)

const (
	srcDB = "bench_src"
	dstDB = "bench_dst"

	// quietWithin bounds the wait for the last run's sessions to end
	// before the server's CPU is read again.
	quietWithin = 10 * time.Second
	pollEvery   = 50 * time.Millisecond
)

// table is a benchmark table in the public schema of one database.
type table struct{ db, name string }

func (t table) ident() pgx.Identifier { return pgx.Identifier{"public", t.name} }
func (t table) qualified() string     { return "public." + t.name }

var (
	srcTable  = table{srcDB, "s"}
	sameDest  = table{srcDB, "d"}
	crossDest = table{dstDB, "s"} // pgcopydb copies a table to the same name
)

// bench is one run of the driver: its cluster, connections and results.
type bench struct {
	cfg     config
	cluster *pgcluster.Cluster
	pgBin   string // the server's binaries, psql among them
	tmp     string
	out     io.Writer
	conns   map[string]*pgx.Conn // by database; "postgres" is the admin one
	ours    []uint32             // backend pids of conns, not counted as a run's sessions
	jobs    int
	goals   []goal
}

func run(ctx context.Context, cfg config, out io.Writer) (err error) {
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	}
	b := &bench{cfg: cfg, out: out, conns: map[string]*pgx.Conn{}}
	if b.tmp, err = os.MkdirTemp("", "backfill-bench-"); err != nil {
		return fmt.Errorf("create temporary directory: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(b.tmp); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove %s: %w", b.tmp, rerr))
		}
	}()
	if b.pgBin, err = pgcluster.FindBinaries(); err != nil {
		return err
	}
	progress("starting a throwaway PostgreSQL cluster from %s", b.pgBin)
	if b.cluster, err = pgcluster.Start(ctx, pgcluster.Options{BinDir: b.pgBin}); err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer func() {
		sctx, cancel := cleanupCtx()
		defer cancel()
		b.closeConns(sctx)
		if serr := b.cluster.Stop(sctx); serr != nil {
			err = errors.Join(err, fmt.Errorf("stop PostgreSQL: %w", serr))
		} else {
			progress("cluster stopped and %s removed", b.cluster.Dir())
		}
	}()
	if err := b.setup(ctx); err != nil {
		return err
	}
	if err := b.header(ctx); err != nil {
		return err
	}
	steps := []struct {
		group string
		run   func(context.Context) error
	}{
		{groupMethods, b.methodsGroup},
		{groupStage, b.stageGroup},
		{groupChunks, b.chunksGroup},
		{groupResume, b.resumeGroup},
		{groupRunners, b.runnersGroup},
		{groupMemory, b.memoryGroup},
		{groupRate, b.rateGroup},
		{groupProfile, b.profileGroup},
		{groupImpact, b.impactGroup},
	}
	for _, s := range steps {
		if !cfg.has(s.group) {
			continue
		}
		began := time.Now()
		progress("group %s", s.group)
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("group %s: %w", s.group, err)
		}
		progress("group %s done in %s", s.group, time.Since(began).Round(time.Second))
	}
	b.printGoals()
	return nil
}

// setup tunes the server for measuring and builds the benchmark tables.
//
// Autovacuum is off (the tables say so too) and checkpoints come only when
// a run is prepared: a vacuum or checkpoint that happened to fall into one
// method's run would charge it for another's writes. The cluster runs with
// fsync, synchronous_commit and full_page_writes off (pgcluster's
// throwaway settings): the figures leave out the cost of durable commits,
// which a chunked copy pays once per chunk and a single statement once.
func (b *bench) setup(ctx context.Context) error {
	if err := b.connect(ctx, "postgres"); err != nil {
		return err
	}
	admin := b.conns["postgres"]
	for _, q := range []string{
		"ALTER SYSTEM SET autovacuum = off",
		"ALTER SYSTEM SET max_wal_size = '8GB'",
		"ALTER SYSTEM SET checkpoint_timeout = '1h'",
		"SELECT pg_reload_conf()",
		"CREATE DATABASE " + pgx.Identifier{srcDB}.Sanitize() + " TEMPLATE template0",
		"CREATE DATABASE " + pgx.Identifier{dstDB}.Sanitize() + " TEMPLATE template0",
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	for _, db := range []string{srcDB, dstDB} {
		if err := b.connect(ctx, db); err != nil {
			return err
		}
	}
	progress("creating %s with %d rows", srcTable.qualified(), b.cfg.rows)
	began := time.Now()
	src := b.conns[srcDB]
	for _, t := range []table{srcTable, sameDest, crossDest} {
		if err := benchdata.Create(ctx, b.conns[t.db], t.ident()); err != nil {
			return err
		}
	}
	if err := benchdata.Fill(ctx, src, srcTable.ident(), 1, b.cfg.rows); err != nil {
		return err
	}
	if err := benchdata.Settle(ctx, src, srcTable.ident()); err != nil {
		return err
	}
	if _, err := src.Exec(ctx, keysetProcedure); err != nil {
		return fmt.Errorf("create the keyset procedure: %w", err)
	}
	progress("table ready in %s", time.Since(began).Round(100*time.Millisecond))
	return nil
}

func (b *bench) url(db string) string { return b.cluster.URL(db) }

// connect opens the driver's own connection to db. Its statements (the
// table's generation, VACUUM, CHECKPOINT, the SQL methods) are bounded by
// -timeout on the server's side, as the children are on ours.
func (b *bench) connect(ctx context.Context, db string) error {
	cfg, err := pgx.ParseConfig(b.url(db))
	if err != nil {
		return fmt.Errorf("parse the URL of %s: %w", db, err)
	}
	cfg.RuntimeParams["statement_timeout"] = strconv.FormatInt(b.cfg.timeout.Milliseconds(), 10)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", db, err)
	}
	b.conns[db] = conn
	b.ours = append(b.ours, conn.PgConn().PID())
	return nil
}

func (b *bench) closeConns(ctx context.Context) {
	for db, c := range b.conns {
		_ = c.Close(ctx)
		delete(b.conns, db)
	}
	b.ours = nil
}

// reconnect reopens every connection, after the server restarted.
func (b *bench) reconnect(ctx context.Context) error {
	var dbs []string
	for db := range b.conns {
		dbs = append(dbs, db)
	}
	b.closeConns(ctx)
	for _, db := range dbs {
		if err := b.connect(ctx, db); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) exec(ctx context.Context, db string, statements ...string) error {
	for _, q := range statements {
		if _, err := b.conns[db].Exec(ctx, q); err != nil {
			return fmt.Errorf("%s (in %s): %w", q, db, err)
		}
	}
	return nil
}

func (b *bench) count(ctx context.Context, t table) (int64, error) {
	var n int64
	if err := b.conns[t.db].QueryRow(ctx, "SELECT count(*) FROM "+t.ident().Sanitize()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s in %s: %w", t.qualified(), t.db, err)
	}
	return n, nil
}

// reset empties a destination and the state a backfill left in its
// database, pre-fills it when asked (the source rows whose id is a
// multiple of every: a destination that holds rows in every chunk's
// range), and checkpoints, so that every run starts from the same clean
// server.
func (b *bench) reset(ctx context.Context, dest table, prefillFrom *table, every int) error {
	if err := b.exec(ctx, dest.db,
		"DROP SCHEMA IF EXISTS backfill CASCADE",
		"TRUNCATE "+dest.ident().Sanitize(),
	); err != nil {
		return err
	}
	if prefillFrom != nil {
		if prefillFrom.db != dest.db {
			return fmt.Errorf("pre-fill %s from %s: only within one database", dest.qualified(), prefillFrom.qualified())
		}
		if err := b.exec(ctx, dest.db,
			"INSERT INTO "+dest.ident().Sanitize()+" SELECT * FROM "+prefillFrom.ident().Sanitize()+" WHERE id % "+strconv.Itoa(every)+" = 0",
			"VACUUM (FREEZE, ANALYZE) "+dest.ident().Sanitize(),
		); err != nil {
			return err
		}
	}
	return b.exec(ctx, "postgres", "CHECKPOINT")
}

// quiesce waits until no session but ours is connected: the last run's
// backends have exited and their CPU is in the postmaster's account.
func (b *bench) quiesce(ctx context.Context) error {
	deadline := time.Now().Add(quietWithin)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		var n int
		err := b.conns["postgres"].QueryRow(ctx,
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> ALL($1)", b.ours).Scan(&n)
		if err != nil {
			return fmt.Errorf("count the server's sessions: %w", err)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d sessions still connected %s after the run", n, quietWithin)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// serverCPU is the server's CPU so far, or -1 when /proc cannot say.
func (b *bench) serverCPU() time.Duration {
	pid, err := b.postmasterPID()
	if err == nil {
		var d time.Duration
		if d, err = serverCPU(pid); err == nil {
			return d
		}
	}
	progress("server CPU unavailable: %v", err)
	return -1
}

func (b *bench) postmasterPID() (int, error) {
	raw, err := os.ReadFile(filepath.Join(b.cluster.Dir(), "data", "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %w", err)
	}
	return pid, nil
}

func (b *bench) nextJob(prefix string) string {
	b.jobs++
	return fmt.Sprintf("%s-%d", prefix, b.jobs)
}
