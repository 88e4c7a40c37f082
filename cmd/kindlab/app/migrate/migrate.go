// Package migrate is `kindlab migrate`: rewrite manifests off APIs that
// Kubernetes 1.31 deprecated.
package migrate

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/apparmor"
	"github.com/kindlab/kindlab/provision/regular"
	"github.com/kindlab/kindlab/provision/workload"
)

// NewCommand returns the migrate command with its subcommands.
func NewCommand(s *cli.Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Rewrite manifests off deprecated Kubernetes APIs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cli.Usagef("%s: name what to migrate (see '%s --help')", cmd.CommandPath(), cmd.CommandPath())
		},
	}
	cmd.AddCommand(newAppArmor(s))
	return cmd
}

func newAppArmor(s *cli.Streams) *cobra.Command {
	var write bool
	cmd := &cobra.Command{
		Use:   "apparmor FILE...",
		Short: "Move container.apparmor.security.beta.kubernetes.io annotations to securityContext.appArmorProfile",
		Long: "Rewrites the AppArmor annotations deprecated since Kubernetes 1.30\n" +
			"(container.apparmor.security.beta.kubernetes.io/<container>: runtime/default | localhost/<profile> | unconfined)\n" +
			"to the container's securityContext.appArmorProfile field, GA in 1.31, in Pods and in the pod templates of\n" +
			"Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs. Multi-document files keep their\n" +
			"documents in order. Prints the result to stdout, or rewrites the files in place with -w: each file\n" +
			"is written whole beside itself and renamed over the original, keeping its mode, so a failed write\n" +
			"(a full disk) leaves the original as it was. FILE - reads standard input.\n\n" +
			"Exit codes: 0 migrated, 2 a file cannot be read or is not YAML (nothing written), 1 a write failed.",
		Example: "  kindlab migrate apparmor deploy.yaml > deploy.new.yaml\n  kindlab migrate apparmor -w k8s/*.yaml",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Every file is migrated before any is written, so one bad file
			// leaves all of them untouched.
			outs := make([][]byte, len(args))
			for i, f := range args {
				in, err := readInput(s, f)
				if err != nil {
					return cli.WithCode(cli.ExitUsage, err)
				}
				out, n, err := apparmor.Migrate(in)
				if err != nil {
					return cli.Usagef("%s: %w", f, err)
				}
				outs[i] = out
				if write || len(args) > 1 {
					fmt.Fprintf(s.ErrOut, "%s: %d annotation(s) migrated\n", f, n)
				}
			}
			for i, f := range args {
				if !write || f == "-" {
					if i > 0 && !bytes.HasPrefix(outs[i], []byte("---")) {
						fmt.Fprintln(s.Out, "---")
					}
					if _, err := s.Out.Write(outs[i]); err != nil {
						return err
					}
					continue
				}
				if err := apparmor.WriteInPlace(f, outs[i]); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&write, "write", "w", false, "rewrite the files in place instead of printing")
	return cmd
}

// readRegular reads a manifest file, refusing a FIFO or device before it
// blocks (regular.OpenInput).
func readRegular(name string) ([]byte, error) {
	f, err := regular.OpenInput(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readBounded(f)
}

// readBounded reads at most workload.MaxManifestSize bytes, the bound on a
// lab's manifest files: decoding YAML takes some 200 times its size in
// memory (a hostile 8.5 MB file of small Pods took 2 GB), and standard
// input may never end.
func readBounded(r io.Reader) ([]byte, error) {
	b, err := regular.ReadAtMost(r, workload.MaxManifestSize)
	if errors.Is(err, regular.ErrTooLarge) {
		return nil, fmt.Errorf("it is larger than %d MiB, the bound on a manifest file: split it: %w", workload.MaxManifestSize>>20, err)
	}
	return b, err
}

func readInput(s *cli.Streams, f string) ([]byte, error) {
	if f == "-" {
		b, err := readBounded(s.In)
		if err != nil {
			return nil, fmt.Errorf("standard input: %w", err)
		}
		return b, nil
	}
	b, err := readRegular(f)
	if err != nil {
		// The path is named once, here.
		return nil, fmt.Errorf("%s: cannot read it: %w (valid: a YAML file of Kubernetes objects, or - for standard input)", f, regular.Cause(err))
	}
	return b, nil
}
