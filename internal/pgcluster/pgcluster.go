package pgcluster

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// debianBinGlob is where Debian and Ubuntu install every server major
	// version side by side, off PATH.
	debianBinGlob = "/usr/lib/postgresql/*/bin"

	// maxSocketPath is sun_path's capacity minus its NUL; postgres refuses a
	// socket directory that would not fit ".s.PGSQL.<port>" under it.
	maxSocketPath = 107

	// startAttempts bounds retries when another process takes the free port
	// between our probe closing it and postgres binding it.
	startAttempts = 3

	// logTailBytes is how much of the server log an error carries: enough
	// for the FATAL line and its context, not the whole start-up chatter.
	logTailBytes = 4 << 10

	// waitDelay bounds how long we wait for a child's output pipes after it
	// exits, so a daemon that kept them open cannot hang us.
	waitDelay = 10 * time.Second
)

// Options tunes Start. The zero value is ready to use.
type Options struct {
	// BinDir holds initdb and pg_ctl; empty means FindBinaries.
	BinDir string
	// TempDir is the parent of the cluster's directory; empty means
	// os.TempDir(). When running as root it must be reachable by the
	// postgres user, which owns the cluster.
	TempDir string
	// Logf receives progress messages; nil keeps the cluster silent.
	Logf func(format string, args ...any)
}

// Cluster is one running throwaway server. Its methods are safe for
// concurrent use.
type Cluster struct {
	binDir string
	dir    string
	port   int
	// cred is set when we are root: initdb and postgres refuse to run as
	// root, so every binary runs as the postgres user instead.
	cred *syscall.Credential
	logf func(format string, args ...any)
	// settings are server settings (name=value) beyond those every
	// cluster runs with, such as a standby's cluster_name.
	settings []string

	mu      sync.Mutex
	stopped bool
}

// FindBinaries returns the directory holding initdb and pg_ctl: the one on
// PATH if any, else the newest Debian-style /usr/lib/postgresql/*/bin.
func FindBinaries() (dir string, err error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		// PATH often holds symlinks into the real bin directory; report and
		// use that one, where pg_ctl and postgres sit beside initdb.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			if dir, err := filepath.Abs(filepath.Dir(real)); err == nil && isExecutable(filepath.Join(dir, "pg_ctl")) {
				return dir, nil
			}
		}
	}
	dirs, err := filepath.Glob(debianBinGlob)
	if err != nil {
		return "", fmt.Errorf("look for PostgreSQL binaries in %s: %w", debianBinGlob, err)
	}
	// Newest first, comparing "9.6" and "15" as versions, not strings.
	slices.SortFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server binaries: initdb is not on PATH and no %s holds initdb and pg_ctl; install the server package (e.g. apt-get install postgresql)", debianBinGlob)
}

// Start creates a cluster in a new temporary directory and starts it on a
// free port of 127.0.0.1. The caller must Stop it.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = FindBinaries(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{binDir: binDir, logf: opts.Logf}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	if os.Geteuid() == 0 {
		cred, err := postgresCredential()
		if err != nil {
			return nil, err
		}
		c.cred = cred
	}

	dir, err := os.MkdirTemp(opts.TempDir, "pgcluster-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c.dir = dir
	if err := c.prepareDir(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}

	c.logf("pgcluster: initdb %s (binaries %s)", c.dataDir(), binDir)
	// --no-sync: a throwaway cluster need not survive a power cut.
	out, err := c.run(ctx, "initdb", "-D", c.dataDir(), "-A", "trust", "-U", "postgres",
		"--encoding=UTF8", "--no-locale", "--no-sync")
	if err != nil {
		_ = os.RemoveAll(dir)
		hint := ""
		if c.cred != nil {
			hint = fmt.Sprintf(" (running as root, initdb runs as uid %d, which must be able to reach %s; set Options.TempDir otherwise)", c.cred.Uid, dir)
		}
		return nil, fmt.Errorf("initdb in %s%s: %w\n%s", dir, hint, err, out)
	}

	if err := c.startOnFreePort(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	c.logf("pgcluster: started on 127.0.0.1:%d in %s", c.port, dir)
	return c, nil
}

// URL returns a connection URL for dbname as the trusted postgres superuser.
func (c *Cluster) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on; it survives Restart.
func (c *Cluster) Port() int { return c.port }

// Dir returns the cluster's directory: data/, the socket directory and the
// server log. Stop removes it.
func (c *Cluster) Dir() string { return c.dir }

// Restart stops the server (fast: open sessions are cut) and starts it
// again on the same port, waiting until it accepts connections.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("restart postgres in %s: cluster already stopped", c.dir)
	}
	offset := c.logSize()
	out, err := c.run(ctx, "pg_ctl", "restart", "-D", c.dataDir(), "-m", "fast", "-w",
		"-l", c.logFile(), "-o", c.serverOptions())
	if err != nil {
		return fmt.Errorf("restart postgres on port %d: %w\n%s\nserver log:\n%s", c.port, err, out, c.logTail(offset))
	}
	c.logf("pgcluster: restarted on 127.0.0.1:%d", c.port)
	return nil
}

