package metrics

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// deployDir holds the alerting rules and the scrape configuration built on
// this package's series.
var deployDir = filepath.Join("..", "deploy")

// TestAlertRules has promtool check the rules and the scrape configuration
// and run the rules' unit tests. CI must check them (.ci/run installs
// promtool), so there a missing promtool fails; elsewhere it skips.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not on PATH and CI is set: .ci/run installs it from Debian's prometheus package")
		}
		t.Skip("promtool is not on PATH: deploy/alerts.yml is not checked (apt-get install prometheus, or run .ci/run)")
	}
	version, _ := exec.Command(promtool, "--version").CombinedOutput()
	t.Logf("%s", strings.SplitN(string(version), "\n", 2)[0])
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
		{"check", "config", "prometheus.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = deployDir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestAlertRulesNameOurSeries keeps the rules and their tests in step with
// the series New registers: a renamed series would leave an alert that
// never fires, and promtool cannot tell.
func TestAlertRulesNameOurSeries(t *testing.T) {
	m, err := New("orders", "")
	if err != nil {
		t.Fatal(err)
	}
	m.SetThrottled("manual", false) // its series exist once a reason has been given
	families, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]bool{}
	for _, f := range families {
		ours[f.GetName()] = true
	}
	name := regexp.MustCompile(`\bbackfill_[a-z_]+`)
	for _, file := range []string{"alerts.yml", "alerts_test.yml"} {
		text, err := os.ReadFile(filepath.Join(deployDir, file))
		if err != nil {
			t.Fatal(err)
		}
		named := name.FindAllString(string(text), -1)
		if len(named) == 0 {
			t.Errorf("%s names none of our series", file)
		}
		for _, n := range named {
			if !ours[n] {
				t.Errorf("%s names %s, which package metrics does not export", file, n)
			}
		}
	}
}
