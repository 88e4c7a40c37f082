package conformance

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// readTestdata reads a gzipped ginkgo JSON report that e2e.test v1.31.14
// wrote (it lists all 6607 tests, the unselected as skipped: 9 MiB plain).
func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The report of a real run on all-features (kindlab conformance, the lab's
// selection without AppArmor) with the offline agnhost that has no shell:
// the nine selected tests, every other test counted as not selected; the
// PV lifecycle passed, every test that execs a shell in agnhost failed
// with upstream's message and location, and traffic distribution failed
// on the lab's two zones.
func TestParseReportOfflineAgnhostRun(t *testing.T) {
	rep, err := ParseReport(readTestdata(t, "offline-agnhost-report.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 9 || rep.NotSelected != 6598 || len(rep.SuiteFailures) != 0 || rep.Failed() != 8 {
		t.Fatalf("%d results, %d not selected, suite failures %v, %d failed", len(rep.Results), rep.NotSelected, rep.SuiteFailures, rep.Failed())
	}
	want := map[string]bool{}
	for _, names := range upstreamNames {
		for _, n := range names {
			if !strings.Contains(n, "AppArmor") {
				want[n] = true
			}
		}
	}
	for _, r := range rep.Results {
		if !want[r.Name] {
			t.Errorf("unexpected test %q", r.Name)
		}
		delete(want, r.Name)
		switch {
		case strings.Contains(r.Name, "lifecycle of a PV"):
			if r.State != "passed" || r.Message != "" || r.Location != "" || r.Seconds < 1 {
				t.Errorf("%s: %+v", r.Name, r)
			}
		case strings.Contains(r.Name, "Traffic Distribution"):
			if r.State != "failed" || !strings.HasPrefix(r.Message, "got 2 zones with schedulable nodes, want atleast 3") ||
				r.Location != "test/e2e/network/traffic_distribution.go:132" {
				t.Errorf("%s: %+v", r.Name, r)
			}
		default:
			if r.State != "failed" || !strings.Contains(r.Message, "service is not reachable within") ||
				!strings.HasPrefix(r.Location, "test/e2e/network/service") {
				t.Errorf("%s: %+v", r.Name, r)
			}
		}
	}
	for n := range want {
		t.Errorf("missing %q", n)
	}
	var b bytes.Buffer
	// The run was on a host without AppArmor: its tests were left out.
	sel := Select([]string{"apparmor", "pv-last-transition-time", "nftables", "multi-service-cidr", "traffic-distribution"}, false)
	if err := PrintTable(&b, rep, sel); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 11 || !strings.HasPrefix(lines[0], "RESULT") ||
		!strings.Contains(b.String(), "(test/e2e/network/traffic_distribution.go:132)") ||
		!strings.HasPrefix(lines[10], "not run") || !strings.Contains(lines[10], "[sig-node] AppArmor load AppArmor profiles") ||
		!strings.Contains(lines[10], "no AppArmor") {
		t.Errorf("table:\n%s", b.String())
	}
	rep.Elapsed = 818 * time.Second
	if got := Summary(rep, Selection{}); got != "1 passed, 8 failed, 0 skipped of 9 tests run (6598 not selected) in 13m38s" {
		t.Errorf("summary %q", got)
	}
	if got := Summary(rep, sel); !strings.HasSuffix(got, "in 13m38s; apparmor not run (this host's kernel has no AppArmor (/sys/module/apparmor/parameters/enabled), which kind nodes share)") {
		t.Errorf("summary %q", got)
	}
}

func TestParseReportRefusesGarbage(t *testing.T) {
	for _, b := range []string{"", "{}", "[]", "not json"} {
		if _, err := ParseReport([]byte(b)); err == nil {
			t.Errorf("%q: no error", b)
		}
	}
	if _, err := ReadReport("testdata/none.json"); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}
