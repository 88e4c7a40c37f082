package app_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// e2eConformance runs `kindlab conformance all-features` on the end-to-end
// lab: upstream's e2e.test (make e2e-bin; KINDLAB_E2E_TEST names it) for
// every feature of the lab that has upstream tests, with agnhost coming
// through the lab's registry mirror. Every test that ran must pass: a test
// that skipped itself (too few nodes or zones, say) is a failure here, and
// so is a feature of the selection that ran no test. Only AppArmor may be
// left out, and only where the host has no AppArmor.
func e2eConformance(t *testing.T, cluster string) {
	bin := os.Getenv("KINDLAB_E2E_TEST")
	if bin == "" {
		if os.Getenv("KINDLAB_REQUIRE_E2E") == "1" {
			t.Fatal("KINDLAB_E2E_TEST does not name upstream's e2e.test (make e2e-bin builds it; make e2e sets it)")
		}
		t.Skip("upstream e2e tests not run: KINDLAB_E2E_TEST does not name an e2e.test (make e2e-bin builds it)")
	}
	start := time.Now()
	code, out, errOut := run(t, "conformance", "all-features", "--name", cluster, "--e2e-test", bin,
		"--report-dir", t.TempDir(), "-o", "json")
	t.Logf("conformance took %s (exit %d)\n%s", time.Since(start).Round(time.Second), code, errOut)
	assertConformance(t, code, out)
}

// assertConformance checks what `kindlab conformance all-features -o json`
// printed and its exit code (see e2eConformance).
func assertConformance(t *testing.T, code int, out string) {
	t.Helper()
	var res struct {
		Selection struct {
			Focus []struct{ Check, Regexp string }
			Left  map[string]string
		}
		Images struct{ Agnhost, From string }
		Report struct {
			Results []struct {
				Name, State, Message, Location string
				Seconds                        float64
			}
			SuiteFailures []string
		}
		Failed int
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("conformance exit %d, output %q: %v", code, out, err)
	}
	wantChecks := []string{"multi-service-cidr", "traffic-distribution", "pv-last-transition-time", "nftables"}
	if hostHasAppArmor() {
		wantChecks = append(wantChecks, "apparmor")
	} else if !strings.Contains(res.Selection.Left["apparmor"], "no AppArmor") {
		t.Errorf("apparmor left out without the host's reason: %q", res.Selection.Left["apparmor"])
	}
	var got []string
	for _, f := range res.Selection.Focus {
		got = append(got, f.Check)
	}
	// The selection follows the lab's check order (its include list),
	// which is the lab's to change: compare the sets.
	slices.Sort(got)
	slices.Sort(wantChecks)
	if strings.Join(got, ",") != strings.Join(wantChecks, ",") {
		t.Errorf("selection %v, want %v", got, wantChecks)
	}
	// The offline agnhost (make e2e overrides it) is what the tests run.
	if o := os.Getenv("KINDLAB_IMAGE_OVERRIDES"); strings.Contains(o, "agnhost=") && res.Images.From != strings.TrimPrefix(o[strings.Index(o, "agnhost="):], "agnhost=") {
		t.Errorf("tests ran agnhost %s from %s, want the lab's override (%s)", res.Images.Agnhost, res.Images.From, o)
	}
	// Each feature ran at least one test of its own.
	marks := map[string]string{
		"multi-service-cidr":      "[Feature:ServiceCIDRs]",
		"traffic-distribution":    "[Feature:Traffic Distribution]",
		"pv-last-transition-time": "lifecycle of a PV and a PVC",
		"nftables":                "[sig-network] Services ",
		"apparmor":                "[sig-node] AppArmor",
	}
	for _, c := range wantChecks {
		n := 0
		for _, r := range res.Report.Results {
			if strings.Contains(r.Name, marks[c]) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("feature %s: no upstream test ran", c)
		}
	}
	if len(res.Report.Results) < 9 {
		t.Errorf("%d upstream tests ran, want at least 9 (6 Services, ServiceCIDRs, Traffic Distribution, PV lifecycle)", len(res.Report.Results))
	}
	for _, f := range res.Report.SuiteFailures {
		t.Errorf("suite: %s", f)
	}
	for _, r := range res.Report.Results {
		t.Logf("%-8s %6.1fs %s", r.State, r.Seconds, r.Name)
		if r.State != "passed" {
			t.Errorf("%s: %s: %s (%s)", r.Name, r.State, r.Message, r.Location)
		}
	}
	switch {
	case res.Failed > 0 && code != 3:
		t.Errorf("conformance exit %d with %d failed tests, want 3", code, res.Failed)
	case res.Failed == 0 && code != 0:
		t.Errorf("conformance exit %d with no failed test", code)
	}
}
