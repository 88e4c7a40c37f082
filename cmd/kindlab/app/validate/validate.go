// Package validate is `kindlab validate`: check lab files without creating anything.
package validate

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/lab"
)

// NewCommand returns the validate command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var labs cli.LabFlags
	cmd := &cobra.Command{
		Use:   "validate LAB|FILE...",
		Short: "Check lab files and their includes; exit 0 or print the first error",
		Long: "Check that each named lab (a lab name or a lab file) parses strictly, that every lab it includes\n" +
			"exists and agrees with it, that its node image is pinned by digest, its feature gates exist in\n" +
			"Kubernetes 1.31, and that every file it refers to is there. It also refuses what kind v0.31, kubeadm,\n" +
			"kube-apiserver and kube-proxy 1.31.14 would refuse (subnets, gate dependencies, kube-proxy mode, and\n" +
			"the authentication config, checked by k8s.io/apiserver's own validation with the lab's gates), each as\n" +
			"one line: file:line: field: what is valid (upstream reason). Nothing is created.",
		Example: "  kindlab validate my-lab.yaml\n  kindlab validate all-features",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, arg := range args {
				c, name, err := labs.LabArg(arg)
				if err != nil {
					return err
				}
				r, err := c.Resolve(name, lab.ResolveOptions{KnownChecks: check.Names()})
				if err != nil {
					return err
				}
				fmt.Fprintf(s.Out, "%s: lab %q is valid (%s, %s, %s)\n",
					r.Source, r.Name, plural(len(r.Nodes), "node"), plural(len(r.FeatureGates), "feature gate"), check.Count(len(r.Checks)))
			}
			return nil
		},
	}
	labs.AddFlags(cmd)
	return cmd
}

// plural is "1 node" or "N nodes".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
