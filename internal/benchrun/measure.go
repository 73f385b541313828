package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat. Linux reports
// them in USER_HZ, which is 100 on every architecture it exports to user
// space, whatever the kernel's own tick rate.
const userHZ = 100

// childWaitDelay bounds how long a child's output pipes may stay open after
// it exits or is killed (a grandchild holding them must not hang the run).
const childWaitDelay = 10 * time.Second

// usage is what one measured process (or pipeline of processes) cost.
type usage struct {
	wall time.Duration
	// cpu is user+system time of the client processes and the children
	// they waited for (wait4 reports both); 0 when the client is this
	// process's own connection, whose cost is not the method's.
	cpu time.Duration
	// maxRSS is the peak resident set in bytes of the largest process.
	maxRSS int64
	// server is the CPU the PostgreSQL server spent meanwhile, all its
	// processes together; -1 when it could not be read.
	server time.Duration
}

// child is a process of the benchmark: in its own process group (so a
// Ctrl-C reaches it through us, once, and killing it kills what it
// spawned), killed with its group when ctx ends, its stderr kept for
// error messages.
type child struct {
	cmd    *exec.Cmd
	stderr *tail
}

func newChild(ctx context.Context, path string, args ...string) *child {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = childWaitDelay
	t := &tail{max: 8 << 10}
	cmd.Stderr = t
	return &child{cmd: cmd, stderr: t}
}

// kill ends the child and everything in its process group at once.
func (c *child) kill() {
	if c.cmd.Process != nil {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (c *child) name() string { return filepath.Base(c.cmd.Path) }

// failed describes a child that did not exit as wanted, with the end of
// what it said.
func (c *child) failed(err error) error {
	return fmt.Errorf("%s %s: %w\n%s", c.name(), strings.Join(redactArgs(c.cmd.Args[1:]), " "), err, strings.TrimSpace(c.stderr.String()))
}

// redactArgs shortens connection URLs in an error message: they carry no
// password here, but a hundred-character URL hides the flag that failed.
func redactArgs(args []string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if strings.HasPrefix(a, "postgres://") {
			if j := strings.LastIndex(a, "/"); j > 0 {
				out[i] = "postgres://…" + a[j:]
			}
		}
	}
	return out
}

// processUsage reads a finished child's CPU and peak RSS. Maxrss is in KiB
// on Linux.
func processUsage(ps *os.ProcessState) (cpu time.Duration, maxRSS int64) {
	cpu = ps.UserTime() + ps.SystemTime()
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		maxRSS = ru.Maxrss << 10
	}
	return cpu, maxRSS
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.ToValidUTF8(t.buf, nil))
}

// serverCPU sums the CPU time of a PostgreSQL server: the postmaster's
// own, that of its live children (backends, background processes), and
// that of the children it has reaped (cutime, cstime): backends that came
// and went between two readings are counted too.
func serverCPU(postmaster int) (time.Duration, error) {
	f, err := procStat(postmaster)
	if err != nil {
		return 0, err
	}
	ticks := f.utime + f.stime + f.cutime + f.cstime
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("list /proc: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == postmaster {
			continue
		}
		c, err := procStat(pid)
		if err != nil || c.ppid != postmaster {
			continue // gone meanwhile, or not the server's
		}
		ticks += c.utime + c.stime
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

type statFields struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

func procStat(pid int) (statFields, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return statFields{}, err
	}
	return parseStat(string(b))
}

// parseStat reads /proc/<pid>/stat. The command name, field 2, is in
// parentheses and may hold spaces and parentheses itself, so fields are
// counted from the last ')'.
func parseStat(s string) (statFields, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return statFields{}, errors.New("no ')' in /proc stat line")
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); ppid is field 4, utime…cstime 14…17.
	if len(fields) < 15 {
		return statFields{}, fmt.Errorf("short /proc stat line: %d fields after the name", len(fields))
	}
	var f statFields
	var err error
	if f.ppid, err = strconv.Atoi(fields[1]); err != nil {
		return f, fmt.Errorf("ppid in /proc stat: %w", err)
	}
	for j, p := range []*int64{&f.utime, &f.stime, &f.cutime, &f.cstime} {
		if *p, err = strconv.ParseInt(fields[11+j], 10, 64); err != nil {
			return f, fmt.Errorf("field %d of /proc stat: %w", 14+j, err)
		}
	}
	return f, nil
}

// median of durations; the samples are not modified.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
