// Package bundle is `kindlab bundle create|replay`: a reproducible bug report
// of a running lab, and recreating the lab from it on another machine.
package bundle

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/api/resource"
	kindcmd "sigs.k8s.io/kind/pkg/cmd"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/bundle"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
)

// NewCommand returns the bundle command; version is kindlab's, recorded in
// every bundle.
func NewCommand(s *cli.Streams, version string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Make a reproducible bug report of a running lab, or replay one",
		Long: "A bundle is one .tar.gz with everything needed to see and recreate a lab: the lab file and every\n" +
			"file it uses, every pin (node image, kind and kindlab versions, workload images, artifact digests),\n" +
			"the rendered kind config, host facts, the last check results, `kind export logs` and the lab's\n" +
			"objects. Secrets, service-account tokens, kubeconfig credentials and private keys are redacted.\n" +
			"`replay` recreates the lab from the bundle alone and compares the checks with the recorded ones.",
		Example: "  kindlab bundle create all-features -o repro.tar.gz   # attach this to a bug report\n" +
			"  kindlab bundle replay repro.tar.gz                    # the same lab, the same checks, compared",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newCreate(s, version), newReplay(s, version))
	return cmd
}

func versions(version string) bundle.Versions {
	return bundle.Versions{Kindlab: version, Kind: bundle.KindVersion()}
}

func newCreate(s *cli.Streams, version string) *cobra.Command {
	var (
		labs cli.LabFlags
		name string
		out  string
	)
	cmd := &cobra.Command{
		Use:   "create [LAB|FILE]",
		Short: "Write a bundle of a running lab: pins, lab files, kind config, host facts, checks, logs, objects",
		Long: "Write a bundle of a running lab, to attach to a bug report. The lab is found by its name, by\n" +
			"--name (the cluster), or both; without LAB the lab recorded for the cluster is used. Parts a\n" +
			"broken cluster cannot give (logs, objects) are listed as problems in the bundle's bundle.json\n" +
			"instead of failing. The check results are those of the last `kindlab up` or `kindlab check`.\n" +
			"Values of Secrets, tokens, kubeconfig credentials and private keys are replaced by REDACTED;\n" +
			"bundle.json lists what was replaced where.",
		Example: "  kindlab bundle create all-features -o repro.tar.gz\n  kindlab bundle create --name sandbox-1",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			store, err := state.Default()
			if err != nil {
				return err
			}
			c, labName, err := labs.LabArgs(args)
			if err != nil {
				return err
			}
			if labName != "" {
				// An unknown lab is a usage error before any cluster is looked at.
				if _, err := c.Resolve(labName, lab.ResolveOptions{KnownChecks: check.Names()}); err != nil {
					return err
				}
			}
			clusterName := name
			if clusterName == "" {
				clusterName = labName
			}
			if clusterName == "" {
				return cli.Usagef("name the lab (kindlab bundle create LAB) or its cluster (--name)")
			}
			if out != "" {
				if err := cli.CheckOutputFile("--output", out, "repro.tar.gz"); err != nil {
					return err
				}
			}
			l, err := running.Open(ctx, store, cli.ProviderFunc(ctx), running.Options{Cluster: clusterName, Lab: labName, Catalog: c})
			var wrong *running.WrongLabError
			switch {
			case errors.Is(err, running.ErrNotRecorded):
				// The argument names no lab kindlab runs: bad input, as for reset.
				return cli.Usagef("cluster %q was not brought up by kindlab (no record in %s): bundle a lab started with `kindlab up` (see `kindlab status`)", clusterName, store.Root)
			case errors.As(err, &wrong):
				return cli.Usagef("%v (see `kindlab status`)", err)
			case err != nil:
				return err
			}
			h, plan := l.Handle, l.Plan
			in := bundle.Input{
				Catalog:     c,
				Plan:        plan,
				Config:      h.RESTConfig,
				Nodes:       h,
				Engine:      l.Engine(),
				CollectLogs: bundle.KindLogs(l.Engine(), clusterName),
				Versions:    versions(version),
				Store:       store,
				Status:      s.ErrOut,
			}
			if cr, err := store.LoadChecks(clusterName); err == nil {
				in.Checks = &cr
			} else if !errors.Is(err, state.ErrNotFound) {
				return err
			}
			if out == "" {
				out = "kindlab-bundle-" + clusterName + ".tar.gz"
			}
			start := time.Now()
			m, err := bundle.Create(ctx, in, out)
			if err != nil {
				return err
			}
			for _, p := range m.Problems {
				fmt.Fprintf(s.ErrOut, "warning: %s\n", p)
			}
			size := int64(0)
			if st, err := os.Stat(out); err == nil {
				size = st.Size()
			}
			n := 0
			for _, r := range m.Redactions {
				n += r.Count
			}
			fmt.Fprintf(s.ErrOut, "Bundle of lab %s (cluster %s): %d files, %s, %d values redacted, in %s.\n",
				m.Lab.Name, m.Cluster, len(m.Files), humanSize(size), n, time.Since(start).Round(100*time.Millisecond))
			fmt.Fprintln(s.Out, out)
			return nil
		},
	}
	labs.AddFlags(cmd)
	cmd.Flags().StringVar(&name, "name", "", "cluster name (default: the lab name)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "bundle file to write (default: kindlab-bundle-<cluster>.tar.gz)")
	return cmd
}

