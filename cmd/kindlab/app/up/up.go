// Package up is `kindlab up`: create (or converge) a lab's cluster.
package up

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	kindcmd "sigs.k8s.io/kind/pkg/cmd"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	renderapp "github.com/kindlab/kindlab/cmd/kindlab/app/render"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/fleet"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/progress"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
	"github.com/kindlab/kindlab/provision/up"
)

type flags struct {
	renderapp.Flags
	retain        bool
	wait          time.Duration
	kubeconfig    string
	skipChecks    bool
	count         int
	kubeconfigDir string
	waitLock      time.Duration
	out           cli.Output
}

// NewCommand returns the up command.
func NewCommand(s *cli.Streams) *cobra.Command {
	f := &flags{}
	cmd := &cobra.Command{
		Use:   "up LAB|FILE",
		Short: "Create a lab's cluster, registry, artifacts and workloads, then run its checks",
		Long: "Create the kind cluster a lab describes (or reuse it if it already runs that lab), start or\n" +
			"reuse the shared local registry, push the lab's artifacts, apply its workloads and run its\n" +
			"checks. Running it again converges: nothing is duplicated, and the cluster keeps the node image,\n" +
			"image overrides and registry port it came up with (--image-override given again replaces the\n" +
			"overrides; an --image other than the nodes' is refused: they cannot change image short of down).\n" +
			"A failed up removes what it created unless --retain is given. The kubeconfig context\n" +
			"kind-<name> is merged into $KUBECONFIG (or ~/.kube/config), as kind does; the file is recorded,\n" +
			"and `kindlab down` removes the context from it whatever $KUBECONFIG says then.\n\n" +
			"--count N makes a fleet: N clusters of the lab, <name>-1 … <name>-N, each with its own API\n" +
			"server port, created in parallel as far as the host takes (one per CPU), sharing one registry.\n" +
			"A count the host cannot run (inotify instances, memory) is refused before anything is created.\n" +
			"With --kubeconfig-dir DIR each cluster gets its own DIR/<cluster>.kubeconfig to hand out;\n" +
			"otherwise the contexts are merged into the default kubeconfig. A cluster that fails is removed\n" +
			"(unless --retain) and named in the error; the others stay up and the exit code is 1.\n" +
			"Take a fleet down with `kindlab down --fleet <name>`.\n\n" +
			"While an up, down, reset or bundle replay of a cluster runs, another of the same cluster fails at\n" +
			"once (exit 1) naming the process, touching nothing; --wait-lock 10m waits for it instead.",
		Example: "  kindlab up all-features\n  kindlab up nftables --name sandbox-1\n  kindlab up ./my-lab.yaml --retain\n" +
			"  kindlab up nftables --count 12 --kubeconfig-dir ./attendees   # nftables-1 … nftables-12",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("count") {
				return f.runFleet(cmd, s, args[0])
			}
			if f.kubeconfigDir != "" {
				return cli.Usagef("--kubeconfig-dir: only with --count (for one cluster, use --kubeconfig FILE)")
			}
			ctx := cmd.Context()
			r, ro, store, err := f.Resolve(ctx, args[0])
			if err != nil {
				return err
			}
			// Bad input is refused before an engine is looked for.
			plan, err := render.Render(r, ro)
			if err != nil {
				return cli.WithCode(cli.ExitUsage, err)
			}
			p, err := cli.Provider(ctx, kindcmd.NewLogger())
			if err != nil {
				return cli.WithCode(cli.ExitNoDocker, err)
			}
			if conv, ok, err := f.converge(cmd, s, p, store, r, ro); err != nil {
				return err
			} else if ok {
				if plan, err = render.Render(r, conv); err != nil {
					return cli.WithCode(cli.ExitUsage, err)
				}
			}
			res, err := up.Run(ctx, p, up.Options{
				Plan:       plan,
				Store:      store,
				Retain:     f.retain,
				Wait:       f.wait,
				Kubeconfig: f.kubeconfig,
				SkipChecks: f.skipChecks,
				Status:     s.ErrOut,
				WaitLock:   f.waitLock,
			})
			if err != nil {
				return err
			}
			if f.out.JSON() {
				if err := cli.PrintJSON(s.Out, res); err != nil {
					return err
				}
			} else {
				if len(res.Checks) > 0 {
					if err := check.PrintTable(s.Out, res.Checks); err != nil {
						return err
					}
				}
				// The verbs a user reaches for next, naming this cluster as
				// they would have to (fresh-user review, session 13).
				target := plan.Lab
				if plan.ClusterName != plan.Lab {
					target = "--name " + plan.ClusterName
				}
				fmt.Fprintf(s.ErrOut, "Lab %s is up. Use it with:\n  kubectl cluster-info --context %s\n"+
					"  kindlab instructions %s   # the lab's steps, written for this cluster\n"+
					"  kindlab check %s; kindlab reset %s; kindlab down %s\n", plan.Lab, res.Context, target, target, target, target)
			}
			if check.AnyFailed(res.Checks) {
				return cli.WithCode(cli.ExitCheckFailed, errors.New("some feature checks failed (see the table)"))
			}
			return nil
		},
	}
	f.AddFlags(cmd)
	cmd.Flags().BoolVar(&f.retain, "retain", false, "keep the nodes of a failed up for debugging")
	cmd.Flags().DurationVar(&f.wait, "wait", 5*time.Minute, "how long to wait for every node to be Ready (0: do not wait)")
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file to write the context to (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().BoolVar(&f.skipChecks, "skip-checks", false, "apply workloads but do not run the checks")
	cmd.Flags().IntVar(&f.count, "count", 0, "bring up N clusters of the lab, <name>-1 … <name>-N (a fleet, one per attendee)")
	cmd.Flags().StringVar(&f.kubeconfigDir, "kubeconfig-dir", "", "with --count: write one kubeconfig file per cluster, DIR/<cluster>.kubeconfig")
	cli.AddWaitLockFlag(cmd, &f.waitLock)
	f.out.AddFlag(cmd, "table", "json")
	return cmd
}

