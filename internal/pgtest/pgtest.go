package pgtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/backfill/backfill/internal/pgcluster"
)

// EnvURL names the variable that points the tests at an existing server. Its
// value is an admin URL: the role must be allowed to create databases.
const EnvURL = "BACKFILL_TEST_DATABASE_URL"

// The values Path reports.
const (
	PathEnv            = "env"
	PathTestcontainers = "testcontainers"
	PathLocal          = "local"
	PathNone           = "none"
)

const (
	containerImage = "postgres:15-alpine"

	// dockerProbeTimeout keeps the no-Docker path cheap: an engine that is
	// there answers its info call in milliseconds.
	dockerProbeTimeout = 2 * time.Second
	// containerStartTimeout covers an image pull on a slow link.
	containerStartTimeout = 5 * time.Minute
	localStartTimeout     = 2 * time.Minute
	stopTimeout           = time.Minute
	pingTimeout           = 10 * time.Second
	// opTimeout bounds one CREATE or DROP DATABASE, retries included.
	opTimeout = time.Minute

	// createAttempts and createBackoff ride out "source database is being
	// accessed by other users" while someone else is connected to the template.
	createAttempts = 10
	createBackoff  = 100 * time.Millisecond

	// maxNamePrefix keeps "t_" + prefix + "_" + 12 hex digits within the
	// 63 bytes PostgreSQL keeps of an identifier.
	maxNamePrefix = 40

	sqlstateObjectInUse = "55006"
)

// ErrRestartUnsupported is returned by RestartContext when the harness did
// not start the server itself and so has no business restarting it.
var ErrRestartUnsupported = errors.New("pgtest: restart needs the local cluster the harness started")

// server is what Main chose for this test binary. Main sets harness before
// any test runs and tests only read it, so it needs no lock.
type server struct {
	path     string
	adminURL string
	// why says, for PathNone, why no server could be had.
	why string
	// cluster is set for PathLocal: the only server we may restart.
	cluster *pgcluster.Cluster
	stop    func(context.Context) error
}

var harness *server

// Main picks the server for this test binary, runs its tests, stops what it
// started and exits with the tests' status. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	srv, err := pick(context.Background())
	if err != nil {
		logf("%v", err)
		return 1
	}
	if srv.path == PathNone {
		if os.Getenv("CI") != "" {
			logf("CI is set and no PostgreSQL server is available: %s", srv.why)
			return 1
		}
		logf("no PostgreSQL server (%s); tests that need one will be skipped", srv.why)
	}
	harness = srv
	code := m.Run()
	if srv.stop != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := srv.stop(ctx); err != nil {
			logf("stop the %s server: %v", srv.path, err)
		}
	}
	return code
}

// pick returns the first server that works, or a PathNone server saying why
// none did. It errors only when EnvURL names a server that does not answer:
// someone asked for that server, so falling back would hide their mistake.
func pick(ctx context.Context) (*server, error) {
	if admin := os.Getenv(EnvURL); admin != "" {
		where, err := ping(ctx, admin)
		if err != nil {
			return nil, fmt.Errorf("$%s is set but its server does not answer: %w", EnvURL, err)
		}
		logf("using $%s (%s)", EnvURL, where)
		return &server{path: PathEnv, adminURL: admin}, nil
	}

	var whyNot []string
	srv, err := startContainer(ctx)
	if err == nil {
		return srv, nil
	}
	logf("testcontainers skipped: %v", err)
	whyNot = append(whyNot, "testcontainers: "+err.Error())

	srv, err = startLocal(ctx)
	if err == nil {
		return srv, nil
	}
	logf("local cluster skipped: %v", err)
	whyNot = append(whyNot, "local cluster: "+err.Error())

	return &server{path: PathNone, why: strings.Join(whyNot, "; ")}, nil
}

