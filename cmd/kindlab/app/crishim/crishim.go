// Package crishim is `kindlab cri-shim`, the hidden verb the nodes of a lab
// with spec.containerRuntime.imageVolumeReadOnlyShim run under systemd: the
// same kindlab binary, mounted read-only into each node, serving the CRI
// between the kubelet and containerd (see provision/crishim).
package crishim

import (
	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/crishim"
)

// NewCommand returns the cri-shim command. It is hidden: people do not run
// it, the kindlab-cri-shim.service unit in each node does.
func NewCommand(s *cli.Streams) *cobra.Command {
	opts := crishim.Options{}
	cmd := &cobra.Command{
		Use:    crishim.Verb,
		Short:  "Serve the CRI in front of containerd, making image-volume mounts read-only (runs inside kind nodes)",
		Hidden: true,
		Long: "Run kindlab's CRI shim: serve the CRI RuntimeService and ImageService on --listen and forward every\n" +
			"call to --runtime-endpoint unchanged, except CreateContainer, where each mount that names an image\n" +
			"is made read-only, as the Kubernetes 1.32 kubelet sends it. containerd 2.1+ refuses the writable\n" +
			"image mounts the 1.31 kubelet sends. Runs until SIGTERM; logs to stderr (the unit's journal).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Log = s.ErrOut
			if err := crishim.Serve(cmd.Context(), opts); err != nil {
				if cmd.Context().Err() == nil && isUsage(opts) {
					return cli.WithCode(cli.ExitUsage, err)
				}
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Listen, "listen", crishim.Endpoint, "the shim's CRI endpoint (unix:///path)")
	cmd.Flags().StringVar(&opts.RuntimeEndpoint, "runtime-endpoint", crishim.ContainerdEndpoint, "the runtime's CRI endpoint to forward to (unix:///path)")
	cmd.Flags().DurationVar(&opts.RuntimeWait, "runtime-wait", 0, "how long to wait for the runtime to answer before giving up (default 30s)")
	return cmd
}

// isUsage tells a bad flag value from a runtime failure.
func isUsage(o crishim.Options) bool {
	return crishim.CheckEndpoint("--listen", o.Listen) != nil || crishim.CheckEndpoint("--runtime-endpoint", o.RuntimeEndpoint) != nil
}
