// Package instructions is `kindlab instructions`: a lab's step-by-step
// text in the terminal, its commands written for the attendee's cluster, as
// the console's attendee page shows them.
package instructions

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	appconsole "github.com/kindlab/kindlab/cmd/kindlab/app/console"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/console"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
)

// NewCommand returns the instructions command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var (
		labs cli.LabFlags
		out  cli.Output
		name string
	)
	cmd := &cobra.Command{
		Use:   "instructions [LAB|FILE]",
		Short: "Print a lab's steps, with the commands written for its cluster (context, node names, --name)",
		Long: "Prints the steps of a lab's instructions, an included lab's among them, with each command\n" +
			"rewritten for the cluster: kubectl gets --context, node names (LAB-worker) become the cluster's,\n" +
			"and `kindlab check|reset LAB` names the cluster, as the console's attendee page shows them.\n\n" +
			"Without LAB, --name names the cluster and the lab is the one it came up with. The cluster need\n" +
			"not be running: without a record of it, its context is kind-NAME as kind names it.\n\n" +
			"Exit codes: 0 printed, 2 bad input (an unknown lab or cluster, a cluster of another lab).",
		Example: "  kindlab instructions nftables\n  kindlab instructions all-features --name sandbox-1\n  kindlab instructions --name sandbox-1 -o json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, labName, err := labs.LabArgs(args)
			if err != nil {
				return err
			}
			if labName == "" && name == "" {
				return cli.Usagef("name the lab (kindlab instructions LAB) or its cluster (--name)")
			}
			if name == "" {
				name = labName
			}
			if err := lab.ValidateName(name); err != nil {
				return cli.Usagef("--name: %v", err)
			}
			store, err := state.Default()
			if err != nil {
				return err
			}
			rec, err := store.Load(name)
			switch {
			case errors.Is(err, state.ErrNotFound) && labName == "":
				return cli.Usagef("cluster %s: kindlab has no record of it, so name its lab (kindlab instructions LAB --name %s)", name, name)
			case errors.Is(err, state.ErrNotFound):
				rec = state.Record{Cluster: name, Lab: labName, Context: "kind-" + name}
			case err != nil:
				return err
			case labName != "" && rec.Lab != labName:
				return cli.Usagef("cluster %s runs lab %s, not %s: leave LAB out, or name another cluster with --name", name, rec.Lab, labName)
			case labName == "":
				// The lab as the cluster came up with it, not a ./labs
				// file that shadows it now.
				if c, err = running.RecordedCatalog(c, rec); err != nil {
					return cli.WithCode(cli.ExitUsage, err)
				}
			}
			r, err := c.Resolve(rec.Lab, lab.ResolveOptions{KnownChecks: check.Names()})
			if err != nil {
				return err
			}
			steps := console.Steps(appconsole.ClusterOf(rec, r))
			if out.JSON() {
				if steps == nil {
					steps = []console.Step{}
				}
				return cli.PrintJSON(s.Out, steps)
			}
			if len(steps) == 0 {
				fmt.Fprintf(s.ErrOut, "lab %s has no instructions\n", r.Name)
				return nil
			}
			// A lab file is a stranger's text: its escapes are shown, not
			// acted on (hostile review, session 13).
			var b strings.Builder
			printSteps(&b, steps, rec)
			_, err = io.WriteString(s.Out, cli.TerminalSafe(b.String()))
			return err
		},
	}
	labs.AddFlags(cmd)
	out.AddFlag(cmd, "text", "json")
	cmd.Flags().StringVar(&name, "name", "", "cluster name (default: the lab name)")
	return cmd
}

// printSteps writes the steps as the lab files write them: one heading
// per lab, "N. text", and each one-line command indented under its step.
func printSteps(w io.Writer, steps []console.Step, rec state.Record) {
	fmt.Fprintf(w, "Lab %s on cluster %s (context %s)\n", rec.Lab, rec.Cluster, rec.Context)
	current := ""
	for _, st := range steps {
		if st.Lab != current {
			current = st.Lab
			fmt.Fprintf(w, "\n%s:\n", current)
		}
		prefix := "  "
		if st.Number != "" {
			prefix = fmt.Sprintf("  %s. ", st.Number)
		}
		fmt.Fprintf(w, "%s%s\n", prefix, st.Text)
		for _, c := range st.Commands {
			if !strings.Contains(c, "\n") {
				fmt.Fprintf(w, "       %s\n", c)
				continue
			}
			// A block (a heredoc) is printed as it runs, from the first
			// column, so that it can be pasted: an indented EOF would
			// never end its heredoc (fresh-user review, session 13).
			fmt.Fprintf(w, "\n%s\n\n", c)
		}
	}
}