// catalog loads the labs this invocation knows; LAB, when given, may be a
// file.
func newReplay(s *cli.Streams, version string) *cobra.Command {
	var (
		out  cli.Output
		opts bundle.ReplayOptions
		yes  bool
		lim  sizeLimits
	)
	cmd := &cobra.Command{
		Use:   "replay FILE",
		Short: "Recreate a bundle's lab from the bundle alone, re-run its checks and compare them",
		Long: "Recreate the lab a bundle was made from: the lab files come from the bundle (the lab need not\n" +
			"exist here), and the cluster runs with the recorded node image, image overrides and registry\n" +
			"port, through the same steps as `kindlab up`. Before anything is created, the bundle is verified\n" +
			"whole and every image the lab needs must be in Docker or pullable. Then the checks run and are\n" +
			"compared, by status, with the recorded ones; the pins are compared too. The cluster stays up:\n" +
			"take it down with `kindlab down --name NAME`.\n\n" +
			"A bundle is someone else's file, and replaying it runs their workloads on this machine. The\n" +
			"bundle is read inside limits (--max-file-size, --max-total-size), its lab may read nothing but the\n" +
			"bundle, and before anything is created replay lists what it will run (node and workload images,\n" +
			"artifacts, privileged containers, pods with host access, feature gates) and asks; --yes replays\n" +
			"without asking, and without a terminal to ask on, --yes is required.\n\n" +
			"Exit codes: 0 every check as recorded, 3 a check differs, 2 the bundle is unusable or not confirmed.",
		Example: "  kindlab bundle replay repro.tar.gz\n  kindlab bundle replay repro.tar.gz --name repro-1 -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if opts.Name != "" {
				if err := lab.ValidateName(opts.Name); err != nil {
					return cli.Usagef("--name %q: %v", opts.Name, err)
				}
			}
			limits, err := lim.limits()
			if err != nil {
				return cli.WithCode(cli.ExitUsage, err)
			}
			b, err := bundle.Open(args[0], bundle.WithLimits(limits))
			if err != nil {
				if errors.Is(err, bundle.ErrBadBundle) {
					return cli.WithCode(cli.ExitUsage, err)
				}
				return err
			}
			store, err := state.Default()
			if err != nil {
				return err
			}
			opts.Store = store
			if !yes {
				opts.Confirm = func(r *bundle.Review) error { return confirm(s, b.Path, r) }
			}
			opts.Versions = versions(version)
			opts.Status = s.ErrOut
			p, err := cli.Provider(ctx, kindcmd.NewLogger())
			if err != nil {
				return cli.WithCode(cli.ExitNoDocker, err)
			}
			if !out.JSON() {
				fmt.Fprintln(s.ErrOut, bundle.Printable(fmt.Sprintf("Replaying %s: lab %s, recorded on cluster %s by kindlab %s",
					b.Path, b.Manifest.Lab.Name, b.Manifest.Cluster, b.Manifest.Pins.Kindlab)))
			}
			res, err := bundle.Replay(ctx, p, b, opts)
			if err != nil {
				var le *lab.Error
				if errors.Is(err, bundle.ErrBadBundle) || errors.As(err, &le) {
					return cli.WithCode(cli.ExitUsage, err)
				}
				return err
			}
			if out.JSON() {
				if err := cli.PrintJSON(s.Out, res); err != nil {
					return err
				}
			} else if err := printReplay(s.Out, res); err != nil {
				return err
			}
			for _, p := range res.Problems {
				fmt.Fprintf(s.ErrOut, "warning: %s\n", p)
			}
			if n := res.Differences(); n > 0 {
				return cli.WithCode(cli.ExitCheckFailed, fmt.Errorf("%d of %d check results differ from the bundle's", n, len(res.Checks)))
			}
			if !out.JSON() {
				fmt.Fprintf(s.ErrOut, "Every check result matches the bundle. Cluster %s is up (context %s); take it down with `kindlab down --name %s`.\n",
					res.Cluster, res.Context, res.Cluster)
			}
			return nil
		},
	}
	out.AddFlag(cmd, "table", "json")
	cmd.Flags().StringVar(&opts.Name, "name", "", "cluster name to replay under (default: the recorded cluster's name)")
	cmd.Flags().StringVar(&opts.NodeImage, "image", "", "node image to use instead of the recorded one (the pins then differ)")
	cmd.Flags().StringVar(&opts.RegistryImage, "registry-image", os.Getenv("KINDLAB_REGISTRY_IMAGE"),
		"registry image, if the registry has to be created (default $KINDLAB_REGISTRY_IMAGE, else the recorded one)")
	cmd.Flags().StringVar(&opts.Kubeconfig, "kubeconfig", "", "kubeconfig file to write the context to (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().DurationVar(&opts.Wait, "wait", 5*time.Minute, "how long to wait for every node to be Ready (0: do not wait)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "replay without listing what the bundle runs and asking first")
	lim.addFlags(cmd)
	cli.AddWaitLockFlag(cmd, &opts.WaitLock)
	return cmd
}

