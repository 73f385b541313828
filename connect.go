package backfill

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	bfsql "github.com/backfill/backfill/sql"
)

// RedactURL hides the password in a connection string, in URL or
// keyword/value form, so it can be logged, stored or printed.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	// a URL too broken to parse may still hold a password
	s = urlPassword.ReplaceAllString(s, "${1}xxxxx${2}")
	return keywordPassword.ReplaceAllString(s, "${1}xxxxx")
}

var (
	keywordPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)
	urlPassword     = regexp.MustCompile(`(?i)(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*(@)`)
)

// scrub removes a connection string's password from an error message: pgx
// may quote the string it failed to parse.
func scrub(err error, connStrings ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, cs := range connStrings {
		if cs == "" {
			continue
		}
		if r := RedactURL(cs); r != cs && strings.Contains(msg, cs) {
			msg = strings.ReplaceAll(msg, cs, r)
			changed = true
		}
		if cfg, perr := pgconn.ParseConfig(cs); perr == nil && cfg.Password != "" && strings.Contains(msg, cfg.Password) {
			msg = strings.ReplaceAll(msg, cfg.Password, "xxxxx")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return &scrubbedError{msg: msg, err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// sessionSettings are the settings every backfill connection runs with.
//
// Values travel as text: keys from the source to the checkpoint and back,
// values passed through from the source to the destination, and verify
// compares digests of the text each database prints, which must agree on
// equal data. Text written under one session must be
// read back unchanged under another, whatever the defaults of each
// database, so every setting that shapes the text output or input of a
// built-in type is pinned, on both sides:
//
//   - TimeZone: timestamptz prints in it (its offset always written, so any
//     zone would read back right, but a fixed one keeps a key's text the
//     same from run to run), and it converts timestamp to timestamptz.
//   - DateStyle: only ISO output is unambiguous; SQL and Postgres styles
//     print zone abbreviations, which lose the offset.
//   - IntervalStyle: postgres output signs every field after a negative one,
//     so it reads back under any style.
//   - extra_float_digits: 1 prints the shortest text that reads back as the
//     same float8, float4 and geometric value (0 or less rounds).
//   - bytea_output: hex, which every server reads.
//   - client_encoding: UTF8, the encoding of Go's strings and of the text
//     pgx sends; a connection takes the server's encoding otherwise, and
//     a LATIN1 database would store each byte of UTF-8 text as a
//     character of its own, or send its text undecodable as UTF-8. A
//     SQL_ASCII database, whose text is bytes in no encoding, keeps
//     SQL_ASCII (applySettings).
//   - lc_monetary: money prints and reads its integer of minor units by the
//     locale (symbol, separators, digits after the point); C on both sides
//     makes the integer round-trip.
//   - array_nulls: off would read the NULL of an array's text as the string
//     'NULL'.
//   - xmloption: document would refuse an xml value that is content (a
//     fragment, or text around elements), which the column holds legally.
//
// The --where predicate runs on the source under the same settings, so a
// literal in it reads as they say: a timestamp without an offset is UTC,
// 01/02/2024 is January 2nd, a money literal is in C's format. The others
// change only a predicate that compares a value's text (x::text = '…').
// Not pinned, on purpose: search_path (names in the predicate and in the
// user's types resolve as the user's sessions resolve them).
func sessionSettings(s session) map[string]string {
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	return map[string]string{
		"application_name":                    "backfill:" + s.name,
		"client_encoding":                     "UTF8",
		"TimeZone":                            "UTC",
		"DateStyle":                           "ISO, MDY",
		"IntervalStyle":                       "postgres",
		"extra_float_digits":                  "1",
		"bytea_output":                        "hex",
		"lc_monetary":                         "C",
		"array_nulls":                         "on",
		"xmloption":                           "content",
		"statement_timeout":                   ms(s.StatementTimeout),
		"lock_timeout":                        ms(s.LockTimeout),
		"idle_in_transaction_session_timeout": ms(max(s.StatementTimeout*2, time.Minute)),
	}
}

// session is what a command's connections are opened with besides their
// connection strings: the name they show (application_name backfill:name)
// and the target's timeouts.
type session struct {
	name string
	Target
}

// session opens the job's connections under its name.
func (j Job) session() session { return session{name: j.Name, Target: j.Target()} }

func connConfig(connString string, s session, role string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: %s connection string %q: %w", ErrInvalidJob, role, RedactURL(connString), scrub(err, connString))
	}
	applySettings(cfg, s, role)
	return cfg, nil
}

func applySettings(cfg *pgx.ConnConfig, s session, role string) {
	for k, v := range sessionSettings(s) {
		cfg.RuntimeParams[k] = v
	}
	next := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
		// a SQL_ASCII database stores bytes, not characters, and UTF8
		// would refuse those that are not UTF-8 as it sends them: its
		// bytes travel as they are
		if pc.ParameterStatus("server_encoding") == "SQL_ASCII" {
			if _, err := pc.Exec(ctx, bfsql.Static(bfsql.KeepSQLASCII)).ReadAll(); err != nil {
				return fmt.Errorf("keep the bytes of SQL_ASCII database %s: %w", role, err)
			}
		}
		if next != nil {
			return next(ctx, pc)
		}
		return nil
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = s.ConnectTimeout
	}
}

// openPool opens a pool of maxConns connections and checks that it can
// connect, so a wrong host or password fails before any work.
func openPool(ctx context.Context, connString string, s session, role string, maxConns int, readOnly bool) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: %s connection string %q: %w", ErrInvalidJob, role, RedactURL(connString), scrub(err, connString))
	}
	applySettings(cfg.ConnConfig, s, role)
	if readOnly {
		cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	}
	cfg.MaxConns = int32(maxConns)
	cfg.MinConns = 0
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open %s pool to %s: %w", role, describeTarget(cfg.ConnConfig), scrub(err, connString))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s database %s: %w", role, describeTarget(cfg.ConnConfig), scrub(err, connString))
	}
	return pool, nil
}

func describeTarget(cfg *pgx.ConnConfig) string {
	return fmt.Sprintf("%q on %s:%d as %q", cfg.Database, cfg.Host, cfg.Port, cfg.User)
}
