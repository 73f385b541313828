package main

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/backfill/backfill"
)

// longJobs are jobs as a fleet of them looks: long names that share their
// start, long runner hosts, figures in the billions, every state.
func longJobs() []backfill.JobStatus {
	asOf := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	eta := 3*86400.0 + 7200
	err := "ERROR: duplicate key value violates unique constraint \"orders_archive_pkey\" (SQLSTATE 23505) and much more text after it"
	beat := asOf.Add(-time.Second)
	return []backfill.JobStatus{
		{Job: "orders_2024_backfill_customer_addresses_eu_west_1", State: backfill.StateRunning, RowsRead: 1_234_567_890,
			RowsEstimated: 4_000_000_000, Percent: 30.8, RowsPerSec: 123_456.7, ETASeconds: &eta, RowsFailed: 12_345,
			Runner: "ip-10-0-12-34.eu-west-1.compute.internal:1234567", HeartbeatAt: &beat, UpdatedAt: asOf.Add(-2 * time.Second), AsOf: asOf},
		{Job: "orders_2024_backfill_customer_addresses_us_east_2", State: backfill.StateInterrupted, RowsRead: 999_999,
			RowsEstimated: 1_000_000, Percent: 99.9, Runner: "ip-10-0-99-1.us-east-2.compute.internal:42", LastError: &err,
			UpdatedAt: asOf.Add(-50 * time.Hour), AsOf: asOf},
		{Job: "short", State: backfill.StateDone, RowsRead: 10, RowsEstimated: 3, Percent: 100, Runner: "db1:7", UpdatedAt: asOf.Add(-90 * time.Second), AsOf: asOf},
		{Job: "no_estimate", State: backfill.StatePaused, RowsRead: 5_000, UpdatedAt: asOf.Add(-time.Hour), AsOf: asOf},
		{Job: "partitioned", State: backfill.StateRunning, RowsRead: 70, RowsEstimated: 100, Percent: 70, Runner: "db1:7",
			Runners: []backfill.RunnerStatus{{Host: "a", PID: 1}, {Host: "b", PID: 2}}, UpdatedAt: asOf, AsOf: asOf},
	}
}

// The table fits 100 columns whatever the names, each job on one line,
// names shortened in their middle so that jobs sharing a prefix still
// differ, and the figures abbreviated.
func TestStatusTableFits(t *testing.T) {
	var out strings.Builder
	printTable(&out, longJobs(), statusWidth)
	t.Log("\n" + out.String())
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines, want a header and 5 jobs:\n%s", len(lines), out.String())
	}
	for i, line := range lines {
		if width := utf8.RuneCountInString(line); width > statusWidth {
			t.Errorf("line %d is %d columns wide:\n%s", i, width, line)
		}
	}
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "JOB STATE PROGRESS ROWS/S ETA FAILED RUNNER UPDATED" {
		t.Errorf("header %q", lines[0])
	}
	for i, want := range [][]string{
		{"orders_2024", "eu_west_1", "running", "30.8% 1.2B", "123k", "3d02h", "12.3k", "ip-10", ":1234567", "2s ago"},
		{"orders_2024", "us_east_2", "interrupted", "99.9% 1.0M", " - ", "0", ":42", "2d02h ago"},
		{"short", "done", "100.0% 10", "db1:7", "1m30s ago"},
		{"no_estimate", "paused", "5000", " - ", "1h00m ago"},
		{"partitioned", "70.0% 70", "2 runners", "0s ago"},
	} {
		for _, field := range want {
			if !strings.Contains(lines[i+1], field) {
				t.Errorf("job %d lacks %q: %q", i, field, lines[i+1])
			}
		}
	}
}

func TestCountAndDurationText(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 9999: "9999", 10_000: "10.0k", 123_456: "123k", 999_499: "999k",
		999_500: "1.0M", 45_600_000: "45.6M", 999_999_999: "1.0B", 1_234_567_890_123: "1235B"} {
		if got := countText(n); got != want {
			t.Errorf("countText(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{0: "0s", 59 * time.Second: "59s", 61 * time.Second: "1m01s",
		2*time.Hour + 5*time.Minute: "2h05m", 49 * time.Hour: "2d01h"} {
		if got := durationText(d); got != want {
			t.Errorf("durationText(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestShorten(t *testing.T) {
	for _, tc := range []struct {
		in    string
		width int
		want  string
	}{
		{"orders", 12, "orders"},
		{"orders_2024_eu_west", 12, "order…u_west"},
		{"host.example.com:12345", 12, "host.…:12345"},
	} {
		if got := shorten(tc.in, tc.width); got != tc.want || utf8.RuneCountInString(got) > tc.width {
			t.Errorf("shorten(%q, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
	}
}

// --wide says what a throttled job waits for, and how --rate auto sets
// its rate; the detail view too.
func TestWideAndDetailShowTheThrottle(t *testing.T) {
	asOf := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := backfill.JobStatus{Job: "lagged", State: backfill.StateRunning, Rate: 4000, RateAuto: true, RateAutoMax: 8000,
		Throttled: true, ThrottleReason: "replica lag 12.3 s > 10 s on replica 1", UpdatedAt: asOf, AsOf: asOf}
	var wide, detail strings.Builder
	printWide(&wide, []backfill.JobStatus{s})
	printDetail(&detail, backfill.JobDetail{JobStatus: s})
	for _, want := range []string{"THROTTLED", "replica lag 12.3 s > 10 s on replica 1", "auto (now 4000 rows/s, at most 8000 rows/s)"} {
		if !strings.Contains(wide.String(), want) {
			t.Errorf("--wide lacks %q:\n%s", want, wide.String())
		}
	}
	for _, want := range []string{"settings:   rate auto (now 4000 rows/s, at most 8000 rows/s)", "throttled:  replica lag 12.3 s > 10 s on replica 1"} {
		if !strings.Contains(detail.String(), want) {
			t.Errorf("the detail view lacks %q:\n%s", want, detail.String())
		}
	}
	s.RateAutoMax = 0
	if got := jobRateText(s); got != "auto (now 4000 rows/s)" {
		t.Errorf("auto without a ceiling: %q", got)
	}
}
