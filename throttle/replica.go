package throttle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	bfsql "github.com/backfill/backfill/sql"
)

// DefaultMaxReplicaLag is the replica lag past which a job waits.
const DefaultMaxReplicaLag = 10 * time.Second

// ReplicaConfig configures a ReplicaLag.
type ReplicaConfig struct {
	// Where names the standby in reasons: "replica 1".
	Where string
	// Connect opens the signal's connection to the standby.
	Connect Connect
	// Schema (unquoted) and Job name the heartbeat row to read back.
	Schema string
	Job    string
	// MaxLag is the limit; zero means DefaultMaxReplicaLag.
	MaxLag time.Duration
	// Heartbeat is the writer of Job's heartbeat in this process, whose
	// history measures lag exactly; nil measures it as pt-heartbeat does,
	// the standby's clock minus the heartbeat it shows, up to a beat's
	// interval longer than it is.
	Heartbeat *Heartbeat
}

// ReplicaLag is the lag of one standby named by the user, as a reader of
// it sees it: how long it has lacked the newest heartbeat the job wrote on
// the destination. Before the first heartbeat reaches it, the age of the
// last transaction it replayed stands in, while it has received WAL it has
// not replayed (otherwise an idle primary would read as lag).
type ReplicaLag struct {
	cfg  ReplicaConfig
	stmt string
	sess session
}

// NewReplicaLag checks cfg and returns the signal, not yet connected.
func NewReplicaLag(cfg ReplicaConfig) (*ReplicaLag, error) {
	if cfg.Connect == nil || cfg.Schema == "" || cfg.Job == "" || cfg.Where == "" {
		return nil, errors.New("throttle: replica lag needs Where, Connect, Schema and Job")
	}
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = DefaultMaxReplicaLag
	}
	stmts, err := bfsql.For(pgx.Identifier{cfg.Schema}.Sanitize())
	if err != nil {
		return nil, err
	}
	return &ReplicaLag{cfg: cfg, stmt: stmts.Get(bfsql.ReplicaLag), sess: session{connect: cfg.Connect}}, nil
}

// Name implements Signal.
func (r *ReplicaLag) Name() string { return "replica lag on " + r.cfg.Where }

// Kind implements Signal.
func (r *ReplicaLag) Kind() Kind { return KindReplicaLag }

// Close implements Signal.
func (r *ReplicaLag) Close(ctx context.Context) error { return r.sess.close(ctx) }

// standbyView is what the replica-lag statement reads on a standby.
type standbyView struct {
	inRecovery   bool
	now          time.Time
	seen         *time.Time // the job's heartbeat as replayed; nil before the first
	lastReplay   *time.Time // commit time of the last transaction replayed
	replayBehind bool       // WAL received and not yet replayed
}

// Check implements Signal.
func (r *ReplicaLag) Check(ctx context.Context) (Reading, error) {
	var v standbyView
	err := r.sess.do(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, r.stmt, r.cfg.Job).Scan(&v.inRecovery, &v.now, &v.seen, &v.lastReplay, &v.replayBehind)
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") { // undefined table, schema
		return Reading{}, fmt.Errorf("read the heartbeat of job %s on %s, which has no state schema %s: is it a standby of the destination? %w", r.cfg.Job, r.cfg.Where, r.cfg.Schema, err)
	}
	if err != nil {
		return Reading{}, fmt.Errorf("read the heartbeat of job %s on %s: %w", r.cfg.Job, r.cfg.Where, err)
	}
	reading := lagReading(lagOf(v, r.cfg.Heartbeat), r.cfg.MaxLag, r.cfg.Where)
	if !v.inRecovery {
		reading.Note = fmt.Sprintf("%s is not a standby (pg_is_in_recovery() is false): its lag is always about 0", r.cfg.Where)
	}
	return reading, nil
}

// lagOf measures a standby's lag from what it shows and, when this process
// writes the heartbeat, when each beat was written.
func lagOf(v standbyView, hb *Heartbeat) time.Duration {
	if hb != nil {
		if lag, ok := hb.lagBehind(v.seen); ok {
			return lag
		}
	}
	switch {
	case v.seen != nil:
		return max(v.now.Sub(*v.seen), 0)
	case v.replayBehind && v.lastReplay != nil:
		return max(v.now.Sub(*v.lastReplay), 0)
	}
	return 0
}

