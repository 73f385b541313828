package progress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/vbauerster/cupwriter"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// RedrawEvery is how often the live line is redrawn on a terminal: more
// than once a second, so its seconds never look stuck.
const RedrawEvery = 500 * time.Millisecond

// The live line's bar, and the size of a terminal whose own cannot be
// read.
const (
	barWidth       = 30
	fallbackWidth  = 120
	fallbackHeight = 24
)

// Status is what a progress report shows at one instant.
type Status struct {
	Snapshot
	WorkersBusy int // workers inside a chunk
	Workers     int // the pool's size
	// Throttle is why the job waits (a rate limit, a signal), "" while
	// it does not.
	Throttle string
}

// Console is where the live line is drawn and what the logger writes to: a
// log line written while the line is drawn goes above it, whole, and the
// line is drawn again below it. Without a live line it writes straight to
// its output. Safe for concurrent use.
type Console struct {
	out      io.Writer
	terminal bool

	mu   sync.Mutex
	live *liveLine // while a Reporter draws
}

// liveLine is a Reporter's drawing, as the Console sees it.
type liveLine struct {
	progress *mpb.Progress
	redraw   chan any
}

// NewConsole returns a console on out; terminal says whether out is one
// (the caller knows: the CLI asks isatty of its stderr), and so whether a
// Reporter draws a live line on it or logs lines.
func NewConsole(out io.Writer, terminal bool) *Console {
	return &Console{out: out, terminal: terminal}
}

// Terminal reports whether the console draws a live line.
func (c *Console) Terminal() bool { return c != nil && c.terminal }

// Write writes p, a whole log line or more, above the live line while one
// is drawn, else to the output.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live != nil {
		n, err := c.live.progress.Write(p)
		// mpb stops drawing when it cannot (a write to the terminal
		// failed): the log goes on below the last drawing
		var done mpb.ErrDone[*mpb.Progress]
		if !errors.As(err, &done) {
			c.live.requestRedraw() // for mpb prints p at its next redraw
			return n, err
		}
	}
	return c.out.Write(p)
}

// attach sends writes above l from now on.
func (c *Console) attach(l *liveLine) {
	c.mu.Lock()
	c.live = l
	c.mu.Unlock()
}

// detach calls finish, which draws the line a last time, with writes held
// until it returns; they go straight to the output after.
func (c *Console) detach(finish func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	finish()
	c.live = nil
}

func (l *liveLine) requestRedraw() {
	select {
	case l.redraw <- struct{}{}:
	default: // one is due already
	}
}

// Reporter reports a run's progress: on a terminal one line redrawn in
// place, elsewhere a structured log line every interval; never both.
type Reporter struct {
	console  *Console
	log      zerolog.Logger
	interval time.Duration
	source   func() Status
}

// NewReporter returns a reporter of the figures source gives. On a
// terminal console it draws the live line; otherwise (or with a nil
// console) it logs to log every interval, the job's progress interval,
// whose default and check are the job's. source is called from the
// reporter's goroutine only.
func NewReporter(console *Console, log zerolog.Logger, interval time.Duration, source func() Status) *Reporter {
	if interval <= 0 {
		panic(fmt.Sprintf("progress.NewReporter: interval %v is not positive", interval))
	}
	return &Reporter{console: console, log: log, interval: interval, source: source}
}

// Run reports until ctx ends. A live line is drawn a last time with the
// final figures and left on the terminal.
func (r *Reporter) Run(ctx context.Context) {
	if r.console.Terminal() {
		r.draw(ctx)
		return
	}
	every(ctx, r.interval, func() { r.logLine(r.source()) })
}

// logLine is the line for a log: the figures as fields, a message that
// does not repeat them.
func (r *Reporter) logLine(s Status) {
	ev := s.fields(r.log.Info()).Int("workers_busy", s.WorkersBusy).Int("workers", s.Workers).Bool("throttled", s.Throttle != "")
	if s.Throttle != "" {
		ev = ev.Str("throttle_reason", s.Throttle)
	}
	ev.Msg("progress")
}

// draw keeps the live line on the terminal until ctx ends. mpb draws it:
// the bar at the terminal's width, the redraw in place, and the log lines
// written through the console above it.
func (r *Reporter) draw(ctx context.Context) {
	line := &liveLine{redraw: make(chan any, 1)}
	line.progress = mpb.New(
		mpb.WithOutput(r.console.out),
		mpb.ForceTTY(), // out may be a terminal that is not an *os.File
		mpb.WithConsoleWriter(sizedTerminal{cupwriter.New(r.console.out, true)}),
		mpb.WithWidth(fallbackWidth),
		mpb.WithManualRefresh(line.redraw),
	)
	var shown atomic.Pointer[Status]
	// dynamic total: the bar never completes on its own, for the planner's
	// estimate is often short of the rows there are
	bar := line.progress.New(0, mpb.BarStyle(), mpb.BarWidth(barWidth),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return shown.Load().line() })))
	update := func() {
		s := r.source()
		shown.Store(&s)
		if s.Estimated > 0 {
			bar.SetTotal(s.Estimated, false)
			bar.SetCurrent(min(s.Done, s.Estimated))
		} else { // no estimate: an empty bar, the rows in the text
			bar.SetTotal(1, false)
			bar.SetCurrent(0)
		}
	}
	update()
	r.console.attach(line)
	line.requestRedraw()

	every(ctx, RedrawEvery, func() {
		update()
		line.requestRedraw()
	})
	update()
	r.console.detach(func() {
		bar.Abort(false) // drawn a last time and kept
		line.progress.Wait()
	})
	if err := line.progress.Error; err != nil {
		r.log.Warn().Err(err).Msg("the progress line could not be drawn")
	}
}

// sizedTerminal is the writer mpb draws with, but on a terminal that
// reports no size (a pseudo-terminal nobody sized, as `script` or a
// container's -t can leave it) it is fallbackWidth wide: mpb draws nothing
// on a terminal 0 lines high.
type sizedTerminal struct{ *cupwriter.Writer }

func (t sizedTerminal) GetTermSize() (width, height int, err error) {
	width, height, err = t.Writer.GetTermSize()
	if err != nil || width <= 0 || height <= 0 {
		return fallbackWidth, fallbackHeight, nil
	}
	return width, height, nil
}

// line is the live line's text after the bar.
func (s *Status) line() string {
	var b strings.Builder
	b.WriteString(groupDigits(s.Done))
	if s.Estimated > 0 {
		b.WriteString(" / ~" + groupDigits(s.Estimated))
	}
	b.WriteString(" rows")
	if s.Percent >= 0 {
		fmt.Fprintf(&b, "  %.1f%%", s.Percent)
	}
	b.WriteString("  " + groupDigits(int64(s.RecentRowsPerSec)) + " rows/s  ETA ")
	if s.ETA >= 0 {
		b.WriteString(s.ETA.String())
	} else {
		b.WriteString("?")
	}
	fmt.Fprintf(&b, "  workers %d/%d", s.WorkersBusy, s.Workers)
	if s.Throttle != "" {
		b.WriteString("  throttled: " + s.Throttle)
	}
	return b.String()
}

// groupDigits writes n with a comma every three digits: the rows of a
// 40-hour job run to ten digits.
func groupDigits(n int64) string {
	digits := strconv.FormatInt(n, 10)
	sign := ""
	if n < 0 {
		sign, digits = "-", digits[1:]
	}
	var b strings.Builder
	for i, d := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(d)
	}
	return sign + b.String()
}
