package progress

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"
	"github.com/rs/zerolog"
)

// figures is a source whose rows grow by 1000 at each call, of an
// estimated 10,000.
type figures struct {
	mu    sync.Mutex
	calls int64
}

func (f *figures) status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	done := 1000 * f.calls
	return Status{
		Snapshot: Snapshot{Done: done, Estimated: 10_000, Percent: float64(done) / 100,
			RowsPerSec: 4000, RecentRowsPerSec: 4599, ETA: 3 * time.Minute},
		WorkersBusy: 3, Workers: 4, Throttle: "replica lag 12.3 s > 10 s",
	}
}

// syncBuffer is what a test reads from a pseudo-terminal, written by the
// goroutine that copies it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// redraw is what mpb writes before drawing the line again: cursor up one
// line, erase to the end of the screen.
const redraw = "\x1b[1A\x1b[J"

// onTerminal runs a reporter on a pseudo-terminal cols wide, with a logger
// writing through its console, calls during while it runs, stops it, logs
// "job done", and returns what the terminal received, its line ends
// turned back into "\n".
func onTerminal(t *testing.T, cols uint16, during func(log zerolog.Logger)) string {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: cols}); err != nil {
		t.Fatal(err)
	}
	var screen syncBuffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(&screen, ptmx) // ends with EIO once the terminal side is closed
	}()

	console := NewConsole(tty, true)
	log := zerolog.New(console) // as the CLI's logger would write: through the console
	src := &figures{}
	ctx, stop := context.WithCancel(context.Background())
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		NewReporter(console, log, 100*time.Millisecond, src.status).Run(ctx)
	}()
	during(log)
	stop()
	<-reported
	log.Info().Msg("job done") // after the line: below it, straight
	tty.Close()
	<-copied
	return strings.ReplaceAll(screen.String(), "\r\n", "\n") // the terminal's ONLCR
}

func TestLiveLineOnTerminal(t *testing.T) {
	out := onTerminal(t, 160, func(log zerolog.Logger) {
		time.Sleep(1200 * time.Millisecond)
		log.Warn().Msg("destination slow: a chunk took 12 s")
		time.Sleep(1200 * time.Millisecond)
	})
	frames := strings.Split(out, redraw)
	// 2.4 s at 2 redraws a second, plus the first and the last drawing
	if len(frames) < 4 {
		t.Fatalf("the line was drawn %d times in 2.4 s, want 4 or more:\n%q", len(frames), out)
	}
	var warned, prevDone, prevFill int
	for i, frame := range frames {
		lines := strings.Split(strings.TrimSuffix(frame, "\n"), "\n")
		if i == len(frames)-1 {
			// the final line, then what was logged after the reporter
			if len(lines) != 2 || !strings.Contains(lines[1], "job done") {
				t.Fatalf("last drawing and what followed: %q", frame)
			}
			lines = lines[:1]
		}
		if len(lines) == 2 && strings.Contains(lines[0], "destination slow: a chunk took 12 s") {
			// the warning above the line, whole on its own line
			warned++
			lines = lines[1:]
		}
		if len(lines) != 1 {
			t.Fatalf("drawing %d is not one line: %q", i, frame)
		}
		line := lines[0]
		for _, field := range []string{"[", "]", " / ~10,000 rows", "%", "4,599 rows/s", "ETA 3m0s", "workers 3/4",
			"throttled: replica lag 12.3 s > 10 s"} {
			if !strings.Contains(line, field) {
				t.Errorf("drawing %d lacks %q: %q", i, field, line)
			}
		}
		done := 0
		for _, r := range strings.SplitN(strings.TrimSpace(strings.SplitN(line, "]", 2)[1]), " ", 2)[0] {
			if r >= '0' && r <= '9' {
				done = 10*done + int(r-'0')
			}
		}
		if done < prevDone {
			t.Errorf("drawing %d shows %d rows, fewer than the one before (%d)", i, done, prevDone)
		}
		prevDone = done
		// the bar fills with the rows done
		fill := strings.Count(strings.SplitN(line, "]", 2)[0], "=")
		if fill < prevFill {
			t.Errorf("drawing %d's bar is shorter than the one before: %q", i, line)
		}
		prevFill = fill
	}
	if prevFill == 0 {
		t.Errorf("the bar never filled: %q", out)
	}
	if warned != 1 {
		t.Errorf("the warning was printed %d times above the line, want once:\n%q", warned, out)
	}
	if prevDone < 3000 {
		t.Errorf("the last drawing shows %d rows: not redrawn with new figures", prevDone)
	}
	if strings.Contains(out, `"message":"progress"`) {
		t.Errorf("a progress log line on a terminal, beside the live line:\n%q", out)
	}
}

