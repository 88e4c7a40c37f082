// Package render is `kindlab render`: what `up` would create, without Docker.
package render

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/doctor"
	"github.com/kindlab/kindlab/provision/kit"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
	"github.com/kindlab/kindlab/provision/up"
)

// Flags are the flags that select and shape a lab's cluster; `up` shares them.
type Flags struct {
	Labs           cli.LabFlags
	Name           string
	Image          string
	RegistryPort   int
	ImageOverrides []string
	// APIServerAddress is --api-server-address; "" means 127.0.0.1, or the
	// engine's host when the engine is remote.
	APIServerAddress string
	// RegistryImage is --registry-image: the image the registry starts
	// from instead of registry.DefaultImage.
	RegistryImage string
}

// AddFlags registers the shared flags.
func (f *Flags) AddFlags(cmd *cobra.Command) {
	f.Labs.AddFlags(cmd)
	cmd.Flags().StringVar(&f.Name, "name", "", "cluster name (default: the lab name)")
	cmd.Flags().StringVar(&f.Image, "image", os.Getenv("KINDLAB_NODE_IMAGE"),
		"node image to use instead of the lab's pinned one, e.g. one built offline (default $KINDLAB_NODE_IMAGE)")
	cmd.Flags().StringArrayVar(&f.ImageOverrides, "image-override", envList("KINDLAB_IMAGE_OVERRIDES"),
		"NAME=REF: run the lab's image NAME from REF instead, pinned by digest, e.g. an image built offline and pushed\n"+
			"to the local registry (repeatable; default from $KINDLAB_IMAGE_OVERRIDES, space-separated)")
	cmd.Flags().StringVar(&f.RegistryImage, "registry-image", os.Getenv("KINDLAB_REGISTRY_IMAGE"),
		"registry image to run instead of the pinned registry:2 (default $KINDLAB_REGISTRY_IMAGE)")
	cmd.Flags().IntVar(&f.RegistryPort, "registry-port", render.DefaultRegistryPort, "host port of the shared local registry (127.0.0.1 only)")
	cmd.Flags().StringVar(&f.APIServerAddress, "api-server-address", "",
		"IP on the Docker engine's host where the API server is published and the kubeconfig points (default 127.0.0.1,\n"+
			"or the engine host's IP when DOCKER_HOST or the docker context names a remote engine)")
}

// Plan resolves the lab an argument names and renders it.
func (f *Flags) Plan(ctx context.Context, arg string) (*render.Plan, state.Store, error) {
	r, opts, store, err := f.Resolve(ctx, arg)
	if err != nil {
		return nil, state.Store{}, err
	}
	plan, err := render.Render(r, opts)
	if err != nil {
		return nil, state.Store{}, cli.WithCode(cli.ExitUsage, err)
	}
	return plan, store, nil
}

// Resolve resolves the lab an argument names and the render options the
// flags give, for the cluster --name (or the lab's name) in the default
// state directory; a fleet renders each member from them with its own
// Name and StateDir. Bad flags are usage errors.
func (f *Flags) Resolve(ctx context.Context, arg string) (*lab.Resolved, render.Options, state.Store, error) {
	c, name, err := f.Labs.LabArg(arg)
	if err != nil {
		return nil, render.Options{}, state.Store{}, err
	}
	r, err := c.Resolve(name, lab.ResolveOptions{KnownChecks: check.Names()})
	if err != nil {
		return nil, render.Options{}, state.Store{}, err
	}
	overrides, err := lab.ParseOverrides(f.ImageOverrides)
	if err != nil {
		return nil, render.Options{}, state.Store{}, cli.WithCode(cli.ExitUsage, err)
	}
	if f.RegistryPort < 1 || f.RegistryPort > 65535 {
		return nil, render.Options{}, state.Store{}, cli.Usagef("--registry-port: %d is not a port (valid: 1-65535)", f.RegistryPort)
	}
	store, err := state.Default()
	if err != nil {
		return nil, render.Options{}, state.Store{}, err
	}
	// The kind config names host paths under the state directory: kind
	// needs them absolute (KINDLAB_STATE_DIR may be relative).
	if abs, err := filepath.Abs(store.Root); err == nil {
		store.Root = abs
	}
	cluster := f.Name
	if cluster == "" {
		cluster = r.Name
	}
	apiAddr, err := f.apiServerAddress(ctx)
	if err != nil {
		return nil, render.Options{}, state.Store{}, err
	}
	return r, render.Options{
		Name:             cluster,
		StateDir:         store.ClusterDir(cluster),
		NodeImage:        f.Image,
		LocalImage:       LocalImage(ctx, store),
		RegistryPort:     f.RegistryPort,
		RegistryImage:    f.RegistryImage,
		ImageOverrides:   overrides,
		APIServerAddress: apiAddr,
	}, store, nil
}

