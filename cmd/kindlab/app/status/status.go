// Package status is `kindlab status`: which labs run, their nodes and contexts.
package status

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/state"
)

type row struct {
	Cluster  string   `json:"cluster"`
	Lab      string   `json:"lab"`
	State    string   `json:"state"`
	Nodes    []string `json:"nodes"`
	Context  string   `json:"kubeconfigContext"`
	Registry bool     `json:"registry"`
	Image    string   `json:"nodeImage"`
}

// NewCommand returns the status command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var out cli.Output
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show the labs kindlab created: running or not, nodes, kubeconfig context",
		Example: "  kindlab status\n  kindlab status -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, err := state.Default()
			if err != nil {
				return err
			}
			recs, err := store.List()
			if err != nil {
				return err
			}
			rows := []row{}
			var p *cluster.Provider
			if len(recs) > 0 {
				if p, err = cluster.NewProvider(cmd.Context(), nil); err != nil {
					return cli.WithCode(cli.ExitNoDocker, err)
				}
			}
			for _, r := range recs {
				rw := row{Cluster: r.Cluster, Lab: r.Lab, State: "missing", Context: r.Context, Registry: r.Registry, Image: r.NodeImage}
				if h, err := p.Connect(r.Cluster); err == nil {
					rw.State = "running"
					if rw.Nodes, err = h.Nodes(cmd.Context()); err != nil {
						return err
					}
				}
				rows = append(rows, rw)
			}
			if out.JSON() {
				return cli.PrintJSON(s.Out, rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(s.ErrOut, "No labs. Start one with: kindlab up all-features")
				return nil
			}
			w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CLUSTER\tLAB\tSTATE\tNODES\tCONTEXT\tREGISTRY")
			for _, r := range rows {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%t\n", r.Cluster, r.Lab, r.State, strings.Join(r.Nodes, ","), r.Context, r.Registry)
			}
			return w.Flush()
		},
	}
	out.AddFlag(cmd, "table", "json")
	return cmd
}