// On a narrow terminal the line is cut to its width rather than wrapped,
// for a wrapped line would leave its first part behind at each redraw. A
// terminal that reports no size (a pseudo-terminal nobody sized, as
// `script` leaves it) still gets the line, at the fallback width: mpb
// would draw nothing on a terminal 0 columns wide.
func TestLiveLineFitsTheTerminal(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cols, width int
	}{{"narrow", 60, 60}, {"unsized", 0, fallbackWidth}} {
		t.Run(tc.name, func(t *testing.T) {
			out := onTerminal(t, uint16(tc.cols), func(zerolog.Logger) { time.Sleep(1100 * time.Millisecond) })
			frames := strings.Split(out, redraw)
			if len(frames) < 3 {
				t.Fatalf("drawn %d times: %q", len(frames), out)
			}
			for i, frame := range frames {
				line := strings.SplitN(frame, "\n", 2)[0]
				if width := utf8.RuneCountInString(line); width > tc.width {
					t.Errorf("drawing %d is %d columns wide on a terminal of %d: %q", i, width, tc.width, line)
				}
				if !strings.Contains(line, " / ~10,000 rows") {
					t.Errorf("drawing %d lost its first figures: %q", i, line)
				}
			}
		})
	}
}

func TestLogLinesWithoutTerminal(t *testing.T) {
	var out bytes.Buffer
	console := NewConsole(&out, false)
	log := zerolog.New(console)
	src := &figures{}
	ctx, stop := context.WithTimeout(context.Background(), 550*time.Millisecond)
	defer stop()
	NewReporter(console, log, 100*time.Millisecond, src.status).Run(ctx)

	if strings.Contains(out.String(), "\x1b") || strings.Contains(out.String(), "\r") {
		t.Fatalf("terminal control without a terminal: %q", out.String())
	}
	lines := 0
	scanner := bufio.NewScanner(&out)
	for scanner.Scan() {
		lines++
		var fields map[string]any
		if err := json.Unmarshal(scanner.Bytes(), &fields); err != nil {
			t.Fatalf("line %d is not JSON: %v: %q", lines, err, scanner.Text())
		}
		want := map[string]any{
			"level": "info", "message": "progress", "rows_done": float64(1000 * lines), "rows_estimated": float64(10_000),
			"percent": float64(10 * lines), "rows_per_sec": float64(4599), "eta": "3m0s",
			"workers_busy": float64(3), "workers": float64(4), "throttled": true, "throttle_reason": "replica lag 12.3 s > 10 s",
		}
		for k, v := range want {
			if fields[k] != v {
				t.Errorf("line %d: %s = %v, want %v", lines, k, fields[k], v)
			}
		}
		if len(fields) != len(want) {
			t.Errorf("line %d has fields %v, want exactly %v", lines, fields, want)
		}
	}
	if lines < 2 || lines > 6 { // a busy machine may miss a tick, never add one
		t.Errorf("%d lines in 550 ms at one each 100 ms", lines)
	}
}

func TestStatusLine(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status Status
		want   string
	}{
		{"running", Status{Snapshot: Snapshot{Done: 1_234_567, Estimated: 12_000_000, Percent: 10.28, RecentRowsPerSec: 45_999.7, ETA: 4*time.Minute + 5*time.Second},
			WorkersBusy: 8, Workers: 8},
			"1,234,567 / ~12,000,000 rows  10.3%  45,999 rows/s  ETA 4m5s  workers 8/8"},
		{"no estimate, no rate yet", Status{Snapshot: Snapshot{Done: 0, Percent: -1, ETA: -1}, Workers: 4},
			"0 rows  0 rows/s  ETA ?  workers 0/4"},
		{"throttled", Status{Snapshot: Snapshot{Done: 999, Estimated: 1000, Percent: 99.9, ETA: -1}, WorkersBusy: 1, Workers: 2, Throttle: "rate limit"},
			"999 / ~1,000 rows  99.9%  0 rows/s  ETA ?  workers 1/2  throttled: rate limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.status.line(); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestGroupDigits(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 7: "7", 999: "999", 1000: "1,000", 123456: "123,456", 1234567890: "1,234,567,890", -45000: "-45,000"} {
		if got := groupDigits(n); got != want {
			t.Errorf("groupDigits(%d) = %q, want %q", n, got, want)
		}
	}
}