// confirm shows what a bundle would run and asks on the terminal. Without
// a terminal there is nobody to ask: the user must say --yes.
func confirm(s *cli.Streams, file string, r *bundle.Review) error {
	fmt.Fprintf(s.ErrOut, "Replaying %s runs, on this machine:\n", file)
	for _, l := range r.Lines() {
		fmt.Fprintf(s.ErrOut, "  %s\n", l)
	}
	f, ok := s.In.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return cli.WithCode(cli.ExitUsage, fmt.Errorf("%s: not replayed, nothing was created: a bundle runs someone else's workloads; read the list above and pass --yes to replay it", file))
	}
	fmt.Fprint(s.ErrOut, "Replay it? [y/N] ")
	answer, _ := bufio.NewReader(f).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return cli.WithCode(cli.ExitUsage, fmt.Errorf("%s: not replayed, nothing was created", file))
}

// sizeLimits are the flags that bound reading a bundle from someone else.
type sizeLimits struct{ file, total string }

func (l *sizeLimits) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.file, "max-file-size", quantity(bundle.DefaultLimits.File),
		"largest file a bundle may hold, as a quantity (e.g. 512Mi, 2Gi)")
	cmd.Flags().StringVar(&l.total, "max-total-size", quantity(bundle.DefaultLimits.Total),
		"most a bundle may unpack to, as a quantity (e.g. 8Gi)")
}

func quantity(n int64) string { return resource.NewQuantity(n, resource.BinarySI).String() }

// limits parses the flags as Kubernetes quantities, naming the flag that
// holds something else.
func (l *sizeLimits) limits() (bundle.Limits, error) {
	var out bundle.Limits
	for _, f := range []struct {
		flag, value string
		into        *int64
	}{{"--max-file-size", l.file, &out.File}, {"--max-total-size", l.total, &out.Total}} {
		q, err := resource.ParseQuantity(f.value)
		// A size is whole bytes: "10m" is ten milli-bytes to a Quantity
		// (which Value rounds up to 1), not ten megabytes.
		n, whole := q.AsInt64()
		if err != nil || !whole || n <= 0 {
			return out, fmt.Errorf("%s %q: want a positive whole number of bytes such as 512Mi, 4Gi or 100M", f.flag, f.value)
		}
		*f.into = n
	}
	return out, nil
}

func printReplay(w io.Writer, r *bundle.ReplayResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIN\tRECORDED\tREPLAYED")
	for _, p := range r.Pins {
		rep := p.Replayed
		if p.Same {
			rep = "same"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, dash(p.Recorded), dash(rep))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	// A table of its own: the pins' long references must not widen it.
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRECORDED\tREPLAYED\t")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, dash(strings.ToUpper(string(c.Recorded))), dash(strings.ToUpper(string(c.Replayed))), mark(c.Same))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range r.Checks {
		if c.Same {
			continue
		}
		fmt.Fprintf(w, "\n%s: recorded %s, replayed %s\n", c.Name, dash(string(c.Recorded)), dash(string(c.Replayed)))
		if c.RecordedReason != "" {
			fmt.Fprintf(w, "  recorded: %s\n", c.RecordedReason)
		}
		if c.ReplayedReason != "" {
			fmt.Fprintf(w, "  replayed: %s\n", c.ReplayedReason)
		}
	}
	return nil
}

func mark(same bool) string {
	if same {
		return ""
	}
	return "DIFFERS"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
