// Package version is `kindlab version`: this binary's version and what it
// was built with, as `kind version` and `kubectl version --client` say theirs.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
)

// Info is what `kindlab version -o json` prints.
type Info struct {
	// Kindlab is the version set at build time ("dev" otherwise).
	Kindlab string `json:"kindlab"`
	// Go is the Go toolchain the binary was built with, e.g. go1.26.8.
	Go       string `json:"go"`
	Platform string `json:"platform"`
	// Kind and ClientGo are the module versions of sigs.k8s.io/kind and
	// k8s.io/client-go in the binary (a replacement's version when
	// replaced); "unknown" without module information.
	Kind     string `json:"kind"`
	ClientGo string `json:"clientGo"`
}

// Get reads Info from the binary's build information (debug.ReadBuildInfo).
func Get(version string) Info {
	info := Info{Kindlab: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, Kind: "unknown", ClientGo: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	info.Go = bi.GoVersion
	for _, d := range bi.Deps {
		v := d.Version
		if d.Replace != nil && d.Replace.Version != "" {
			v = d.Replace.Version
		}
		switch d.Path {
		case "sigs.k8s.io/kind":
			info.Kind = v
		case "k8s.io/client-go":
			info.ClientGo = v
		}
	}
	return info
}

// NewCommand returns the version command; version is the binary's.
func NewCommand(s *cli.Streams, version string) *cobra.Command {
	var out cli.Output
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print kindlab's version and the Go, kind and client-go versions it was built with",
		Long: "Print kindlab's version (the same as --version), the Go toolchain, platform, and the versions of\n" +
			"the sigs.k8s.io/kind and k8s.io/client-go modules built into it. -o json for scripts and bug reports.",
		Example: "  kindlab version\n  kindlab version -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := Get(version)
			if out.JSON() {
				return cli.PrintJSON(s.Out, info)
			}
			_, err := fmt.Fprintf(s.Out, "kindlab %s %s %s (kind %s, client-go %s)\n", info.Kindlab, info.Go, info.Platform, info.Kind, info.ClientGo)
			return err
		},
	}
	out.AddFlag(cmd, "text", "json")
	return cmd
}
