// Package reset is `kindlab reset LAB`: put a running lab back to how `up`
// left it without recreating the cluster.
package reset

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/reset"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
	"github.com/kindlab/kindlab/provision/workload"
)

// NewCommand returns the reset command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var (
		labs       cli.LabFlags
		out        cli.Output
		name       string
		regImage   string
		full       bool
		skipChecks bool
		timeout    time.Duration
		waitLock   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "reset [LAB|FILE]",
		Short: "Put a running lab's workloads, artifacts and checks back to how up left them, in seconds",
		Long: "An attendee broke the lab: reset puts it back to its start without recreating the cluster.\n\n" +
			"Objects of the lab that were deleted are created again; objects someone changed (kubectl edit,\n" +
			"scale, patch, label …) and pods that restarted or are not ready are deleted and created again;\n" +
			"anything else in the lab's namespaces (a stray pod, an added Service) is deleted. Pods go with\n" +
			"grace period 0 where that is safe. The lab's artifacts are pushed again (a tag overwritten in the\n" +
			"registry is put back), the workloads applied and waited for, and the checks run as `kindlab check`\n" +
			"does. Nodes, control plane, registry and cluster-wide objects an attendee made are left alone;\n" +
			"--full recreates every object of the lab's namespaces, changed or not.\n\n" +
			"Only a cluster kindlab brought up with this lab is reset. Without LAB, --name names the cluster\n" +
			"and the lab is the one it came up with.\n\n" +
			"Exit codes: 0 reset and every check passed, 1 the reset failed or the cluster is busy (another up, down or\n" +
			"reset of it runs), 2 bad input (not a cluster of this lab, an unknown lab or flag), 3 a check failed, 4 no\n" +
			"container engine reachable.",
		Example: "  kindlab reset all-features\n  kindlab reset nftables --name ws-3 -o json\n  kindlab reset all-features --full --skip-checks\n  kindlab reset --name ws-3",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, labName, err := labs.LabArgs(args)
			if err != nil {
				return err
			}
			if labName == "" && name == "" {
				return cli.Usagef("name the lab (kindlab reset LAB) or its cluster (--name)")
			}
			if labName != "" {
				// An unknown lab is bad input before any cluster is looked at.
				r, err := c.Resolve(labName, lab.ResolveOptions{KnownChecks: check.Names()})
				if err != nil {
					return err
				}
				if name == "" {
					name = r.Name
				}
			}
			if err := lab.ValidateName(name); err != nil {
				return cli.Usagef("--name: %v", err)
			}
			store, err := state.Default()
			if err != nil {
				return err
			}
			// A cluster kindlab has no record of is refused before its lock
			// is taken: the lock file would outlive a cluster that never was.
			if _, err := store.Load(name); errors.Is(err, state.ErrNotFound) {
				return notRecorded(name)
			}
			// Held throughout: an up or down of the cluster meanwhile would
			// pull the objects from under the reset (or the reverse).
			lock, err := store.Lock(cmd.Context(), name, state.LockOptions{Wait: waitLock, Status: s.ErrOut})
			if err != nil {
				return err
			}
			defer lock.Unlock()
			// Progress lines also go to the cluster's progress file, for
			// `kindlab console`; the results table is not progress.
			errOut := lock.Tee(s.ErrOut)
			// Reset to what the lab came up with: its images and registry.
			l, err := running.Open(cmd.Context(), store, cli.ProviderFunc(cmd.Context()), running.Options{
				Cluster: name, Lab: labName, Catalog: c, RegistryImage: regImage,
			})
			var wrong *running.WrongLabError
			switch {
			case errors.Is(err, running.ErrNotRecorded):
				return notRecorded(name)
			case errors.As(err, &wrong):
				// The lab the cluster runs may come from a file: naming
				// the cluster alone resets it whatever it runs.
				return cli.Usagef("%v (kindlab reset --name %s)", err, name)
			case err != nil:
				return err
			}
			r := l.Resolved()
			if !out.JSON() {
				fmt.Fprintf(errOut, "Resetting lab %s on cluster %s…\n", r.Name, name)
			}
			res, err := reset.Run(cmd.Context(), l, reset.Options{
				Full:       full,
				SkipChecks: skipChecks,
				Timeout:    timeout,
				Status:     errOut,
			})
			if err != nil {
				return fmt.Errorf("reset %s: %w", name, err)
			}
			if out.JSON() {
				if err := cli.PrintJSON(s.Out, res); err != nil {
					return err
				}
			} else {
				// A summary after the steps, headed so that it does not read
				// as part of the last step.
				if len(res.Changes) > 0 {
					fmt.Fprintf(errOut, "What the reset put back:\n")
				}
				for _, ch := range res.Changes {
					fmt.Fprintf(errOut, "   %s %s: %s\n", ch.Action, ch.Object, ch.Why)
				}
				if len(res.Checks) > 0 {
					if err := check.PrintTable(s.Out, res.Checks); err != nil {
						return err
					}
				}
				fmt.Fprintf(s.ErrOut, "Lab %s on cluster %s is back to its start (%d object(s) put back, workloads ready in %s).\n",
					r.Name, name, len(res.Changes), res.Restore.Round(100*time.Millisecond))
			}
			if n := check.Failed(res.Checks); n > 0 {
				return cli.WithCode(cli.ExitCheckFailed, fmt.Errorf("%d of %d checks failed after the reset", n, len(res.Checks)))
			}
			return nil
		},
	}
	labs.AddFlags(cmd)
	out.AddFlag(cmd, "table", "json")
	cmd.Flags().StringVar(&name, "name", "", "cluster name (default: the lab's name)")
	cmd.Flags().BoolVar(&full, "full", false, "recreate every object of the lab's namespaces, changed or not")
	cmd.Flags().BoolVar(&skipChecks, "skip-checks", false, "stop once the workloads are ready again")
	cmd.Flags().DurationVar(&timeout, "timeout", workload.DefaultTimeout, "how long to wait for deletions and for the workloads to be ready")
	cmd.Flags().StringVar(&regImage, "registry-image", os.Getenv("KINDLAB_REGISTRY_IMAGE"),
		"registry image to start should the registry be gone (default $KINDLAB_REGISTRY_IMAGE)")
	cli.AddWaitLockFlag(cmd, &waitLock)
	return cmd
}

// notRecorded is reset's refusal of a cluster kindlab has no record of,
// before its lock (no record at all) or after (running.ErrNotRecorded).
func notRecorded(cluster string) error {
	return cli.Usagef("cluster %s: kindlab has no record of it; reset only restores a lab kindlab brought up (see `kindlab status`)", cluster)
}
