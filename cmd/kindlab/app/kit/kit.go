// Package kit is `kindlab kit`: offline kits for workshops.
package kit

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	renderapp "github.com/kindlab/kindlab/cmd/kindlab/app/render"
	"github.com/kindlab/kindlab/provision/bundle"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/kit"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/state"
)

// NewCommand returns the kit command group.
func NewCommand(s *cli.Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kit",
		Short: "Save a lab's images into one file and load it where there is no network",
		Long: "An offline kit is one tar file (an OCI image layout) holding everything a lab needs: the node\n" +
			"image, the registry image, every workload image and every artifact, each by digest. Make it\n" +
			"once where there is a network; on each machine `kindlab kit load` puts the node and registry\n" +
			"images into Docker and the rest into the local registry, after verifying every digest. Then\n" +
			"`kindlab up LAB` pulls nothing from the internet: nodes resolve registry.k8s.io, docker.io and\n" +
			"every registry the lab names through the local registry first.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSave(s), newLoad(s), newInspect(s))
	return cmd
}

type saveFlags struct {
	renderapp.Flags
	output    string
	platforms []string
}

func newSave(s *cli.Streams) *cobra.Command {
	f := &saveFlags{}
	cmd := &cobra.Command{
		Use:   "save LAB|FILE -o KIT",
		Short: "Write a lab's offline kit",
		Long: "Collect the lab's node image and registry image (from the Docker engine, else their registry),\n" +
			"its workload images (from the local registry, else upstream) and its artifacts (built from the\n" +
			"lab's files) into one tar file. Images are cached by digest under $KINDLAB_CACHE/kit, so saving\n" +
			"an unchanged lab again reads nothing and leaves an up-to-date kit file untouched.",
		Example: "  kindlab kit save all-features -o workshop-kit.tar\n" +
			"  kindlab kit save nftables -o kit.tar --platform linux/amd64,linux/arm64",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.output == "" {
				return cli.Usagef("--output (-o): name the kit file to write, e.g. -o workshop-kit.tar")
			}
			if err := cli.CheckOutputFile("--output", f.output, "workshop-kit.tar"); err != nil {
				return err
			}
			platforms, err := kit.ParsePlatforms(f.platforms)
			if err != nil {
				return cli.Usagef("%v", err)
			}
			plan, store, err := f.Plan(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			e, err := cli.ReachableEngine(cmd.Context())
			if err != nil {
				return err
			}
			start := time.Now()
			res, err := kit.Save(cmd.Context(), kit.SaveOptions{
				Plan: plan, RegistryImage: f.RegistryImage, Platforms: platforms, Output: f.output, Store: &store, Docker: e.Client(),
				Progress: func(msg string) { fmt.Fprintf(s.ErrOut, " • %s\n", msg) },
			})
			if err != nil {
				return err
			}
			verb := "Wrote"
			if res.Unchanged {
				verb = "Up to date:"
			}
			fmt.Fprintf(s.ErrOut, "%s %s: lab %s, %d images, %.1f MiB, %v (%s)\n", verb, res.File, res.Lab, len(res.Entries),
				float64(res.Size)/(1<<20), res.Platforms, time.Since(start).Round(100*time.Millisecond))
			return nil
		},
	}
	f.AddFlags(cmd)
	cmd.Flags().StringVarP(&f.output, "output", "o", "", "kit file to write (required)")
	cmd.Flags().StringSliceVar(&f.platforms, "platform", nil, "platforms to carry, e.g. linux/amd64,linux/arm64 (default: the Docker engine's)")
	return cmd
}

type loadFlags struct {
	lab  string
	port int
	out  cli.Output
}

