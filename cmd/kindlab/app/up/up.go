// Package up is `kindlab up`: create (or converge) a lab's cluster.
package up

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	kindcmd "sigs.k8s.io/kind/pkg/cmd"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	renderapp "github.com/kindlab/kindlab/cmd/kindlab/app/render"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/up"
)

type flags struct {
	renderapp.Flags
	retain     bool
	wait       time.Duration
	kubeconfig string
	skipChecks bool
	regImage   string
	out        cli.Output
}

// NewCommand returns the up command.
func NewCommand(s *cli.Streams) *cobra.Command {
	f := &flags{}
	cmd := &cobra.Command{
		Use:   "up LAB|FILE",
		Short: "Create a lab's cluster, registry, artifacts and workloads, then run its checks",
		Long: "Create the kind cluster a lab describes (or reuse it if it already runs that lab), start or\n" +
			"reuse the shared local registry, push the lab's artifacts, apply its workloads and run its\n" +
			"checks. Running it again converges: nothing is duplicated. A failed up removes what it\n" +
			"created unless --retain is given. The kubeconfig context kind-<name> is merged into\n" +
			"$KUBECONFIG (or ~/.kube/config), as kind does.",
		Example: "  kindlab up all-features\n  kindlab up nftables --name sandbox-1\n  kindlab up ./my-lab.yaml --retain",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, store, err := f.Plan(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			logger := kindcmd.NewLogger()
			p, err := cluster.NewProvider(ctx, logger)
			if err != nil {
				return cli.WithCode(cli.ExitNoDocker, err)
			}
			res, err := up.Run(ctx, p, up.Options{
				Plan:          plan,
				Store:         store,
				Retain:        f.retain,
				Wait:          f.wait,
				Kubeconfig:    f.kubeconfig,
				SkipChecks:    f.skipChecks,
				RegistryImage: f.regImage,
				Status:        s.ErrOut,
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
				fmt.Fprintf(s.ErrOut, "Lab %s is up. Use it with:\n  kubectl cluster-info --context %s\n", plan.Lab, res.Context)
			}
			if check.AnyFailed(res.Checks) {
				return cli.WithCode(cli.ExitCheckFailed, errors.New("some feature checks failed (see the table)"))
			}
			return nil
		},
	}
	f.AddFlags(cmd)
	cmd.Flags().BoolVar(&f.retain, "retain", false, "keep the nodes of a failed up for debugging")
	cmd.Flags().DurationVar(&f.wait, "wait", 5*time.Minute, "how long to wait for the control plane to be Ready")
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file to write the context to (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().BoolVar(&f.skipChecks, "skip-checks", false, "apply workloads but do not run the checks")
	cmd.Flags().StringVar(&f.regImage, "registry-image", os.Getenv("KINDLAB_REGISTRY_IMAGE"),
		"registry image to run instead of the pinned registry:2 (default $KINDLAB_REGISTRY_IMAGE)")
	f.out.AddFlag(cmd, "table", "json")
	return cmd
}
