// Package down is `kindlab down`: remove everything a lab created.
package down

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/down"
	"github.com/kindlab/kindlab/provision/fleet"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/state"
)

// NewCommand returns the down command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var name, kubeconfig, fleetName string
	var count int
	var keepRegistry bool
	var waitLock time.Duration
	cmd := &cobra.Command{
		Use:   "down [LAB]",
		Short: "Delete a lab's cluster (or a fleet's), its kubeconfig context, and the registry container once no kind cluster is wired to it",
		Long: "Delete the kind cluster of a lab (by lab name, or --name for a cluster given another name),\n" +
			"remove its kubeconfig context and kindlab's record of it, and remove the shared registry\n" +
			"container once no kind cluster on the engine is wired to it (the engine is asked, so clusters of\n" +
			"other users or other KINDLAB_STATE_DIRs keep it). What was pushed stays on the registry's volume\n" +
			"for the next up; `kindlab registry down --delete-data` deletes it. Deleting a lab that is not\n" +
			"running is not an error.\n\n" +
			"A fleet (`up --count`) goes with --fleet NAME: every cluster kindlab recorded in it, however\n" +
			"many, with its kubeconfig file from --kubeconfig-dir. `down LAB --count N` mirrors the up\n" +
			"that made it and takes down <name>-1 … <name>-N.",
		Example: "  kindlab down all-features\n  kindlab down --name sandbox-1\n  kindlab down --fleet nftables\n  kindlab down nftables --count 12",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cluster_ := name
			if cluster_ == "" && len(args) == 1 {
				cluster_ = args[0]
			}
			counted := cmd.Flags().Changed("count")
			switch {
			case fleetName != "" && (cluster_ != "" || counted):
				return cli.Usagef("--fleet: names what to take down on its own (not with a LAB argument, --name or --count)")
			case fleetName != "" && kubeconfig != "", counted && kubeconfig != "":
				return cli.Usagef("--kubeconfig: not for a fleet, whose clusters are taken down from the kubeconfig each was written to")
			case counted && count < 1:
				return cli.Usagef("--count: %d is not a number of clusters (valid: 1 or more)", count)
			case counted && cluster_ == "":
				return cli.Usagef("--count: name the fleet (kindlab down LAB --count N, or --name NAME --count N)")
			case fleetName == "" && cluster_ == "":
				return cli.Usagef("name the lab to take down (kindlab down LAB), its cluster (--name) or its fleet (--fleet)")
			}
			if cluster_ != "" {
				if err := lab.ValidateName(cluster_); err != nil {
					return cli.Usagef("--name: %v", err)
				}
			}
			store, err := state.Default()
			if err != nil {
				return err
			}
			// No kind logger: kind's delete reports only a raw
			// `Deleted nodes: [...]` line, which printRemoved says in
			// kindlab's words; its failures come back as errors.
			p, err := cli.Provider(cmd.Context(), nil)
			if err != nil {
				return cli.WithCode(cli.ExitNoDocker, err)
			}
			if fleetName != "" || counted {
				opts := fleet.DownOptions{Name: fleetName, KeepRegistry: keepRegistry, WaitLock: waitLock, Status: s.ErrOut}
				if counted {
					opts.Name, opts.Clusters = cluster_, fleet.Members(cluster_, count)
				}
				res, err := fleet.Down(cmd.Context(), p, store, opts)
				printRemoved(s, res)
				if res != nil && len(res.Removed) == 0 && err == nil {
					fmt.Fprintf(s.ErrOut, "Nothing to remove: no cluster of fleet %q.\n", opts.Name)
				}
				return err
			}
			// An empty --kubeconfig means the file recorded at up.
			res, err := down.Run(cmd.Context(), p, store, down.Options{Cluster: cluster_, Kubeconfig: kubeconfig, KeepRegistry: keepRegistry,
				WaitLock: waitLock, Status: s.ErrOut})
			if err != nil {
				return err
			}
			printRemoved(s, res)
			if len(res.Removed) == 0 {
				msg := fmt.Sprintf("Nothing to remove: no cluster %q.", cluster_)
				if members, _ := fleet.FleetMembers(store, cluster_); len(members) > 0 {
					msg += fmt.Sprintf(" Fleet %s has %d cluster(s): kindlab down --fleet %s", cluster_, len(members), cluster_)
				}
				fmt.Fprintln(s.ErrOut, msg)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "cluster name (default: the lab name)")
	cmd.Flags().StringVar(&fleetName, "fleet", "", "take down every cluster of this fleet (kindlab up --count)")
	cmd.Flags().IntVar(&count, "count", 0, "take down `N` clusters, <name>-1 … <name>-N, as kindlab up --count N made them")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file the context was written to (default: as recorded at up)")
	cmd.Flags().BoolVar(&keepRegistry, "keep-registry", false, "keep the shared registry container even if no kind cluster is wired to it any more")
	cli.AddWaitLockFlag(cmd, &waitLock)
	return cmd
}

func printRemoved(s *cli.Streams, res *down.Result) {
	if res == nil {
		return
	}
	for _, line := range res.Removed {
		fmt.Fprintf(s.ErrOut, " ✓ %s\n", line)
	}
	for _, line := range res.Kept {
		fmt.Fprintf(s.ErrOut, " • %s\n", line)
	}
}
