package main

import (
	"os"
	"slices"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses: fields count from
	// the last ')'.
	line := "4242 (post gres) x) S 4000 4242 4242 0 -1 4194304 1000 0 0 0 123 45 6 7 20 0 1 0 100 1000 100 18446744073709551615"
	got, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	want := statFields{ppid: 4000, utime: 123, stime: 45, cutime: 6, cstime: 7}
	if got != want {
		t.Fatalf("parseStat = %+v, want %+v", got, want)
	}
	if _, err := parseStat("4242 (short) S 1 2"); err == nil {
		t.Fatal("a short line parsed")
	}
}

// TestServerCPUOfThisProcess reads our own process as a "postmaster": its
// count must be at least its own CPU time as /proc reports it.
func TestServerCPUOfThisProcess(t *testing.T) {
	self, err := procStat(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	got, err := serverCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if own := time.Duration(self.utime+self.stime) * time.Second / userHZ; got < own {
		t.Fatalf("serverCPU = %v, less than the process's own %v", got, own)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{3}, 3},
		{[]time.Duration{5, 1, 3}, 3},
		{[]time.Duration{4, 1, 3, 2}, 2},
	} {
		in := append([]time.Duration(nil), c.in...)
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		for i := range in {
			if in[i] != c.in[i] {
				t.Fatalf("median reordered its input: %v", c.in)
			}
		}
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1000000: "1,000,000", -12345: "-12,345"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestPickList(t *testing.T) {
	known := []string{"a", "b", "c"}
	got, err := pickList("-x", "c, a", known)
	if err != nil || len(got) != 2 || got[0] != "a" || got[1] != "c" {
		t.Fatalf("pickList(c, a) = %v, %v; want [a c]", got, err)
	}
	if got, _ := pickList("-x", "all", known); len(got) != 3 {
		t.Fatalf("pickList(all) = %v", got)
	}
	if _, err := pickList("-x", "a,z", known); err == nil {
		t.Fatal("an unknown name was accepted")
	}
}

func TestBenchTime(t *testing.T) {
	out := "goos: linux\nBenchmarkCrossDatabaseCopy-2   \t       1\t16305948890 ns/op\t         5.244 cpu-µs/row\nPASS\n"
	got, err := benchTime(out)
	if err != nil || got != 16305948890*time.Nanosecond {
		t.Fatalf("benchTime = %v, %v", got, err)
	}
	if _, err := benchTime("PASS\n"); err == nil {
		t.Fatal("no result line, no error")
	}
}

func TestFocusSeconds(t *testing.T) {
	if got := focusSeconds("Showing nodes accounting for 12290.5ms, 26.95% of 45598.67ms total"); got != 12.2905 {
		t.Fatalf("focusSeconds = %v", got)
	}
	if got := focusSeconds("Showing top 0 nodes out of 0"); got != 0 {
		t.Fatalf("focusSeconds of an empty focus = %v", got)
	}
}

func TestFocusShare(t *testing.T) {
	top := "Active filters:\n   focus=readRows\nShowing nodes accounting for 390ms, 38.61% of 1010ms total\n      flat  flat%"
	if got := focusShare(top); got != "38.61%" {
		t.Fatalf("focusShare = %q", got)
	}
	if got := focusShare("Showing top 0 nodes"); got != "0%" {
		t.Fatalf("focusShare of an empty focus = %q", got)
	}
}

func TestParsePgbenchLine(t *testing.T) {
	lat, at, ok := parsePgbenchLine("3 17 1523 0 1764670000 250000 12")
	if !ok || lat != 1523*time.Microsecond || !at.Equal(time.Unix(1764670000, 250_000_000)) {
		t.Fatalf("got %v %v %v", lat, at, ok)
	}
	if _, _, ok := parsePgbenchLine("3 18 skipped 0 1764670000 250000 12"); ok {
		t.Fatal("a skipped transaction was read as one that ran")
	}
	if _, _, ok := parsePgbenchLine(""); ok {
		t.Fatal("an empty line was read")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 95: 95 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond} {
		if got := percentile(ds, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if percentile(nil, 95) != 0 {
		t.Error("the percentile of no latency is not 0")
	}
}

// The one busy backend is a reference row: the default runs have it, and
// it shows no backfill's rows/s, as the workload alone does not.
func TestImpactOneBackend(t *testing.T) {
	c, err := parseFlags([]string{"-backfill", os.Args[0]}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.impactRuns, impactOneBackend) || oneBackendText(c.impactRuns) == "" {
		t.Errorf("the default impact runs %q lack %s or its text", c.impactRuns, impactOneBackend)
	}
	for flags, copies := range map[string]bool{impactNone: false, impactOneBackend: false, "--rate 0": true, "--rate auto --max-probe-latency 5ms": true} {
		if copiesRows(flags) != copies {
			t.Errorf("copiesRows(%q) = %v, want %v", flags, !copies, copies)
		}
		if got := rowsCell(flags, 1234); (got == "—") == copies {
			t.Errorf("rowsCell(%q) = %q", flags, got)
		}
	}
	if oneBackendText([]string{impactNone, "--rate 0"}) != "" {
		t.Error("runs without the one busy backend get its text")
	}
}
