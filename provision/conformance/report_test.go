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

// The report of `e2e.test --ginkgo.dry-run` with kindlab's selection for
// all-features (no AppArmor): the nine selected tests, every other test
// counted as not selected, nothing from the suite nodes.
func TestParseReportDryRun(t *testing.T) {
	rep, err := ParseReport(readTestdata(t, "dry-run-report.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 9 || rep.NotSelected != 6598 || len(rep.SuiteFailures) != 0 || rep.Failed() != 0 {
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
		if r.State != "passed" || r.Message != "" {
			t.Errorf("%s: %s %q", r.Name, r.State, r.Message)
		}
	}
	for n := range want {
		t.Errorf("missing %q", n)
	}
	var b bytes.Buffer
	if err := PrintTable(&b, rep); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(b.String()), "\n"); len(lines) != 10 || !strings.HasPrefix(lines[0], "RESULT") {
		t.Errorf("table:\n%s", b.String())
	}
	rep.Elapsed = 61 * time.Second
	if got := Summary(rep); got != "9 passed, 0 failed, 0 skipped of 9 tests run (6598 not selected) in 1m1s" {
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