func newLoad(s *cli.Streams) *cobra.Command {
	f := &loadFlags{}
	cmd := &cobra.Command{
		Use:   "load KIT",
		Short: "Verify a kit and load it into Docker and the local registry",
		Long: "Verify every blob of the kit against its digest, then load the node and registry images into\n" +
			"the Docker engine and the workload images and artifacts into the local registry (started if\n" +
			"needed). A damaged or tampered kit is refused before anything is loaded. Loading the same kit\n" +
			"again loads nothing.\n\n" +
			"Exit codes: 0 loaded, 2 the kit cannot be used (missing, not a kit, truncated, damaged or tampered\n" +
			"with, a newer format, another lab than --lab, another platform than the engine), 1 loading failed.",
		Example: "  kindlab kit load workshop-kit.tar && kindlab up all-features",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.lab != "" {
				if err := lab.ValidateName(f.lab); err != nil {
					return cli.Usagef("--lab %q: %v", f.lab, err)
				}
			}
			if err := cli.CheckPort("--registry-port", f.port); err != nil {
				return err
			}
			store, err := state.Default()
			if err != nil {
				return err
			}
			// Not pinged here: the kit is verified first (a bad kit is exit 2
			// whatever the engine), and Load's first engine call is bounded.
			e, err := cli.Engine(cmd.Context())
			if err != nil {
				return err
			}
			start := time.Now()
			res, err := kit.Load(cmd.Context(), kit.LoadOptions{
				File: args[0], Lab: f.lab, Store: store, Docker: e.Client(),
				Registry: registry.Options{HostPort: f.port},
				Progress: func(msg string) { fmt.Fprintf(s.ErrOut, " • %s\n", msg) },
			})
			if err != nil {
				return kitError(args[0], err)
			}
			if f.out.JSON() {
				return cli.PrintJSON(s.Out, res)
			}
			printLoaded(s.Out, res)
			fmt.Fprintf(s.ErrOut, "Loaded %s (lab %s): %.1f MiB verified, %.1f MiB loaded in %s. Next: kindlab up %s\n",
				res.File, res.Lab, float64(res.BytesVerified)/(1<<20), float64(res.BytesLoaded)/(1<<20),
				time.Since(start).Round(100*time.Millisecond), res.Lab)
			return nil
		},
	}
	cmd.Flags().StringVar(&f.lab, "lab", "", "refuse the kit unless it is for this lab")
	cmd.Flags().IntVar(&f.port, "registry-port", registry.DefaultHostPort, "host port of the shared local registry (127.0.0.1 only)")
	f.out.AddFlag(cmd, "table", "json")
	return cmd
}

// kitError gives a kit that cannot be used (kit.ErrBadKit: missing, not a
// kit, truncated, tampered with, newer, another lab or platform) the exit
// code of bad input, 2, as `bundle replay` does for a bad bundle; anything
// else failed while loading (1).
func kitError(file string, err error) error {
	switch {
	case errors.Is(err, kit.ErrBadKit):
		return cli.WithCode(cli.ExitUsage, err)
	case errors.Is(err, engine.ErrNoEngine):
		return cli.WithCode(cli.ExitNoDocker, fmt.Errorf("load kit %s: %w", file, err))
	}
	return fmt.Errorf("load kit %s: %w", file, err)
}

func printLoaded(w io.Writer, res *kit.LoadResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tREFERENCE\tINTO\tSTATE")
	for _, im := range res.Images {
		st := "loaded"
		if im.AlreadyThere {
			st = "already there"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", im.Role, bundle.Printable(im.Reference), bundle.Printable(im.Into), st)
	}
	tw.Flush()
}

func newInspect(s *cli.Streams) *cobra.Command {
	var out cli.Output
	cmd := &cobra.Command{
		Use:   "inspect KIT",
		Short: "List what a kit holds (without verifying content)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			man, err := kit.Open(args[0])
			if err != nil {
				return kitError(args[0], err)
			}
			if out.JSON() {
				return cli.PrintJSON(s.Out, man)
			}
			// What a kit names is a stranger's text: a terminal's escape
			// sequences in it are shown, not obeyed.
			fmt.Fprintf(s.Out, "Lab %s, kit format %d, platforms %s, %.1f MiB\n", bundle.Printable(man.Lab), man.Format, bundle.Printable(fmt.Sprint(man.Platforms)), float64(man.Size)/(1<<20))
			tw := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ROLE\tNAME\tREFERENCE\tDIGEST\tMIB")
			for _, e := range man.Entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\n", bundle.Printable(string(e.Role)), bundle.Printable(e.Name), bundle.Printable(e.Reference), bundle.Printable(e.Digest[:19]), float64(e.Size)/(1<<20))
			}
			return tw.Flush()
		},
	}
	out.AddFlag(cmd, "table", "json")
	return cmd
}