// LocalImage answers, for render, what the engine has for a pinned
// image (a node's or the registry's): the tag `kit load` recorded, once the engine confirms that tag is
// still the image the kit carried. Without an alias no engine is opened
// (render works with no engine); with one and no engine, the pin stays.
func LocalImage(ctx context.Context, store state.Store) func(string) string {
	return func(ref string) string {
		if !kit.HasAlias(store, ref) {
			return ref
		}
		e, err := cli.Engine(ctx)
		if err != nil {
			return ref
		}
		return kit.LocalImage(ctx, e.Client(), store, ref)
	}
}

// apiServerAddress is --api-server-address, else, for a remote engine,
// its host's IP: kind publishes the API server on the engine's host, and
// that host's 127.0.0.1 is not this machine's. Resolving reads only the
// environment and the docker config (and asks ssh and DNS for the host's
// address), so render still needs no engine: the command's engine is
// opened (resolved, not contacted) and its endpoint used; one that cannot
// be resolved is left for the engine connection to report.
func (f *Flags) apiServerAddress(ctx context.Context) (string, error) {
	if f.APIServerAddress != "" {
		return f.APIServerAddress, nil
	}
	e, err := cli.Engine(ctx)
	if err != nil || !e.Endpoint().Remote() {
		return "", nil
	}
	ip, err := e.HostIP()
	if err != nil {
		return "", fmt.Errorf("the Docker engine is remote, so the API server must be published on its address: %v (pass --api-server-address IP)", err)
	}
	return ip, nil
}

func envList(key string) []string { return strings.Fields(os.Getenv(key)) }

// NewCommand returns the render command.
func NewCommand(s *cli.Streams) *cobra.Command {
	f := &Flags{}
	var out cli.Output
	cmd := &cobra.Command{
		Use:   "render LAB|FILE",
		Short: "Print the kind config, extra files and plan for a lab, without creating anything",
		Long: "Print what `kindlab up` would create for a lab: the kind cluster config (kind.x-k8s.io/v1alpha4)\n" +
			"with the feature gates, runtime config and kube-proxy mode; the files mounted into the nodes\n" +
			"(such as the apiserver's authentication config); the registry wiring; artifacts, workloads and\n" +
			"checks. No container engine is needed. `-o kind` prints only the kind config, ready for\n" +
			"`kind create cluster --config -`, and writes the files it mounts (saying so on stderr).",
		Example: "  kindlab render all-features\n  kindlab render image-volume -o json\n  kindlab render nftables -o kind | kind create cluster --config -",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, _, err := f.Plan(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			// A node image without containerd's config_path ignores the
			// registry wiring; say so when the engine has the image (render
			// pulls nothing and needs no engine otherwise).
			if plan.Registry != nil {
				if e, err := cli.Engine(cmd.Context()); err == nil {
					if f := doctor.RegistryWiring(cmd.Context(), e, plan.NodeImage); f != nil && f.Level == doctor.Warn {
						fmt.Fprintf(s.ErrOut, "warning: %s: %s; fix: %s\n", f.Detail, f.Affects, f.Fix)
					}
				}
			}
			switch out.Format {
			case "json":
				return cli.PrintJSON(s.Out, plan)
			case "kind":
				b, err := plan.KindConfigYAML()
				if err != nil {
					return err
				}
				// The config is for plain kind (`| kind create cluster
				// --config -`), which mounts these host paths as they are:
				// they must exist, or the apiserver starts without its
				// authentication config. (`up` puts them in a volume on the
				// engine instead, which works on remote engines too.)
				for _, f := range plan.Files {
					if err := state.WriteFile(f.HostPath, f.Content); err != nil {
						return fmt.Errorf("write %s, which the kind config mounts: %w", f.HostPath, err)
					}
					fmt.Fprintf(s.ErrOut, "kindlab render: wrote %s (from %s); the kind config mounts it at %s\n",
						f.HostPath, f.Source, f.ContainerPath)
				}
				// The shim's binary is mounted too: without it the nodes'
				// kubelets have no CRI socket.
				if c := plan.CRIShim; c != nil {
					if err := up.CopyCRIShim(c); err != nil {
						return err
					}
					fmt.Fprintf(s.ErrOut, "kindlab render: copied %s to %s; the kind config mounts it at %s on every node (the CRI shim)\n",
						c.Binary, c.HostBinary, c.NodeBinary)
				}
				_, err = s.Out.Write(b)
				return err
			}
			return printPlan(s.Out, plan)
		},
	}
	f.AddFlags(cmd)
	out.AddFlag(cmd, "text", "json", "kind")
	return cmd
}