func startContainer(ctx context.Context) (*server, error) {
	began := time.Now()
	if err := probeDocker(ctx); err != nil {
		return nil, fmt.Errorf("no Docker engine (looked for %v): %w", time.Since(began).Round(time.Millisecond), err)
	}
	ctx, cancel := context.WithTimeout(ctx, containerStartTimeout)
	defer cancel()
	ctr, err := tcpostgres.Run(ctx, containerImage,
		// Replaces the module's command, so fsync=off is repeated; the
		// connection limit leaves room for parallel tests' pools.
		testcontainers.WithCmd("postgres", "-c", "fsync=off", "-c", "synchronous_commit=off",
			"-c", "full_page_writes=off", "-c", "max_connections=200"),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		// Run can fail with a container already created; this copes with nil.
		_ = testcontainers.TerminateContainer(ctr)
		return nil, fmt.Errorf("start %s: %w", containerImage, err)
	}
	admin, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return nil, fmt.Errorf("address of the %s container: %w", containerImage, err)
	}
	where, _ := describe(admin)
	logf("using testcontainers %s at %s (started in %v)", containerImage, where, time.Since(began).Round(time.Millisecond))
	return &server{
		path:     PathTestcontainers,
		adminURL: admin,
		stop: func(ctx context.Context) error {
			return testcontainers.TerminateContainer(ctr, testcontainers.StopContext(ctx))
		},
	}, nil
}

// probeDocker asks the engine for its info under a short deadline. The
// provider's own discovery does not take our context, so it runs on a
// goroutine we can walk away from.
func probeDocker(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dockerProbeTimeout)
	defer cancel()
	answer := make(chan error, 1)
	go func() {
		p, err := testcontainers.NewDockerProvider()
		if err != nil {
			answer <- err
			return
		}
		answer <- p.Health(ctx) // Health closes the provider.
	}()
	select {
	case err := <-answer:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %v", dockerProbeTimeout)
	}
}

func startLocal(ctx context.Context) (*server, error) {
	bin, err := pgcluster.FindBinaries()
	if err != nil {
		return nil, err
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, localStartTimeout)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{BinDir: bin})
	if err != nil {
		return nil, err
	}
	logf("using local cluster from %s on port %d (started in %v)", bin, c.Port(), time.Since(began).Round(time.Millisecond))
	return &server{path: PathLocal, adminURL: c.URL("postgres"), cluster: c, stop: c.Stop}, nil
}

// NewDatabase creates an empty database for tb alone, drops it when tb
// ends, and returns its URL. It skips tb when no server is available.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	srv := available(tb)
	name := databaseName(tb.Name())
	dbURL, err := withDatabase(srv.adminURL, name)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}

	ctx, cancel := context.WithTimeout(tb.Context(), opTimeout)
	defer cancel()
	if err := createDatabase(ctx, srv.adminURL, name); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		// tb.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := dropDatabase(ctx, srv.adminURL, name); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return dbURL
}

// AdminURL returns the URL of the server's maintenance database, for tests
// that must look beyond their own database. It skips tb when no server is
// available.
func AdminURL(tb testing.TB) string {
	tb.Helper()
	return available(tb).adminURL
}

// Restart restarts the server, cutting every open session, and returns once
// it accepts connections again. It skips tb unless the harness started the
// server itself. Every test in the binary shares the server, so a test that
// restarts it must not run in parallel with tests that use it.
func Restart(tb testing.TB) {
	tb.Helper()
	srv := available(tb)
	if srv.cluster == nil {
		tb.Skipf("pgtest: Restart needs the local cluster, and this run uses %s", srv.path)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), localStartTimeout)
	defer cancel()
	if err := RestartContext(ctx); err != nil {
		tb.Fatal(err)
	}
}

