// Package progress turns the workers' per-chunk results into what an
// operator watches: rows done, percent of the planner's estimate, rows per
// second over a sliding window, and an ETA.
//
// The rate is measured over the last minute rather than since start, so the
// ETA follows a re-tuned rate cap or a slowdown within a minute instead of
// being dragged by hours of history; it is never reported before there is a
// window to measure. This package only counts and formats; it does no I/O
// beyond the logger it is given.
package progress
