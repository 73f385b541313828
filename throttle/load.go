package throttle

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	bfsql "github.com/backfill/backfill/sql"
)

// LoadConfig configures a Load.
type LoadConfig struct {
	// Where names the server in reasons: "source", "destination".
	Where string
	// Connect opens the signal's connection to the server.
	Connect Connect
	// ApplicationName is backfill's own: sessions that carry it are the
	// job's, not production's, and do not count.
	ApplicationName string
	// OwnPIDs, when set, lists further backends of the job's not to count
	// (a worker whose application_name another setting replaced).
	OwnPIDs func() []uint32
	// Max throttles above that many active sessions; Critical pauses the
	// job above that many. Zero switches either off; one of them must be
	// on.
	Max, Critical int
}

// Load counts the server's client sessions running a statement right now
// that are not backfill's own, the PostgreSQL analogue of MySQL's
// Threads_running that gh-ost's --max-load reads. A role without
// pg_read_all_stats sees no other role's state; the Note says so once.
type Load struct {
	cfg  LoadConfig
	sess session
}

// NewLoad checks cfg and returns the signal, not yet connected.
func NewLoad(cfg LoadConfig) (*Load, error) {
	switch {
	case cfg.Connect == nil || cfg.Where == "":
		return nil, errors.New("throttle: load needs Where and Connect")
	case cfg.Max < 0 || cfg.Critical < 0 || cfg.Max == 0 && cfg.Critical == 0:
		return nil, fmt.Errorf("throttle: load on %s: max %d and critical %d active sessions: want at least one above 0, none below", cfg.Where, cfg.Max, cfg.Critical)
	}
	return &Load{cfg: cfg, sess: session{connect: cfg.Connect}}, nil
}

// Name implements Signal.
func (l *Load) Name() string { return "load on " + l.cfg.Where }

// Kind implements Signal.
func (l *Load) Kind() Kind { return KindLoad }

// Close implements Signal.
func (l *Load) Close(ctx context.Context) error { return l.sess.close(ctx) }

// Check implements Signal.
func (l *Load) Check(ctx context.Context) (Reading, error) {
	var own []uint32
	if l.cfg.OwnPIDs != nil {
		own = l.cfg.OwnPIDs()
	}
	if own == nil {
		own = []uint32{} // NULL would make pid <> ALL ($2) exclude every session
	}
	var active, hidden int
	var user string
	err := l.sess.do(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, bfsql.Static(bfsql.ActiveSessions), l.cfg.ApplicationName, own).Scan(&active, &hidden, &user)
	})
	if err != nil {
		return Reading{}, fmt.Errorf("count active sessions on %s: %w", l.cfg.Where, err)
	}
	r := l.reading(active)
	if hidden > 0 {
		r.Note = fmt.Sprintf("role %s may not see what other roles' sessions on %s are doing, so they do not count as load: grant it pg_read_all_stats", user, l.cfg.Where)
	}
	return r, nil
}

func (l *Load) reading(active int) Reading {
	switch {
	case l.cfg.Critical > 0 && active > l.cfg.Critical:
		return Reading{Throttle: true, Critical: true, Text: fmt.Sprintf("critical load %d active sessions > %d on %s", active, l.cfg.Critical, l.cfg.Where)}
	case l.cfg.Max > 0 && active > l.cfg.Max:
		return Reading{Throttle: true, Text: fmt.Sprintf("load %d active sessions > %d on %s", active, l.cfg.Max, l.cfg.Where)}
	}
	limit := l.cfg.Max
	if limit == 0 {
		limit = l.cfg.Critical
	}
	return Reading{Text: fmt.Sprintf("load %d active sessions <= %d on %s", active, limit, l.cfg.Where)}
}
