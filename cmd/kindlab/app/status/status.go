// Package status is `kindlab status`: which labs run, their nodes and contexts.
package status

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/state"
)

type row struct {
	Cluster string   `json:"cluster"`
	Lab     string   `json:"lab"`
	Fleet   string   `json:"fleet,omitempty"`
	State   string   `json:"state"`
	Nodes   []string `json:"nodes"`
	Context string   `json:"kubeconfigContext"`
	// Kubeconfig is the file holding the context ("" = the default kubeconfig).
	Kubeconfig string `json:"kubeconfig,omitempty"`
	Registry   bool   `json:"registry"`
	Image      string `json:"nodeImage"`
}

// NewCommand returns the status command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var out cli.Output
	var fleetName string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the labs kindlab created: running or not, nodes, kubeconfig context, fleet",
		Long: "List every cluster kindlab recorded: its lab, the fleet it belongs to (kindlab up --count),\n" +
			"whether it runs, its nodes, and where its kubeconfig context is.",
		Example: "  kindlab status\n  kindlab status -o json\n  kindlab status --fleet nftables",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fleetName != "" {
				if err := lab.ValidateName(fleetName); err != nil {
					return cli.Usagef("--fleet: %v", err)
				}
			}
			store, err := state.Default()
			if err != nil {
				return err
			}
			recs, bad, err := store.List()
			if err != nil {
				return err
			}
			// A record kindlab did not write hides no other: each is named
			// in one line and the good ones are listed.
			for _, b := range bad {
				fmt.Fprintf(s.ErrOut, "WARNING: %v\n", b)
			}
			if fleetName != "" {
				var in []state.Record
				for _, r := range recs {
					if r.Fleet == fleetName {
						in = append(in, r)
					}
				}
				recs = in
			}
			rows := []row{}
			var p *cluster.Provider
			var running []string
			if len(recs) > 0 {
				if p, err = cli.Provider(cmd.Context(), nil); err != nil {
					return cli.WithCode(cli.ExitNoDocker, err)
				}
				if running, err = p.List(); err != nil {
					return err
				}
			}
			for _, r := range recs {
				rw := row{Cluster: r.Cluster, Lab: r.Lab, Fleet: r.Fleet, State: "missing", Context: r.Context,
					Kubeconfig: r.Kubeconfig, Registry: r.Registry, Image: r.NodeImage}
				if contains(running, r.Cluster) {
					if h, err := p.Connect(r.Cluster); err == nil {
						rw.State = "running"
						if rw.Nodes, err = h.Nodes(cmd.Context()); err != nil {
							return err
						}
					}
				}
				rows = append(rows, rw)
			}
			if out.JSON() {
				return cli.PrintJSON(s.Out, rows)
			}
			if len(rows) == 0 {
				if fleetName != "" {
					fmt.Fprintf(s.ErrOut, "No clusters in fleet %s. Start one with: kindlab up LAB --name %s --count N\n", fleetName, fleetName)
					return nil
				}
				fmt.Fprintln(s.ErrOut, "No labs. Start one with: kindlab up all-features")
				return nil
			}
			w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CLUSTER\tLAB\tFLEET\tSTATE\tNODES\tCONTEXT\tKUBECONFIG\tREGISTRY")
			for _, r := range rows {
				kc := r.Kubeconfig
				if kc == "" {
					kc = "(default)"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%t\n", r.Cluster, r.Lab, orDash(r.Fleet), r.State, strings.Join(r.Nodes, ","), r.Context, kc, r.Registry)
			}
			return w.Flush()
		},
	}
	out.AddFlag(cmd, "table", "json")
	cmd.Flags().StringVar(&fleetName, "fleet", "", "only the clusters of this fleet (kindlab up --count)")
	return cmd
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
