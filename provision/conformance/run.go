package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Options say how to run e2e.test against a cluster.
type Options struct {
	// Binary is upstream's e2e.test (fixtures/e2ebin/build.sh).
	Binary string
	// Kubectl is the kubectl e2e.test runs for `kubectl exec` into test
	// pods (its --kubectl-path).
	Kubectl string
	// Kubeconfig is a kubeconfig file whose current context is the lab's.
	Kubeconfig string
	// Focus and Skip are ginkgo regular expressions over the tests' full
	// texts.
	Focus, Skip string
	// RepoList is a --kube-test-repo-list file remapping the registries of
	// upstream's test images ("" for upstream's own).
	RepoList string
	// NodeOSDistro is --node-os-distro ("" leaves upstream's default).
	NodeOSDistro string
	// ReportDir receives e2e.log (everything e2e.test printed),
	// report.json (ginkgo's JSON report) and junit_01.xml.
	ReportDir string
	// Timeout is ginkgo's suite timeout (--ginkgo.timeout).
	Timeout time.Duration
	// Progress, when set, is called once per test as it finishes (passed or
	// failed; skips are not reported by e2e.test), in the order e2e.test
	// reports them.
	Progress func(Progress)
}

// Progress is one test having finished, as e2e.test's progress reporter
// (test/e2e/reporters/progress.go, the endpoint sonobuoy listens on) posts
// it to --progress-report-url.
type Progress struct {
	// State is "passed" or "failed".
	State string
	// Name is the test's full text.
	Name string
	// Completed and Failed count the tests done so far; Total is how many
	// the focus selected.
	Completed, Failed, Total int
	// Elapsed is the time since e2e.test started.
	Elapsed time.Duration
}

// progressMessage is e2e.test's ProgressReporter as it serialises it.
type progressMessage struct {
	Msg       string `json:"msg"`
	Total     int    `json:"total"`
	Completed int    `json:"completed"`
	Skipped   int    `json:"skipped"`
	Failed    int    `json:"failed"`
}

// ReportFile is the name of ginkgo's JSON report in Options.ReportDir.
const ReportFile = "report.json"

// LogFile is the name of e2e.test's output in Options.ReportDir.
const LogFile = "e2e.log"

// ErrNoReport says e2e.test ended without writing its JSON report (it
// crashed, was killed, or refused its flags): see LogFile.
var ErrNoReport = errors.New("e2e.test wrote no report")

// Run runs e2e.test with opts and returns its results from ginkgo's JSON
// report. A test failing is not an error (see Report.Failed); an error is
// e2e.test not starting, or ending without a report (wrapping ErrNoReport,
// with the last lines of its log). ctx's cancellation kills e2e.test.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := os.MkdirAll(opts.ReportDir, 0o755); err != nil {
		return nil, fmt.Errorf("report directory: %w", err)
	}
	logPath := filepath.Join(opts.ReportDir, LogFile)
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("e2e.test log: %w", err)
	}
	defer logFile.Close()
	reportPath := filepath.Join(opts.ReportDir, ReportFile)
	_ = os.Remove(reportPath)

	start := time.Now()
	url, stop, err := serveProgress(start, opts.Progress)
	if err != nil {
		return nil, err
	}
	defer stop()

	cmd := exec.CommandContext(ctx, opts.Binary, Args(opts, url)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// e2e.test runs kubectl for `kubectl exec`; it reads KUBECONFIG too.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+opts.Kubeconfig)
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	stop()
	rep, err := ReadReport(reportPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = ErrNoReport
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("e2e.test stopped: %w", ctx.Err())
		}
		return nil, fmt.Errorf("%w (%v); the end of %s:\n%s", err, runErr, logPath, tail(logPath, 15))
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// Args are e2e.test's flags for opts, with progress posted to
// progressURL ("" for none).
func Args(opts Options, progressURL string) []string {
	args := []string{
		"--kubeconfig=" + opts.Kubeconfig,
		"--kubectl-path=" + opts.Kubectl,
		// kind's own CI runs upstream's e2e on kind clusters this way
		// (sigs.k8s.io/kind hack/ci/e2e-k8s.sh).
		"--provider=skeleton",
		"--report-dir=" + opts.ReportDir,
		"--ginkgo.focus=" + opts.Focus,
		"--ginkgo.skip=" + opts.Skip,
		"--ginkgo.json-report=" + filepath.Join(opts.ReportDir, ReportFile),
		"--ginkgo.no-color",
		"--ginkgo.v",
	}
	if opts.Timeout > 0 {
		args = append(args, "--ginkgo.timeout="+opts.Timeout.String())
	}
	if progressURL != "" {
		args = append(args, "--progress-report-url="+progressURL)
	}
	if opts.RepoList != "" {
		args = append(args, "--kube-test-repo-list="+opts.RepoList)
	}
	if opts.NodeOSDistro != "" {
		args = append(args, "--node-os-distro="+opts.NodeOSDistro)
	}
	return args
}

// serveProgress listens on a loopback port for e2e.test's progress posts
// and calls progress for each finished test. stop is idempotent.
func serveProgress(start time.Time, progress func(Progress)) (url string, stop func(), err error) {
	if progress == nil {
		return "", func() {}, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("progress listener: %w", err)
	}
	var mu sync.Mutex
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var m progressMessage
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if p, ok := parseProgress(m, time.Since(start)); ok {
				// e2e.test posts from a goroutine per test: one at a time.
				mu.Lock()
				progress(p)
				mu.Unlock()
			}
		}),
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	var once sync.Once
	return "http://" + ln.Addr().String() + "/progress", func() {
		once.Do(func() {
			// e2e.test posts asynchronously: let the last post land.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		})
	}, nil
}

// parseProgress turns a ProgressReporter message into a finished test;
// the suite's start and end messages are not one.
func parseProgress(m progressMessage, elapsed time.Duration) (Progress, bool) {
	p := Progress{Completed: m.Completed, Failed: m.Failed, Total: m.Total, Elapsed: elapsed}
	switch {
	case strings.HasPrefix(m.Msg, "PASSED "):
		p.State, p.Name = "passed", strings.TrimPrefix(m.Msg, "PASSED ")
	case strings.HasPrefix(m.Msg, "FAILED "):
		p.State, p.Name = "failed", strings.TrimPrefix(m.Msg, "FAILED ")
	default:
		return p, false
	}
	return p, true
}

// tail is the last n lines of a file, for an error message.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
