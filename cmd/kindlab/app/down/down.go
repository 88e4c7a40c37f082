// Package down is `kindlab down`: remove everything a lab created.
package down

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	kindcmd "sigs.k8s.io/kind/pkg/cmd"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/down"
	"github.com/kindlab/kindlab/provision/state"
)

// NewCommand returns the down command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var name, kubeconfig string
	var keepRegistry bool
	cmd := &cobra.Command{
		Use:   "down [LAB]",
		Short: "Delete a lab's cluster, its kubeconfig context, and the registry when no other lab uses it",
		Long: "Delete the kind cluster of a lab (by lab name, or --name for a cluster given another name),\n" +
			"remove its kubeconfig context and kindlab's record of it, and remove the shared registry\n" +
			"container when no other running lab uses it. Deleting a lab that is not running is not an error.",
		Example: "  kindlab down all-features\n  kindlab down --name sandbox-1",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cluster_ := name
			if cluster_ == "" && len(args) == 1 {
				cluster_ = args[0]
			}
			if cluster_ == "" {
				return cli.Usagef("name the lab to take down (kindlab down LAB) or its cluster (--name)")
			}
			store, err := state.Default()
			if err != nil {
				return err
			}
			p, err := cluster.NewProvider(cmd.Context(), kindcmd.NewLogger())
			if err != nil {
				return cli.WithCode(cli.ExitNoDocker, err)
			}
			if kubeconfig == "" {
				if rec, err := store.Load(cluster_); err == nil {
					kubeconfig = rec.Kubeconfig
				} else if !errors.Is(err, state.ErrNotFound) {
					return err
				}
			}
			res, err := down.Run(cmd.Context(), p, store, down.Options{Cluster: cluster_, Kubeconfig: kubeconfig, KeepRegistry: keepRegistry})
			if err != nil {
				return err
			}
			for _, line := range res.Removed {
				fmt.Fprintf(s.ErrOut, " ✓ %s\n", line)
			}
			if len(res.Removed) == 0 {
				fmt.Fprintf(s.ErrOut, "Nothing to remove: no cluster %q.\n", cluster_)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "cluster name (default: the lab name)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file the context was written to (default: as recorded at up)")
	cmd.Flags().BoolVar(&keepRegistry, "keep-registry", false, "keep the shared registry container even if no lab uses it any more")
	return cmd
}
