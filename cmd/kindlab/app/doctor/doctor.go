// Package doctor is `kindlab doctor`: can this machine run the lab, and what to fix.
package doctor

import (
	"os"
	"slices"

	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/crishim"
	"github.com/kindlab/kindlab/provision/doctor"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/fleet"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
)

// NewCommand returns the doctor command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var labs cli.LabFlags
	var out cli.Output
	var image string
	var clusters, port int
	cmd := &cobra.Command{
		Use:   "doctor [LAB]",
		Short: "Check whether this machine can run a lab, and say exactly what to fix",
		Long: "Look at the Docker engine, cgroups, kernel (nftables needs 5.13+), AppArmor (the apparmor lab needs it),\n" +
			"how many clusters fit (inotify and memory, measured as `up --count` does), the registry port, disk space, and the lab's node image\n" +
			"(present, containerd new enough for image volumes) and, for a lab with kindlab's CRI shim, whether the\n" +
			"nodes can run this kindlab binary as the shim (static, for the engine's architecture, a local engine). Exit 0 when nothing fails,\n" +
			"4 when no container engine is reachable (the findings still print), 1 when anything else fails; warnings name the labs they affect.",
		Example: "  kindlab doctor\n  kindlab doctor all-features --clusters 12 -o json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if clusters < 1 {
				return cli.Usagef("--clusters: %d is not a number of clusters (valid: 1 or more)", clusters)
			}
			if err := cli.CheckPort("--registry-port", port); err != nil {
				return err
			}
			opts := doctor.Options{Clusters: clusters, RegistryPort: port, Provider: cli.ProviderFlag(cmd.Context())}
			if image != "" {
				opts.NodeImages = []string{image}
			}
			shape := fleet.BaseShape
			if len(args) == 1 {
				c, name, err := labs.LabArg(args[0])
				if err != nil {
					return err
				}
				r, err := c.Resolve(name, lab.ResolveOptions{})
				if err != nil {
					return err
				}
				if image == "" {
					opts.NodeImages = []string{r.NodeImage}
					// A cluster of the lab that runs already converges on
					// the node image it came up with (an offline build,
					// say), which is the one to look at.
					if store, err := state.Default(); err == nil {
						if rec, err := store.Load(r.Name); err == nil && rec.Lab == r.Name && rec.NodeImage != "" {
							image = rec.NodeImage
							opts.NodeImages = []string{image}
						}
					}
				}
				var roles []string
				for _, n := range r.Nodes {
					roles = append(roles, n.Role)
					// --image stands for every node, as with render and up.
					if image == "" && n.Image != "" && !slices.Contains(opts.NodeImages, n.Image) {
						opts.NodeImages = append(opts.NodeImages, n.Image)
					}
				}
				shape = fleet.ShapeOfNodes(roles)
				if r.ImageVolumeReadOnlyShim {
					if opts.CRIShimBinary, err = crishim.DefaultBinary(); err != nil {
						return err
					}
				}
			}
			// The same measure and limit as `up --count`, so doctor's advice
			// and up's refusal agree.
			// The command's engine; when none can be found doctor says so
			// itself (opening it again, as a finding).
			if e, err := cli.Engine(cmd.Context()); err == nil {
				opts.Engine = e
			}
			opts.Capacity = func(ctx context.Context, e *engine.Engine, n int) doctor.Finding {
				return fleet.MeasureHost(ctx, e).CapacityFinding(shape, n)
			}
			findings := doctor.Run(cmd.Context(), opts)
			if out.JSON() {
				if err := cli.PrintJSON(s.Out, findings); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "CHECK\tRESULT\tDETAIL")
				for _, f := range findings {
					fmt.Fprintf(w, "%s\t%s\t%s\n", f.Check, strings.ToUpper(string(f.Level)), f.Detail)
				}
				w.Flush()
				for _, f := range findings {
					if f.Level != doctor.OK && f.Fix != "" {
						fmt.Fprintf(s.Out, "\n%s: affects %s\n  fix: %s\n", f.Check, f.Affects, f.Fix)
					}
				}
			}
			if doctor.NoEngine(findings) {
				at := ""
				if opts.Engine != nil {
					at = " at " + opts.Engine.Endpoint().String()
				}
				return cli.WithCode(cli.ExitNoDocker, fmt.Errorf("no container engine reachable%s (see the fix above)", at))
			}
			if doctor.Worst(findings) == doctor.Fail {
				return cli.WithCode(cli.ExitError, errors.New("this machine cannot run the lab as it is (see the fixes above)"))
			}
			return nil
		},
	}
	labs.AddFlags(cmd)
	out.AddFlag(cmd, "table", "json")
	cmd.Flags().StringVar(&image, "image", os.Getenv("KINDLAB_NODE_IMAGE"),
		"node image to look at instead of the lab's (default $KINDLAB_NODE_IMAGE, else the one the lab's cluster came up with)")
	cmd.Flags().IntVar(&clusters, "clusters", 1, "how many clusters will run at once")
	cmd.Flags().IntVar(&port, "registry-port", render.DefaultRegistryPort, "host port of the local registry")
	return cmd
}