// converge is how an up of a cluster that runs already renders its lab,
// as a declarative apply would: with what the cluster's record says it came
// up with (running.Recorded, as check and reset render it), except image
// overrides given now (flag or $KINDLAB_IMAGE_OVERRIDES), which replace the
// recorded ones, and a --registry-port given now. A node image given now
// (--image or $KINDLAB_NODE_IMAGE) other than the nodes' is a usage error:
// a node's image cannot change short of down and up. ok is false when there
// is nothing to converge (no such cluster, or no record of it, or a record
// of another lab, which up.Run refuses).
func (f *flags) converge(cmd *cobra.Command, s *cli.Streams, p *cluster.Provider, store state.Store, r *lab.Resolved, ro render.Options) (_ render.Options, ok bool, _ error) {
	rec, err := store.Load(ro.Name)
	switch {
	case errors.Is(err, state.ErrNotFound):
		return ro, false, nil
	case err != nil:
		return ro, false, err
	case rec.Lab != r.Name || rec.OnProvider(p.Engine().Provider()) != nil:
		return ro, false, nil
	}
	exists, err := p.Exists(ro.Name)
	if err != nil || !exists {
		return ro, false, err
	}
	conv := ro
	running.Recorded(&conv, rec, r)
	if f.Image != "" && f.Image != rec.NodeImage {
		return ro, false, cli.Usagef("--image: cluster %s runs node image %s, not %s, and its nodes cannot change image: "+
			"leave --image (and $KINDLAB_NODE_IMAGE) out, or `kindlab down --name %s` first", ro.Name, rec.NodeImage, f.Image, ro.Name)
	}
	if len(ro.ImageOverrides) > 0 {
		conv.ImageOverrides = ro.ImageOverrides
	} else if len(rec.ImageOverrides) > 0 {
		(&progress.Status{W: s.ErrOut}).Done("Keeping the image overrides cluster %s came up with (--image-override replaces them): %s",
			ro.Name, render.OverridePairs(rec.ImageOverrides))
	}
	if cmd.Flags().Changed("registry-port") || conv.RegistryPort == 0 {
		conv.RegistryPort = ro.RegistryPort
	}
	return conv, true, nil
}

