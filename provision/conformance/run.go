package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	// Progress, when set, is called once per test as it finishes, in the
	// order they ran, from e2e.test's output as it comes.
	Progress func(Progress)
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
	cmd := exec.CommandContext(ctx, opts.Binary, Args(opts)...)
	var out io.Writer = logFile
	if opts.Progress != nil {
		out = io.MultiWriter(logFile, newProgressWriter(opts.Progress))
	}
	// One writer for both: exec copies each through one goroutine, and
	// the progress follower needs whole lines in order.
	cmd.Stdout, cmd.Stderr = out, out
	// e2e.test runs kubectl for `kubectl exec`; it reads KUBECONFIG too.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+opts.Kubeconfig)
	// Stopped (Ctrl-C), e2e.test gets an interrupt first, as ginkgo's CLI
	// sends it: ginkgo then runs the tests' clean-ups (their namespaces,
	// a ServiceCIDR) and writes its report; killed only a minute later.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = time.Minute
	runErr := cmd.Run()
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

// Args are e2e.test's flags for opts. --ginkgo.v makes ginkgo print each
// test's start and end as it runs, which Progress follows; e2e.test's own
// --progress-report-url posted nothing per test here (v1.31.14 e2e.test
// against a kind cluster: only the suite's start), so it is not used.
func Args(opts Options) []string {
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
	if opts.RepoList != "" {
		args = append(args, "--kube-test-repo-list="+opts.RepoList)
	}
	if opts.NodeOSDistro != "" {
		args = append(args, "--node-os-distro="+opts.NodeOSDistro)
	}
	return args
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