func lagReading(lag, limit time.Duration, where string) Reading {
	if lag > limit {
		return Reading{Throttle: true, Text: fmt.Sprintf("replica lag %s > %s on %s", measureText(lag), limitText(limit), where)}
	}
	return Reading{Text: fmt.Sprintf("replica lag %s <= %s on %s", measureText(lag), limitText(limit), where)}
}

// StandbysConfig configures a Standbys.
type StandbysConfig struct {
	// Where names the primary in reasons: "destination".
	Where string
	// Connect opens the signal's connection to the primary.
	Connect Connect
	// MaxLag is the limit; zero means DefaultMaxReplicaLag.
	MaxLag time.Duration
	// Now is this process's clock; nil means time.Now.
	Now func() time.Time
}

// Standbys is the lag of a primary's own physical standbys, for a job that
// names none: the largest over pg_stat_replication of replay_lag and of
// the time since the primary's WAL first passed the standby's replay
// position (replay_lag alone stands still while replay is paused or stuck,
// for it is measured only as WAL is replayed). A role that may not read
// the standbys' positions says so once, in a Note, and never throttles.
type Standbys struct {
	cfg  StandbysConfig
	sess session
	// wal records when the primary's WAL reached each position seen.
	wal history
}

// NewStandbys checks cfg and returns the signal, not yet connected.
func NewStandbys(cfg StandbysConfig) (*Standbys, error) {
	if cfg.Connect == nil || cfg.Where == "" {
		return nil, errors.New("throttle: standby lag needs Where and Connect")
	}
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = DefaultMaxReplicaLag
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Standbys{cfg: cfg, sess: session{connect: cfg.Connect}}, nil
}

// Name implements Signal.
func (s *Standbys) Name() string { return "replica lag of the standbys of " + s.cfg.Where }

// Kind implements Signal.
func (s *Standbys) Kind() Kind { return KindReplicaLag }

// Close implements Signal.
func (s *Standbys) Close(ctx context.Context) error { return s.sess.close(ctx) }

type walSender struct {
	name, addr string
	state      *string
	replayLag  *time.Duration
	walAt      int64
	replayAt   *int64
}

// Check implements Signal.
func (s *Standbys) Check(ctx context.Context) (Reading, error) {
	var senders []walSender
	var user string
	err := s.sess.do(ctx, func(conn *pgx.Conn) error {
		senders = senders[:0]
		rows, err := conn.Query(ctx, bfsql.Static(bfsql.StandbyLag))
		if err != nil {
			return err
		}
		var w walSender
		_, err = pgx.ForEachRow(rows, []any{&user, &w.name, &w.addr, &w.state, &w.replayLag, &w.walAt, &w.replayAt}, func() error {
			senders = append(senders, w)
			return nil
		})
		return err
	})
	if err != nil {
		return Reading{}, fmt.Errorf("read pg_stat_replication on %s: %w", s.cfg.Where, err)
	}
	now := s.cfg.Now()
	worst, worstName, hidden := time.Duration(-1), "", 0
	if len(senders) > 0 {
		s.wal.add(senders[0].walAt, now) // the same on every row
	}
	for _, w := range senders {
		if w.state == nil || w.replayAt == nil {
			hidden++
			continue
		}
		if *w.state != "streaming" && *w.state != "catchup" {
			continue // starting, stopping, or a base backup
		}
		lag, ok := s.wal.lagBehind(*w.replayAt, now)
		if !ok { // behind since before the history begins, at least
			lag = now.Sub(s.wal.entries[0].at)
		}
		if w.replayLag != nil {
			lag = max(lag, *w.replayLag)
		}
		if lag > worst {
			worst, worstName = lag, fmt.Sprintf("standby %s (%s) of %s", w.name, w.addr, s.cfg.Where)
		}
	}
	var reading Reading
	if worst < 0 {
		reading.Text = fmt.Sprintf("no standby of %s to read the lag of", s.cfg.Where)
	} else {
		reading = lagReading(worst, s.cfg.MaxLag, worstName)
	}
	if hidden > 0 {
		reading.Note = fmt.Sprintf("role %s may not read the replay positions of the standbys of %s in pg_stat_replication, so their lag does not throttle: grant it pg_monitor, or name the standbys with --replica", user, s.cfg.Where)
	}
	return reading, nil
}