// runFleet is `up --count N`.
func (f *flags) runFleet(cmd *cobra.Command, s *cli.Streams, arg string) error {
	if f.count < 1 {
		return cli.Usagef("--count: %d is not a number of clusters (valid: 1 or more)", f.count)
	}
	if f.kubeconfig != "" {
		return cli.Usagef("--kubeconfig: not with --count, where each cluster has its own context (use --kubeconfig-dir DIR for one file per cluster)")
	}
	_, labName, err := f.Labs.LabArg(arg)
	if err != nil {
		return err
	}
	name := f.Name
	if name == "" {
		name = labName
	}
	// The first render reports a bad lab or flag as a single up would.
	r, ro, store, err := f.Resolve(cmd.Context(), arg)
	if err != nil {
		return err
	}
	if _, err := render.Render(r, ro); err != nil {
		return cli.WithCode(cli.ExitUsage, err)
	}
	p, err := cli.Provider(cmd.Context(), nil)
	if err != nil {
		return cli.WithCode(cli.ExitNoDocker, err)
	}
	res, err := fleet.Up(cmd.Context(), p, fleet.Options{
		Name:          name,
		Count:         f.count,
		Lab:           r,
		Render:        ro,
		Store:         store,
		KubeconfigDir: f.kubeconfigDir,
		Retain:        f.retain,
		Wait:          f.wait,
		SkipChecks:    f.skipChecks,
		Status:        s.ErrOut,
		WaitLock:      f.waitLock,
	})
	var ie *fleet.InputError
	if errors.As(err, &ie) {
		return cli.WithCode(cli.ExitUsage, err)
	}
	if errors.Is(err, cluster.ErrNoEngine) {
		return cli.WithCode(cli.ExitNoDocker, err)
	}
	if res == nil {
		return err
	}
	if f.out.JSON() {
		if perr := cli.PrintJSON(s.Out, res); perr != nil {
			return perr
		}
	} else if perr := printFleet(s, res); perr != nil {
		return perr
	}
	if err != nil {
		return err
	}
	if res.ChecksFailed() {
		return cli.WithCode(cli.ExitCheckFailed, errors.New("some feature checks failed (see the table)"))
	}
	return nil
}

func printFleet(s *cli.Streams, res *fleet.Result) error {
	w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CLUSTER\tRESULT\tCHECKS\tSERVER\tKUBECONFIG\tTIME")
	for _, m := range res.Clusters {
		checks := "-"
		if len(m.Checks) > 0 {
			pass := 0
			for _, c := range m.Checks {
				if c.Status != check.Fail {
					pass++
				}
			}
			checks = fmt.Sprintf("%d/%d ok", pass, len(m.Checks))
		}
		kc := m.Kubeconfig
		if kc == "" {
			kc = "(default) " + m.Context
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Cluster, m.Result, checks, orDash(m.Server), kc, m.Duration.Round(time.Second))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, m := range res.Clusters {
		if m.Error != "" {
			fmt.Fprintf(s.Out, "\n%s: %s\n", m.Cluster, m.Error)
		}
	}
	fmt.Fprintf(s.ErrOut, "Fleet %s: %d of %d cluster(s) up in %s (%d at a time). Take it down with: kindlab down --fleet %s\n",
		res.Fleet, len(res.Clusters)-res.Failed(), len(res.Clusters), res.Duration.Round(time.Second), res.Parallel, res.Fleet)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
