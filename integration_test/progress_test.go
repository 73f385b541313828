package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// redraw is what the live line writes before each drawing after the
// first: cursor up a line, erase to the end of the screen.
const redraw = "\x1b[1A\x1b[J"

// onTerminal runs the binary with stdout and stderr on a pseudo-terminal
// of cols columns until it exits, calling during once it has started, and
// returns its exit code and what the terminal received, line ends as "\n".
func onTerminal(t *testing.T, cols uint16, during func(*exec.Cmd, *lockedBuffer), args ...string) (int, string) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: cols}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := command(ctx, t, args...)
	cmd.Stdout, cmd.Stderr = tty, tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // the child has its own
	screen := &lockedBuffer{}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(screen, ptmx) // ends with EIO once the child has exited
	}()
	if during != nil {
		during(cmd, screen)
	}
	err = cmd.Wait()
	<-copied
	code := 0
	if err != nil {
		code = cmd.ProcessState.ExitCode()
	}
	return code, strings.ReplaceAll(screen.String(), "\r\n", "\n")
}

// TestProgressLineOnATerminal: with stderr on a terminal, the runner draws
// one line, redrawn in place at least once a second, with the bar, rows of
// the estimate, %, rows/s, ETA and workers; the logs print above it, and no
// progress log line beside it.
func TestProgressLineOnATerminal(t *testing.T) {
	db := itemsDatabase(t, 12_000)
	code, out := onTerminal(t, 160, nil, "start", "--source", db, "--job", "drawn", "--from", "src", "--to", "dst",
		"--rate", "4000", "--chunk-size", "500", "--workers", "2")
	if code != 0 {
		t.Fatalf("exit %d:\n%q", code, out)
	}
	frames := strings.Split(out, redraw)
	// 3 s at two drawings a second
	if len(frames) < 4 {
		t.Fatalf("the line was drawn %d times in about 3 s:\n%q", len(frames), out)
	}
	for i, frame := range frames {
		lines := strings.Split(strings.TrimSuffix(frame, "\n"), "\n")
		switch i {
		case 0: // the logs of the start, then the first drawing
			if !strings.Contains(frame, "job started") {
				t.Errorf("the first drawing does not follow the start's log: %q", frame)
			}
			lines = lines[len(lines)-1:]
		case len(frames) - 1: // the last drawing, then the log of the end
			if len(lines) != 2 || !strings.Contains(lines[1], "job done") || !strings.Contains(lines[0], "100.0%") {
				t.Errorf("the last drawing and what followed: %q", frame)
			}
			lines = lines[:1]
		}
		if len(lines) != 1 {
			t.Errorf("drawing %d is not one line: %q", i, frame)
			continue
		}
		for _, field := range []string{"[", "]", " / ~12,000 rows", "%", " rows/s", "ETA ", "workers ", "/2"} {
			if !strings.Contains(lines[0], field) {
				t.Errorf("drawing %d lacks %q: %q", i, field, lines[0])
			}
		}
	}
	if strings.Contains(out, "INF progress") || strings.Contains(out, `"progress"`) {
		t.Errorf("a progress log line on a terminal, beside the live line:\n%q", out)
	}
}

// TestProgressLogWithoutATerminal: elsewhere, one JSON line every
// --progress-interval, with the same figures as fields and a message that
// repeats none of them; no terminal control.
func TestProgressLogWithoutATerminal(t *testing.T) {
	db := itemsDatabase(t, 12_000)
	r := mustSucceed(t, "start", "--source", db, "--job", "logged", "--from", "src", "--to", "dst",
		"--rate", "4000", "--chunk-size", "500", "--workers", "2", "--progress-interval", "500ms")
	if strings.Contains(r.stderr, "\x1b") || strings.Contains(r.stderr, "\r") {
		t.Fatalf("terminal control without a terminal:\n%q", r.stderr)
	}
	var lines int
	scanner := bufio.NewScanner(strings.NewReader(r.stderr))
	for scanner.Scan() {
		var fields map[string]any
		if err := json.Unmarshal(scanner.Bytes(), &fields); err != nil {
			t.Fatalf("not a JSON line: %q", scanner.Text())
		}
		if fields["message"] != "progress" {
			continue
		}
		lines++
		for _, name := range []string{"rows_done", "rows_estimated", "rows_per_sec", "percent", "workers_busy", "workers", "throttled", "job", "time"} {
			if _, ok := fields[name]; !ok {
				t.Errorf("progress line %d lacks %s: %q", lines, name, scanner.Text())
			}
		}
		if fields["rows_estimated"] != float64(12_000) || fields["workers"] != float64(2) || fields["throttled"] != false {
			t.Errorf("progress line %d: %q", lines, scanner.Text())
		}
	}
	if lines < 3 {
		t.Fatalf("%d progress lines in about 3 s at one each 500 ms:\n%s", lines, r.stderr)
	}
}