// RestartContext is Restart for code without a testing.TB at hand, such as
// a goroutine injecting a fault. It returns ErrRestartUnsupported unless the
// harness started the server itself.
func RestartContext(ctx context.Context) error {
	if harness == nil || harness.cluster == nil {
		return fmt.Errorf("%w; this run uses %s", ErrRestartUnsupported, Path())
	}
	if err := harness.cluster.Restart(ctx); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

// NewStandby starts a streaming hot standby of the harness's cluster (see
// pgcluster.StartStandby), stopped and removed when tb ends; its URL(name)
// reaches database name as replayed there. It skips tb unless the harness
// started the cluster itself, except under $CI with local binaries, where a
// standby test that could have run must not go green by skipping. Standbys
// replicate the whole cluster: a test that reads pg_stat_replication must
// not run in parallel with another that starts one.
func NewStandby(tb testing.TB) *pgcluster.Standby {
	tb.Helper()
	srv := available(tb)
	if srv.cluster == nil {
		why := fmt.Sprintf("pgtest: a standby needs the local cluster, and this run uses %s", srv.path)
		if _, err := pgcluster.FindBinaries(); err == nil && os.Getenv("CI") != "" {
			tb.Fatalf("%s; CI is set and local PostgreSQL binaries exist, so run without $%s and Docker to test standbys", why, EnvURL)
		}
		tb.Skip(why)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), localStartTimeout)
	defer cancel()
	s, err := srv.cluster.StartStandby(ctx)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		// tb.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			tb.Errorf("pgtest: stop standby: %v", err)
		}
	})
	return s
}

// Path says which server Main picked: PathEnv, PathTestcontainers,
// PathLocal or PathNone.
func Path() string {
	if harness == nil {
		return PathNone
	}
	return harness.path
}

// available returns the harness's server, skipping tb when there is none.
func available(tb testing.TB) *server {
	tb.Helper()
	if harness == nil {
		tb.Fatal("pgtest: no server was picked; add func TestMain(m *testing.M) { pgtest.Main(m) } to this package")
	}
	if harness.path == PathNone {
		tb.Skipf("pgtest: no PostgreSQL server: %s", harness.why)
	}
	return harness
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to create database %s: %w", name, err)
	}
	defer conn.Close(ctx)

	// template0 takes no connections, so it is always free to copy and holds
	// nothing a server's owner may have added to template1.
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " TEMPLATE template0"
	for attempt := 1; ; attempt++ {
		_, err := conn.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		if err == nil || attempt == createAttempts || !errors.As(err, &pgErr) || pgErr.Code != sqlstateObjectInUse {
			if err != nil {
				return fmt.Errorf("create database %s (attempt %d): %w", name, attempt, err)
			}
			return nil
		}
		t := time.NewTimer(time.Duration(attempt) * createBackoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("create database %s: %w (after %w)", name, ctx.Err(), err)
		case <-t.C:
		}
	}
}

func dropDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to drop database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	// FORCE ends sessions a test's pool left open, which would block the drop.
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// databaseName turns a test name into a database name a person can trace
// back to the test, unique across parallel tests and test binaries.
func databaseName(testName string) string {
	var b strings.Builder
	b.WriteString("t_")
	pendingSep := false
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= len("t_")+maxNamePrefix {
			break
		}
		if ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') {
			if pendingSep && b.Len() > len("t_") {
				b.WriteByte('_')
			}
			b.WriteRune(r)
			pendingSep = false
			continue
		}
		pendingSep = true
	}
	return fmt.Sprintf("%s_%012x", b.String(), rand.Uint64()>>16)
}

// withDatabase returns adminURL pointed at dbname, in either of the forms
// libpq accepts: a URL, or keyword=value pairs where a later key wins.
func withDatabase(adminURL, dbname string) (string, error) {
	if !strings.HasPrefix(adminURL, "postgres://") && !strings.HasPrefix(adminURL, "postgresql://") {
		return adminURL + " dbname=" + dbname, nil
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("parse admin URL: %w", err)
	}
	u.Path, u.RawPath = "/"+dbname, ""
	return u.String(), nil
}

// ping checks that the server at connString answers and says where it is,
// without the password a URL may carry.
func ping(ctx context.Context, connString string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if err := conn.Ping(ctx); err != nil {
		return "", err
	}
	return describe(connString)
}

func describe(connString string) (string, error) {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return "", fmt.Errorf("parse connection string: %w", err)
	}
	return fmt.Sprintf("%s as %s, database %s", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), cfg.User, cfg.Database), nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pgtest: "+format+"\n", args...)
}
