package conformance

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Progress is one test having finished, as ginkgo's verbose output
// (--ginkgo.v, which e2e.test is run with) reports it.
type Progress struct {
	// State is ginkgo's: passed, failed, skipped, panicked, timedout,
	// interrupted, aborted.
	State string
	// Name is the test's full text, without ginkgo's label list.
	Name string
	// Done counts the tests finished so far; Total is how many the focus
	// selected ("Will run N of M specs"; 0 before that line).
	Done, Total int
	// Took is the test's own run time as ginkgo measured it.
	Took time.Duration
}

// Ginkgo v2.19's verbose reporter (reporters/default_reporter.go): a spec
// starts after a separator line with its text (labels appended as
// "[a, b]") and its location; it ends with "• [12.3 seconds]" when it
// passed, "• [FAILED] [12.3 seconds]" (or PANICKED, TIMEDOUT, INTERRUPTED,
// ABORTED) when not, "S [SKIPPED] [0.5 seconds]" when it skipped itself.
var (
	willRunRe  = regexp.MustCompile(`^Will run (\d+) of \d+ specs`)
	endRe      = regexp.MustCompile(`^([•S]) (?:\[([A-Z]+)\] )?\[([0-9.]+) seconds\]$`)
	locationRe = regexp.MustCompile(`^\S+\.go:\d+$`)
	separator  = "------------------------------"
)

// progressWriter is an io.Writer over e2e.test's output that calls fn once
// per finished test. Lines are parsed whole; what is not a spec's start or
// end is ignored.
type progressWriter struct {
	fn func(Progress)

	mu      sync.Mutex
	partial []byte
	prev    [2]string // the two lines before the current one
	name    string
	done    int
	total   int
}

func newProgressWriter(fn func(Progress)) *progressWriter { return &progressWriter{fn: fn} }

func (w *progressWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(strings.TrimRight(string(w.partial[:i]), "\r"))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

func (w *progressWriter) line(l string) {
	defer func() { w.prev[0], w.prev[1] = w.prev[1], l }()
	if m := willRunRe.FindStringSubmatch(l); m != nil {
		w.total, _ = strconv.Atoi(m[1])
		return
	}
	// A spec's header: separator, text, location. Suite nodes
	// ([SynchronizedBeforeSuite] …) have the same shape and are not tests.
	if locationRe.MatchString(l) && w.prev[0] == separator && w.prev[1] != "" && !strings.HasPrefix(w.prev[1], "[Report") &&
		!strings.HasPrefix(w.prev[1], "[Synchronized") && !strings.HasPrefix(w.prev[1], "[BeforeSuite") && !strings.HasPrefix(w.prev[1], "[AfterSuite") {
		w.name = stripLabels(w.prev[1])
		return
	}
	m := endRe.FindStringSubmatch(l)
	if m == nil || w.name == "" {
		return
	}
	state := "passed"
	switch {
	case m[2] != "":
		state = strings.ToLower(m[2])
	case m[1] == "S":
		state = "skipped"
	}
	secs, _ := strconv.ParseFloat(m[3], 64)
	w.done++
	w.fn(Progress{State: state, Name: w.name, Done: w.done, Total: w.total, Took: time.Duration(secs * float64(time.Second))})
	w.name = ""
}

// stripLabels drops the label list ginkgo appends to a spec's text in its
// output ("… [Conformance] [sig-network, Conformance]"): the last bracket
// group, when it lists several labels or repeats a bracket of the text.
func stripLabels(s string) string {
	i := strings.LastIndex(s, " [")
	if i < 0 || !strings.HasSuffix(s, "]") {
		return s
	}
	group, text := s[i+1:], s[:i]
	if strings.Contains(group, ", ") || strings.Contains(text, group) {
		return text
	}
	return s
}
