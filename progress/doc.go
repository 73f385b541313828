// Package progress turns the workers' per-chunk results into what an
// operator watches: rows done, percent of the planner's estimate, rows per
// second, an ETA, the workers busy and why the job is throttled, and it
// reports them: on a terminal one line redrawn in place, elsewhere one
// structured log line every interval, never both.
//
// The ETA's rate is measured over the last minute rather than since start,
// so it follows a re-tuned rate cap or a slowdown within a minute instead of
// being dragged by hours of history; the live line's rate looks back 10 s,
// to show a change while one watches. Neither is reported before there is a
// window to measure.
//
// On a terminal, the logger writes through a Console, so that a warning
// logged while the line is drawn prints above it, whole, and the line is
// drawn again below it. This package does no I/O beyond that console and
// the logger it is given; it never reads the databases.
package progress
