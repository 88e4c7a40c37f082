// Package labs is `kindlab labs`: the labs this invocation knows.
package labs

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/bundle"
)

type flags struct {
	labs cli.LabFlags
	out  cli.Output
}

type row struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Includes    []string `json:"includes,omitempty"`
	Source      string   `json:"source"`
	// Shadows is the built-in lab a ./labs or --file lab of the same name hides.
	Shadows string `json:"shadows,omitempty"`
}

// NewCommand returns the labs command.
func NewCommand(s *cli.Streams) *cobra.Command {
	f := &flags{}
	cmd := &cobra.Command{
		Use:   "labs",
		Short: "List the labs kindlab knows",
		Long: "List the labs kindlab knows: the built-in ones, every ./labs/*.yaml in the current directory\n" +
			"(which shadow built-in labs of the same name), and files given with --file.",
		Example: "  kindlab labs\n  kindlab labs -f my-lab.yaml -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.labs.Catalog()
			if err != nil {
				return err
			}
			var rows []row
			for _, l := range c.List() {
				shadows, _ := c.Shadows(l.Metadata.Name)
				rows = append(rows, row{Name: l.Metadata.Name, Description: l.Spec.Description,
					Includes: l.Spec.Include, Source: l.Origin.Display, Shadows: shadows})
			}
			sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
			if f.out.JSON() {
				return cli.PrintJSON(s.Out, rows)
			}
			w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSOURCE\tDESCRIPTION")
			for _, r := range rows {
				src := r.Source
				if r.Shadows != "" {
					src += " (shadows " + r.Shadows + ")"
				}
				// A lab file's name and description may come from anyone:
				// a terminal's escape sequences in them are shown, not obeyed.
				fmt.Fprintf(w, "%s\t%s\t%s\n", bundle.Printable(r.Name), bundle.Printable(src), bundle.Printable(strings.TrimSpace(r.Description)))
			}
			return w.Flush()
		},
	}
	f.labs.AddFlags(cmd)
	f.out.AddFlag(cmd, "table", "json")
	return cmd
}
