package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/onsi/ginkgo/v2/types"
)

// Result is one upstream test that ran (or was skipped while running).
type Result struct {
	// Name is the test's full text: container texts, leaf text and labels,
	// e.g. "[sig-network] Services should serve a basic endpoint from pods [Conformance]".
	Name string `json:"name"`
	// State is ginkgo's: passed, failed, skipped (the test skipped itself,
	// e.g. too few nodes), panicked, timedout, interrupted, aborted.
	State string `json:"state"`
	// Seconds is how long it ran.
	Seconds float64 `json:"seconds"`
	// Message is the failure or skip message ("" when passed), and
	// Location the file:line of upstream's code that gave it.
	Message  string `json:"message,omitempty"`
	Location string `json:"location,omitempty"`
}

// Report is a run's results, in the order the tests ran.
type Report struct {
	Results []Result `json:"results"`
	// NotSelected counts the tests of e2e.test the focus left out.
	NotSelected int `json:"notSelected"`
	// SuiteFailures are failures outside any test (the suite's set-up, for
	// instance cluster nodes not ready), with their location.
	SuiteFailures []string `json:"suiteFailures,omitempty"`
	// Elapsed is the wall time of the run.
	Elapsed time.Duration `json:"-"`
}

// Failed counts the tests that did not pass or skip, plus suite failures.
func (r *Report) Failed() int {
	n := len(r.SuiteFailures)
	for _, t := range r.Results {
		if t.State != types.SpecStatePassed.String() && t.State != types.SpecStateSkipped.String() {
			n++
		}
	}
	return n
}

// ReadReport reads the JSON report ginkgo v2 writes for
// --ginkgo.json-report (a list of suite reports; e2e.test writes one).
// Tests the focus filtered out are counted in NotSelected, not listed.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseReport(b)
}

// ParseReport parses a ginkgo v2 JSON report (see ReadReport).
func ParseReport(b []byte) (*Report, error) {
	var suites []types.Report
	if err := json.Unmarshal(b, &suites); err != nil {
		return nil, fmt.Errorf("ginkgo JSON report: %w", err)
	}
	if len(suites) == 0 {
		return nil, fmt.Errorf("ginkgo JSON report: no suite in it")
	}
	rep := &Report{Results: []Result{}}
	for _, s := range suites {
		for _, sr := range s.SpecReports {
			switch sr.LeafNodeType {
			case types.NodeTypeIt:
			case types.NodeTypeSynchronizedBeforeSuite, types.NodeTypeBeforeSuite,
				types.NodeTypeSynchronizedAfterSuite, types.NodeTypeAfterSuite,
				types.NodeTypeReportBeforeSuite, types.NodeTypeReportAfterSuite, types.NodeTypeCleanupAfterSuite:
				if sr.State.Is(types.SpecStateFailureStates) {
					rep.SuiteFailures = append(rep.SuiteFailures, fmt.Sprintf("%s: %s (%s)",
						sr.LeafNodeType, firstLine(sr.Failure.Message), sr.Failure.Location))
				}
				continue
			default:
				continue
			}
			// A test the focus (or --skip) left out is reported skipped
			// and never attempted; one that skipped itself (Skipf) ran once.
			if sr.State == types.SpecStateSkipped && sr.NumAttempts == 0 || sr.State == types.SpecStatePending {
				rep.NotSelected++
				continue
			}
			res := Result{Name: sr.FullText(), State: sr.State.String(), Seconds: sr.RunTime.Seconds()}
			if sr.State != types.SpecStatePassed {
				res.Message = firstLine(sr.Failure.Message)
				if sr.Failure.Location.FileName != "" {
					res.Location = fmt.Sprintf("%s:%d", trimModulePath(sr.Failure.Location.FileName), sr.Failure.Location.LineNumber)
				}
			}
			rep.Results = append(rep.Results, res)
		}
	}
	return rep, nil
}

// trimModulePath makes a -trimpath file name of k8s.io/kubernetes read as
// a path in its repository: k8s.io/kubernetes@v1.31.14/test/e2e/x.go ->
// test/e2e/x.go.
func trimModulePath(f string) string {
	if i := strings.Index(f, "k8s.io/kubernetes@"); i >= 0 {
		rest := f[i+len("k8s.io/kubernetes@"):]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			return rest[j+1:]
		}
	}
	return f
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	const max = 240
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// PrintTable writes one row per test: state, seconds, name, and why when
// it did not pass; then a "not run" row per feature of the selection left
// out (AppArmor on a host without it), with the reason, so that a feature
// whose tests never ran is never read as passing.
func PrintTable(w io.Writer, rep *Report, sel Selection) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RESULT\tTIME\tTEST\tWHY")
	for _, r := range rep.Results {
		why := r.Message
		if r.Location != "" {
			why += " (" + r.Location + ")"
		}
		fmt.Fprintf(tw, "%s\t%.1fs\t%s\t%s\n", r.State, r.Seconds, r.Name, why)
	}
	for _, f := range rep.SuiteFailures {
		fmt.Fprintf(tw, "failed\t\t(suite set-up)\t%s\n", f)
	}
	for _, l := range sel.LeftOut() {
		fmt.Fprintf(tw, "not run\t\t%s\t%s\n", l.Tests, l.Why)
	}
	return tw.Flush()
}

// Summary is one line: how many passed, failed, skipped, and the time,
// then each feature of the selection left out and why.
func Summary(rep *Report, sel Selection) string {
	var passed, skipped int
	for _, r := range rep.Results {
		switch r.State {
		case types.SpecStatePassed.String():
			passed++
		case types.SpecStateSkipped.String():
			skipped++
		}
	}
	line := fmt.Sprintf("%d passed, %d failed, %d skipped of %d tests run (%d not selected) in %s",
		passed, rep.Failed(), skipped, len(rep.Results), rep.NotSelected, rep.Elapsed.Round(time.Second))
	for _, l := range sel.LeftOut() {
		line += fmt.Sprintf("; %s not run (%s)", l.Check, l.Why)
	}
	return line
}