// Stop shuts the server down and removes its directory. It asks for a fast
// shutdown and falls back to an immediate one. Once it has succeeded,
// further calls do nothing; after a failure it may be called again.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	if out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir(), "-m", "fast", "-w"); err != nil {
		c.logf("pgcluster: fast stop failed (%v: %s); trying immediate", err, out)
		out2, err2 := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir(), "-m", "immediate", "-w")
		// Both fail when the server had already died; that is stopped too.
		if err2 != nil && c.running(ctx) {
			return fmt.Errorf("stop postgres in %s: fast: %w: %s; immediate: %w: %s", c.dir, err, out, err2, out2)
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("remove cluster directory %s: %w", c.dir, err)
	}
	c.stopped = true
	c.logf("pgcluster: stopped and removed %s", c.dir)
	return nil
}

func (c *Cluster) dataDir() string   { return filepath.Join(c.dir, "data") }
func (c *Cluster) socketDir() string { return filepath.Join(c.dir, "sock") }
func (c *Cluster) logFile() string   { return filepath.Join(c.dir, "server.log") }

// prepareDir makes the socket directory and, when running as root, hands
// the whole tree to the postgres user that will own the cluster.
func (c *Cluster) prepareDir() error {
	sock := c.socketDir()
	if n := len(sock) + len("/.s.PGSQL.65535"); n > maxSocketPath {
		return fmt.Errorf("socket path under %s would be %d bytes, over the %d a unix socket allows; set Options.TempDir to a shorter directory", c.dir, n, maxSocketPath)
	}
	// The socket directory goes to postgres through pg_ctl's shell, quoted.
	if strings.ContainsRune(sock, '\'') {
		return fmt.Errorf("cluster directory %q contains a single quote; set Options.TempDir to a plainer directory", c.dir)
	}
	if err := os.Mkdir(sock, 0o700); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	if c.cred == nil {
		return nil
	}
	err := filepath.WalkDir(c.dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(c.cred.Uid), int(c.cred.Gid))
	})
	if err != nil {
		return fmt.Errorf("hand %s to the postgres user: %w", c.dir, err)
	}
	return nil
}

// startOnFreePort starts the server on a port that was free a moment ago,
// trying another if someone took it in between.
func (c *Cluster) startOnFreePort(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		c.port = port
		offset := c.logSize()
		out, err := c.run(ctx, "pg_ctl", "start", "-D", c.dataDir(), "-w",
			"-l", c.logFile(), "-o", c.serverOptions())
		if err == nil {
			return nil
		}
		tail := c.logTail(offset)
		// A start that timed out (or was cancelled) may have left a server
		// behind; it must not outlive the directory we are about to remove,
		// so the stop runs even when ctx is already done.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		_, _ = c.run(stopCtx, "pg_ctl", "stop", "-D", c.dataDir(), "-m", "immediate", "-w")
		cancel()
		if attempt < startAttempts && portTaken(tail) {
			c.logf("pgcluster: port %d was taken before postgres bound it; trying another", port)
			continue
		}
		return fmt.Errorf("start postgres on port %d: %w\n%s\nserver log (%s):\n%s", port, err, out, c.logFile(), tail)
	}
}

// serverOptions go to postgres through pg_ctl's shell. The standby takes
// the same max_connections as its primary: a hot standby refuses to start
// with fewer. max_wal_senders and wal_level keep their defaults (10,
// replica), which let a standby stream.
func (c *Cluster) serverOptions() string {
	opts := fmt.Sprintf("-p %d -k '%s' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
		c.port, c.socketDir())
	for _, s := range c.settings {
		opts += " -c " + s
	}
	return opts
}

// run runs one of the cluster's binaries in the cluster directory, as the
// postgres user when we are root, and returns its combined output.
func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	// The caller's working directory may be closed to the postgres user.
	cmd.Dir = c.dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	cmd.WaitDelay = waitDelay
	out, err := cmd.CombinedOutput()
	return bytes.TrimSpace(out), err
}

// running reports whether pg_ctl still sees a server; when in doubt it says
// yes, so that Stop never deletes the directory under a live server.
func (c *Cluster) running(ctx context.Context) bool {
	_, err := c.run(ctx, "pg_ctl", "status", "-D", c.dataDir())
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		// 3: no server running; 4: no data directory left to run from.
		code := exitErr.ExitCode()
		return code != 3 && code != 4
	}
	return err == nil
}

func (c *Cluster) logSize() int64 {
	fi, err := os.Stat(c.logFile())
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns the end of what the server logged after offset, so an
// error shows this attempt's complaint rather than an earlier one.
func (c *Cluster) logTail(offset int64) string {
	f, err := os.Open(c.logFile())
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, offset, 1<<40))
	if err != nil {
		return fmt.Sprintf("(read server log: %v)", err)
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
	}
	return string(bytes.TrimSpace(b))
}

func portTaken(log string) bool {
	return strings.Contains(log, "could not bind") || strings.Contains(log, "Address already in use")
}

// freePort asks the kernel for a port nobody holds right now. Another
// process can take it before postgres binds it; startOnFreePort retries.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, initdb and postgres need an unprivileged user to run as, and looking up %q failed: %w; create it (useradd --system postgres) or run as another user", "postgres", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid %q of user postgres: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid %q of user postgres: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// compareVersions orders dotted versions numerically ("9.6" < "15");
// a part that is not a number sorts before any that is.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		an, aerr := strconv.Atoi(as[i])
		bn, berr := strconv.Atoi(bs[i])
		switch {
		case aerr != nil && berr != nil:
			if c := strings.Compare(as[i], bs[i]); c != 0 {
				return c
			}
		case aerr != nil:
			return -1
		case berr != nil:
			return 1
		default:
			if c := cmp.Compare(an, bn); c != 0 {
				return c
			}
		}
	}
	return cmp.Compare(len(as), len(bs))
}
