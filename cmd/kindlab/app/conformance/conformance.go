// Package conformance is `kindlab conformance LAB`: run upstream's own
// end-to-end tests (e2e.test of Kubernetes v1.31.14) for the lab's
// features against its running cluster, as sonobuoy runs them against any
// cluster.
package conformance

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/conformance"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
)

// BinaryEnv names e2e.test when --e2e-test is not given.
const BinaryEnv = "KINDLAB_E2E_TEST"

// K8sVersion is the Kubernetes version whose e2e.test `make e2e-bin`
// builds (fixtures/e2ebin/build.sh) into $KINDLAB_CACHE/k8s/<version>/bin.
const K8sVersion = "v1.31.14"

// DefaultTimeout is ginkgo's time limit for the whole run.
const DefaultTimeout = time.Hour

// Flags are the command's flags, parsed and checked by Validate before
// anything is looked up or run.
type Flags struct {
	Name      string
	Focus     string
	Skip      string
	E2ETest   string
	Kubectl   string
	ReportDir string
	Timeout   time.Duration
}

// Validate refuses bad flags as usage errors (exit 2), each in one line
// naming the flag and what is valid: regular expressions ginkgo would
// refuse (it compiles them with Go's regexp), a time limit that is not
// positive, an --e2e-test or --kubectl that is not an executable file,
// a --report-dir that is a file.
func (f *Flags) Validate() error {
	for _, re := range []struct{ flag, v string }{{"--focus", f.Focus}, {"--skip", f.Skip}} {
		if _, err := regexp.Compile(re.v); err != nil {
			return cli.Usagef("%s %q: not a regular expression (%v); valid: a Go regexp over test names, e.g. %s",
				re.flag, re.v, err, `'\[sig-network\] Services'`)
		}
	}
	if f.Timeout <= 0 {
		return cli.Usagef("--timeout %s: want a positive duration, e.g. 30m or 1h", f.Timeout)
	}
	for _, b := range []struct{ flag, v string }{{"--e2e-test", f.E2ETest}, {"--kubectl", f.Kubectl}} {
		if b.v == "" {
			continue
		}
		if err := executable(b.v); err != nil {
			return cli.Usagef("%s %s: %v (valid: an executable file; `make e2e-bin` builds e2e.test and kubectl %s)", b.flag, b.v, err, K8sVersion)
		}
	}
	if f.ReportDir != "" {
		if st, err := os.Stat(f.ReportDir); err == nil && !st.IsDir() {
			return cli.Usagef("--report-dir %s: is a file (valid: a directory, created if missing)", f.ReportDir)
		}
	}
	return nil
}

func executable(p string) error {
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("no such file")
	case err != nil:
		return err
	case st.IsDir():
		return errors.New("is a directory")
	case st.Mode()&0o111 == 0:
		return errors.New("not executable")
	}
	return nil
}

// findBinaries resolves e2e.test and kubectl: the flags, else $KINDLAB_E2E_TEST,
// else the cache `make e2e-bin` fills, else $PATH; kubectl beside e2e.test
// first (the same Kubernetes version), else $PATH.
func findBinaries(f *Flags) (e2e, kubectl string, err error) {
	cacheBin := filepath.Join(cacheDir(), "k8s", K8sVersion, "bin")
	e2e = f.E2ETest
	if e2e == "" {
		e2e = os.Getenv(BinaryEnv)
		if e2e != "" {
			if err := executable(e2e); err != nil {
				return "", "", cli.Usagef("%s=%s: %v (valid: an executable e2e.test)", BinaryEnv, e2e, err)
			}
		}
	}
	if e2e == "" {
		if executable(filepath.Join(cacheBin, "e2e.test")) == nil {
			e2e = filepath.Join(cacheBin, "e2e.test")
		} else if p, lerr := exec.LookPath("e2e.test"); lerr == nil {
			e2e = p
		} else {
			return "", "", fmt.Errorf("no e2e.test: not in %s nor on PATH; build upstream's %s one with `make e2e-bin` (up to about 13 minutes cold), or name one with --e2e-test", cacheBin, K8sVersion)
		}
	}
	kubectl = f.Kubectl
	if kubectl == "" {
		if beside := filepath.Join(filepath.Dir(e2e), "kubectl"); executable(beside) == nil {
			kubectl = beside
		} else if p, lerr := exec.LookPath("kubectl"); lerr == nil {
			kubectl = p
		} else {
			return "", "", fmt.Errorf("no kubectl (e2e.test runs it for `kubectl exec`): not beside %s nor on PATH; `make e2e-bin` builds it, or name one with --kubectl", e2e)
		}
	}
	return e2e, kubectl, nil
}

