package throttle

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// QueryConfig configures a Query.
type QueryConfig struct {
	// Where names the server in reasons: "destination", "source".
	Where string
	// Connect opens the query's connection to the server.
	Connect Connect
	// SQL is the user's throttle query.
	SQL string
}

// Query is the user's own throttle query (--throttle-query): a true or
// non-zero first column of its first row means wait; false, zero, NULL or
// no row means go on. Any other type is an error, for its meaning would be
// a guess.
type Query struct {
	cfg  QueryConfig
	sess session
}

// NewQuery checks cfg and returns the signal, not yet connected.
func NewQuery(cfg QueryConfig) (*Query, error) {
	if cfg.Connect == nil || cfg.Where == "" || cfg.SQL == "" {
		return nil, errors.New("throttle: a throttle query needs Where, Connect and SQL")
	}
	return &Query{cfg: cfg, sess: session{connect: cfg.Connect}}, nil
}

// Name implements Signal.
func (q *Query) Name() string { return "throttle query on " + q.cfg.Where }

// Kind implements Signal.
func (q *Query) Kind() Kind { return KindThrottleQuery }

// Close implements Signal.
func (q *Query) Close(ctx context.Context) error { return q.sess.close(ctx) }

// Validate runs the query once and returns why it cannot serve, if it
// cannot: a job refuses to start with a throttle query that does not run.
func (q *Query) Validate(ctx context.Context) error {
	_, err := q.Check(ctx)
	return err
}

// Check implements Signal.
func (q *Query) Check(ctx context.Context) (Reading, error) {
	var first any
	err := q.sess.do(ctx, func(conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, q.cfg.SQL)
		if err != nil {
			return err
		}
		defer rows.Close()
		if rows.Next() {
			values, err := rows.Values()
			if err != nil {
				return err
			}
			if len(values) == 0 {
				return errors.New("it returns no column")
			}
			first = values[0]
		}
		rows.Close()
		return rows.Err()
	})
	if err != nil {
		return Reading{}, fmt.Errorf("throttle query on %s: %w", q.cfg.Where, err)
	}
	wait, shown, err := truth(first)
	if err != nil {
		return Reading{}, fmt.Errorf("throttle query on %s: %w", q.cfg.Where, err)
	}
	if wait {
		return Reading{Throttle: true, Text: fmt.Sprintf("throttle query returned %s on %s", shown, q.cfg.Where)}, nil
	}
	return Reading{Text: fmt.Sprintf("throttle query returned %s on %s", shown, q.cfg.Where)}, nil
}

// truth reads a first column as a throttle query means it.
func truth(v any) (wait bool, shown string, err error) {
	switch v := v.(type) {
	case nil:
		return false, "no value", nil
	case bool:
		return v, fmt.Sprint(v), nil
	case int16:
		return v != 0, fmt.Sprint(v), nil
	case int32:
		return v != 0, fmt.Sprint(v), nil
	case int64:
		return v != 0, fmt.Sprint(v), nil
	case float32:
		return v != 0, fmt.Sprint(v), nil
	case float64:
		return v != 0, fmt.Sprint(v), nil
	case pgtype.Numeric:
		f, err := v.Float64Value()
		if err != nil {
			return false, "", fmt.Errorf("read its numeric first column: %w", err)
		}
		if !f.Valid {
			return false, "no value", nil
		}
		return f.Float64 != 0, fmt.Sprint(f.Float64), nil
	}
	return false, "", fmt.Errorf("its first column is %T: want a boolean or a number", v)
}