func printPlan(w io.Writer, p *render.Plan) error {
	kind, err := p.KindConfigYAML()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "# Lab %s (merged from: %s)\n", p.Lab, strings.Join(p.Labs, ", "))
	fmt.Fprintf(w, "# Cluster %s, kubeconfig context %s, node image %s\n", p.ClusterName, p.Context, p.NodeImage)
	fmt.Fprintf(w, "# --- kind config ---\n%s", kind)
	for _, file := range p.Files {
		fmt.Fprintf(w, "# --- file %s (from %s), mounted at %s ---\n%s", file.HostPath, file.Source, file.ContainerPath, file.Content)
		if !strings.HasSuffix(file.Content, "\n") {
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w, "# --- plan ---")
	step := 1
	say := func(format string, args ...any) {
		fmt.Fprintf(w, "# %d. %s\n", step, fmt.Sprintf(format, args...))
		step++
	}
	if c := p.CRIShim; c != nil {
		say("check that %s is a static Linux executable for the engine's architecture; copy it to %s", c.Binary, c.HostBinary)
	}
	say("create kind cluster %s: %d nodes", p.ClusterName, len(p.Config.Nodes))
	if c := p.CRIShim; c != nil {
		say("every node runs kindlab's CRI shim (%s: %s cri-shim, mounted read-only from %s): the kubelet talks CRI to %s, "+
			"the shim forwards every call to containerd at %s unchanged except that image-volume mounts are made read-only, "+
			"which Kubernetes 1.31 needs on containerd 2.1+ (spec.containerRuntime.imageVolumeReadOnlyShim; 1.32+ or CRI-O need no shim)",
			c.Unit, c.NodeBinary, c.HostBinary, c.Endpoint, c.RuntimeEndpoint)
	}
	if r := p.Registry; r != nil {
		say("start (from %s) or reuse registry container %s on 127.0.0.1:%d, join it to the kind network", r.Image, r.Container, r.HostPort)
		say("write %s on every node: %s", r.CertsDPath, strings.TrimSpace(r.HostsToml))
		say("create ConfigMap kube-public/local-registry-hosting (localRegistryHosting.v1: %s)", strings.ReplaceAll(strings.TrimSpace(r.ConfigMap), "\n", ", "))
	}
	for _, a := range p.Artifacts {
		say("build artifact %s from %s, push to %s", a.Name, a.Source, a.Reference)
	}
	if len(p.Workloads) > 0 {
		say("apply workloads (server-side apply): %s", strings.Join(p.Workloads, ", "))
	}
	if len(p.Checks) > 0 {
		say("run checks: %s", strings.Join(p.Checks, ", "))
	}
	return nil
}