func cacheDir() string {
	if c := os.Getenv("KINDLAB_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "kindlab")
}

// Output is what -o json prints.
type Output struct {
	Cluster   string                `json:"cluster"`
	Lab       string                `json:"lab"`
	E2ETest   string                `json:"e2eTest"`
	Focus     string                `json:"focus"`
	Skip      string                `json:"skip"`
	Selection conformance.Selection `json:"selection"`
	Images    *conformance.Images   `json:"images,omitempty"`
	ReportDir string                `json:"reportDir"`
	Seconds   float64               `json:"seconds"`
	Passed    int                   `json:"passed"`
	Failed    int                   `json:"failed"`
	Report    *conformance.Report   `json:"report"`
}

// NewCommand returns the conformance command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var (
		labs cli.LabFlags
		out  cli.Output
		f    Flags
	)
	cmd := &cobra.Command{
		Use:   "conformance LAB",
		Short: "Run upstream Kubernetes' own end-to-end tests of the lab's features against its cluster",
		Long: "Runs upstream's e2e.test (k8s.io/kubernetes " + K8sVersion + " test/e2e, built by `make e2e-bin`) against\n" +
			"the lab's running cluster, focused on the tests of the features the lab shows:\n" +
			"  multi-service-cidr      [Feature:ServiceCIDRs]\n" +
			"  traffic-distribution    [Feature:Traffic Distribution]\n" +
			"  pv-last-transition-time the PersistentVolume lifecycle conformance test\n" +
			"  nftables                the Services conformance tests that go through kube-proxy (ClusterIP,\n" +
			"                          NodePort, session affinity, multiport, one port on TCP and UDP)\n" +
			"  apparmor                [sig-node] AppArmor, only where this host's kernel has AppArmor\n" +
			"--focus replaces that selection, --skip the default skip of disruptive and flaky tests.\n\n" +
			"Test images come through the lab's registry mirror: the agnhost the lab runs (after its\n" +
			"image overrides) is tagged " + conformance.AgnhostVersion + " in the lab's registry, and a --kube-test-repo-list points\n" +
			"upstream's e2e registry at it. A line is printed as each test finishes (from ginkgo's\n" +
			"verbose output), then a table from ginkgo's JSON report. e2e.log, report.json and junit_01.xml stay in\n" +
			"--report-dir.\n\n" +
			"Exit codes: 0 every test passed (or skipped itself), 3 a test failed, 2 bad input.",
		Example: "  kindlab conformance all-features\n" +
			"  kindlab conformance multi-service-cidr -o json\n" +
			"  kindlab conformance all-features --focus '\\[sig-network\\] Services should serve a basic endpoint'",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.Validate(); err != nil {
				return err
			}
			c, labName, err := labs.LabArg(args[0])
			if err != nil {
				return err
			}
			r, err := c.Resolve(labName, lab.ResolveOptions{KnownChecks: check.Names()})
			if err != nil {
				return err
			}
			sel := conformance.Select(r.Checks, hostHasAppArmor())
			focus := f.Focus
			if focus == "" {
				focus = sel.Regexp()
				if focus == "" {
					return cli.Usagef("lab %s shows no feature with upstream e2e tests here (its checks: %s); name tests with --focus", r.Name, strings.Join(r.Checks, ", "))
				}
			}
			e2e, kubectl, err := findBinaries(&f)
			if err != nil {
				return err
			}
			name := f.Name
			if name == "" {
				name = r.Name
			}
			store, err := state.Default()
			if err != nil {
				return err
			}
			l, err := running.Open(cmd.Context(), store, cli.ProviderFunc(cmd.Context()), running.Options{
				Cluster: name, Lab: labName, Catalog: c, AllowUnrecorded: true, AllowOtherLab: true,
			})
			if err != nil {
				return err
			}
			reportDir := f.ReportDir
			if reportDir == "" {
				reportDir = filepath.Join(store.Root, "conformance", name, time.Now().UTC().Format("20060102T150405Z"))
			}
			if err := os.MkdirAll(reportDir, 0o755); err != nil {
				return fmt.Errorf("--report-dir: %w", err)
			}

			opts := conformance.Options{
				Binary: e2e, Kubectl: kubectl, Focus: focus, Skip: f.Skip, ReportDir: reportDir,
				Timeout: f.Timeout, NodeOSDistro: sel.NodeOSDistro,
			}
			var images *conformance.Images
			for _, img := range l.Resolved().Images {
				if img.Name != conformance.AgnhostName {
					continue
				}
				images, err = conformance.PrepareAgnhost(cmd.Context(), img.Reference, l.RegistryPort())
				if err != nil {
					return err
				}
				if images.RepoList != nil {
					b, err := conformance.RepoListYAML(images.RepoList)
					if err != nil {
						return err
					}
					opts.RepoList = filepath.Join(reportDir, "repo-list.yaml")
					if err := os.WriteFile(opts.RepoList, b, 0o644); err != nil {
						return fmt.Errorf("repo list: %w", err)
					}
				}
			}
			// The kubeconfig carries the cluster's admin key: a private
			// temporary file, gone when the run ends.
			kc, err := l.Handle.KubeConfig()
			if err != nil {
				return err
			}
			kf, err := os.CreateTemp("", "kindlab-conformance-kubeconfig-*")
			if err != nil {
				return fmt.Errorf("kubeconfig for e2e.test: %w", err)
			}
			defer os.Remove(kf.Name())
			if _, err := kf.WriteString(kc); err != nil {
				kf.Close()
				return fmt.Errorf("kubeconfig for e2e.test: %w", err)
			}
			if err := kf.Close(); err != nil {
				return fmt.Errorf("kubeconfig for e2e.test: %w", err)
			}
			opts.Kubeconfig = kf.Name()

			fmt.Fprintf(s.ErrOut, "Running upstream e2e tests of lab %s on cluster %s (%s)\n", r.Name, name, e2e)
			for _, fo := range sel.Focus {
				if f.Focus == "" {
					fmt.Fprintf(s.ErrOut, "  %-24s %s\n", fo.Check, fo.Regexp)
				}
			}
			for ch, why := range sel.Left {
				fmt.Fprintf(s.ErrOut, "  %-24s not run: %s\n", ch, why)
			}
			if f.Focus != "" {
				fmt.Fprintf(s.ErrOut, "  focus %s\n", f.Focus)
			}
			if images != nil {
				fmt.Fprintf(s.ErrOut, "  agnhost: %s (the lab's %s)\n", images.Agnhost, images.From)
			}
			fmt.Fprintf(s.ErrOut, "  report: %s\n", reportDir)
			opts.Progress = func(p conformance.Progress) {
				fmt.Fprintf(s.ErrOut, "%-7s %d/%d %6.1fs %s\n", p.State, p.Done, p.Total, p.Took.Seconds(), p.Name)
			}
			rep, err := conformance.Run(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if len(rep.Results) == 0 && len(rep.SuiteFailures) == 0 {
				if f.Focus != "" {
					return cli.Usagef("--focus %q: matches no test of %s (with --skip %q); list its tests with `%s --ginkgo.dry-run --ginkgo.v --ginkgo.focus=REGEXP`", f.Focus, e2e, f.Skip, e2e)
				}
				return fmt.Errorf("the focus %q matched no test of %s: is it upstream's %s?", focus, e2e, K8sVersion)
			}
			failed := rep.Failed()
			if out.JSON() {
				o := Output{
					Cluster: name, Lab: r.Name, E2ETest: e2e, Focus: focus, Skip: f.Skip, Selection: sel,
					Images: images, ReportDir: reportDir, Seconds: rep.Elapsed.Seconds(),
					Passed: countState(rep, "passed"), Failed: failed, Report: rep,
				}
				if err := cli.PrintJSON(s.Out, o); err != nil {
					return err
				}
			} else {
				if err := conformance.PrintTable(s.Out, rep, sel); err != nil {
					return err
				}
				fmt.Fprintln(s.ErrOut, conformance.Summary(rep, sel))
			}
			if failed > 0 {
				return cli.WithCode(cli.ExitCheckFailed, fmt.Errorf("%d of %d upstream tests failed (logs: %s)", failed, len(rep.Results), filepath.Join(reportDir, conformance.LogFile)))
			}
			return nil
		},
	}
	labs.AddFlags(cmd)
	out.AddFlag(cmd, "table", "json")
	fl := cmd.Flags()
	fl.StringVar(&f.Name, "name", "", "cluster name (default: the lab's name)")
	fl.StringVar(&f.Focus, "focus", "", "run the tests whose names match this regular expression instead of the lab's selection")
	fl.StringVar(&f.Skip, "skip", conformance.DefaultSkip, "leave out the tests whose names match this regular expression")
	fl.StringVar(&f.E2ETest, "e2e-test", "", "upstream's e2e.test (default: $"+BinaryEnv+", else what make e2e-bin built in $KINDLAB_CACHE, else PATH)")
	fl.StringVar(&f.Kubectl, "kubectl", "", "kubectl for the kubectl exec e2e.test runs (default: beside e2e.test, else PATH)")
	fl.StringVar(&f.ReportDir, "report-dir", "", "where e2e.log, report.json and junit_01.xml go (default: $KINDLAB_STATE_DIR/conformance/CLUSTER/TIME)")
	fl.DurationVar(&f.Timeout, "timeout", DefaultTimeout, "time limit of the whole run")
	return cmd
}

func countState(rep *conformance.Report, state string) int {
	n := 0
	for _, r := range rep.Results {
		if r.State == state {
			n++
		}
	}
	return n
}

// hostHasAppArmor says whether this machine's kernel enforces AppArmor
// (kind nodes share the kernel of the engine's host; for a remote engine
// this is this machine's, as for `kindlab doctor`).
func hostHasAppArmor() bool {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && strings.TrimSpace(string(b)) == "Y"
}
