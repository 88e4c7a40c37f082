// Package registry is `kindlab registry`: the local OCI registry every lab
// on this machine shares.
package registry

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/docker/docker/client"
	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/kit"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/offlineimage"
	"github.com/kindlab/kindlab/provision/state"
)

// NewCommand returns `kindlab registry`.
func NewCommand(s *cli.Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Manage the local OCI registry the labs share",
		Long: "Manage the local OCI registry the labs share: a distribution registry container named " + registry.ContainerName + ",\n" +
			"published on 127.0.0.1 only (default port 5001), on the docker network kind, with its data on a named volume.\n" +
			"`kindlab up` starts it for labs that ask for it; nodes pull from it as localhost:5001.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	t := &target{}
	cmd.PersistentFlags().StringVar(&t.name, "name", registry.ContainerName, "registry container name (tests)")
	cmd.PersistentFlags().StringVar(&t.network, "network", registry.NetworkName, "docker network (tests)")
	_ = cmd.PersistentFlags().MarkHidden("name")
	_ = cmd.PersistentFlags().MarkHidden("network")
	cmd.AddCommand(newStatusCommand(s, t), newUpCommand(s, t), newDownCommand(s, t), newBuildImageCommand(s))
	return cmd
}

// target is which registry the subcommands act on: the shared one, unless
// tests name their own with the hidden --name and --network.
type target struct{ name, network string }

func (t *target) options(ctx context.Context) (registry.Options, error) {
	d, err := docker(ctx)
	if err != nil {
		return registry.Options{}, err
	}
	return registry.Options{Docker: d, Name: t.name, Network: t.network}, nil
}

func newStatusCommand(s *cli.Streams, t *target) *cobra.Command {
	var out cli.Output
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the registry runs, where, and from which image",
		Example: `  kindlab registry status
  kindlab registry status -o json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o, err := t.options(c.Context())
			if err != nil {
				return err
			}
			st, err := registry.Inspect(c.Context(), o)
			if err != nil {
				return dockerErr(err)
			}
			caches, err := registry.Proxies(c.Context(), o)
			if err != nil {
				return dockerErr(err)
			}
			if out.JSON() {
				return cli.PrintJSON(s.Out, struct {
					*registry.Status
					// Proxies maps each cached upstream to the endpoint nodes use.
					Proxies map[string]string `json:"proxies,omitempty"`
				}{st, caches})
			}
			printStatus(s, st)
			for _, up := range slices.Sorted(maps.Keys(caches)) {
				fmt.Fprintf(s.Out, "  caches:     %s through %s\n", up, caches[up])
			}
			return nil
		},
	}
	out.AddFlag(cmd, "text", "json")
	return cmd
}

func printStatus(s *cli.Streams, st *registry.Status) {
	if st.Absent() {
		fmt.Fprintf(s.Out, "registry %s: absent (start it with `kindlab registry up` or `kindlab up LAB`)\n", st.Name)
		if st.Volume != "" {
			fmt.Fprintf(s.Out, "  data:       volume %s, kept for the next start (`kindlab registry down --delete-data` deletes it)\n", st.Volume)
		}
		return
	}
	fmt.Fprintf(s.Out, "registry %s: %s\n", st.Name, st.State)
	fmt.Fprintf(s.Out, "  push to:    %s (127.0.0.1:%d)\n", st.Endpoint, st.HostPort)
	fmt.Fprintf(s.Out, "  from nodes: %s\n", st.ClusterEndpoint)
	fmt.Fprintf(s.Out, "  image:      %s\n", st.Image)
	fmt.Fprintf(s.Out, "  networks:   %s\n", strings.Join(st.Networks, ", "))
	fmt.Fprintf(s.Out, "  data:       volume %s\n", st.Volume)
}

type upFlags struct {
	port  int
	image string
	out   cli.Output
	// pullThrough starts registry.DefaultProxies; proxies adds others.
	pullThrough bool
	proxies     []string
}

// AddRegistryFlags registers --registry-port and --registry-image, the
// flags `kindlab up` should share so the same words move the registry.
func AddRegistryFlags(cmd *cobra.Command, port *int, image *string) {
	cmd.Flags().IntVar(port, "registry-port", registry.DefaultHostPort, "port on 127.0.0.1 the shared registry is published on")
	def := registry.DefaultImage
	if env := os.Getenv("KINDLAB_REGISTRY_IMAGE"); env != "" {
		def = env
	}
	cmd.Flags().StringVar(image, "registry-image", def,
		"registry image; offline, run 'kindlab registry build-image' and pass "+offlineimage.Tag+" (default from $KINDLAB_REGISTRY_IMAGE)")
}

func newUpCommand(s *cli.Streams, t *target) *cobra.Command {
	f := &upFlags{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the registry, or reuse the one running",
		Long: "Start the shared registry, or reuse it: a stopped one is started, one off the kind network is connected.\n" +
			"Refuses a container named " + registry.ContainerName + " that kindlab did not create, and a port another program holds.",
		Example: `  kindlab registry up
  # Cache docker.io and registry.k8s.io layers locally (kept across labs)
  kindlab registry up --pull-through
  # Port 5001 taken on this machine
  kindlab registry up --registry-port 5002
  # No registry reachable to pull registry:2 from
  kindlab registry build-image && kindlab registry up --registry-image ` + offlineimage.Tag,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := cli.CheckPort("--registry-port", f.port); err != nil {
				return err
			}
			o, err := t.options(c.Context())
			if err != nil {
				return err
			}
			var proxies []registry.Proxy
			if f.pullThrough {
				proxies = append(proxies, registry.DefaultProxies...)
			}
			for _, p := range f.proxies {
				px, err := registry.ParseProxy(p)
				if err != nil {
					return cli.Usagef("%v", err)
				}
				proxies = append(proxies, px)
			}
			store, err := state.Default()
			if err != nil {
				return err
			}
			o.HostPort = f.port
			// After `kit load` a pinned registry image is known by tag only.
			o.Image = kit.LocalImage(c.Context(), o.Docker, store, f.image)
			st, err := registry.Ensure(c.Context(), o)
			if err != nil {
				return dockerErr(err)
			}
			var caches []*registry.Status
			for _, p := range proxies {
				ps, err := registry.EnsureProxy(c.Context(), o, p)
				if err != nil {
					return dockerErr(fmt.Errorf("pull-through cache of %s: %w", p.Upstream, err))
				}
				caches = append(caches, ps)
			}
			if f.out.JSON() {
				return cli.PrintJSON(s.Out, struct {
					*registry.Status
					Proxies []*registry.Status `json:"proxies,omitempty"`
				}{st, caches})
			}
			for i, ps := range caches {
				fmt.Fprintf(s.Out, "pull-through cache %s of %s (%s): nodes of labs brought up from now on pull %s images through it\n",
					ps.Name, proxies[i].Upstream, proxies[i].RemoteURL, proxies[i].Upstream)
			}
			verb := "reused"
			switch {
			case st.Created:
				verb = "created"
			case st.Started:
				verb = "started"
			}
			fmt.Fprintf(s.Out, "registry %s %s: push to %s, nodes pull from %s\n", st.Name, verb, st.Endpoint, st.ClusterEndpoint)
			return nil
		},
	}
	AddRegistryFlags(cmd, &f.port, &f.image)
	cmd.Flags().BoolVar(&f.pullThrough, "pull-through", false,
		"also run pull-through caches of docker.io and registry.k8s.io on the kind network, so a lab recreated downloads each layer once")
	cmd.Flags().StringArrayVar(&f.proxies, "proxy", nil, "UPSTREAM=URL: also run a pull-through cache of another registry, e.g. quay.io=https://quay.io (repeatable)")
	f.out.AddFlag(cmd, "text", "json")
	return cmd
}

func newDownCommand(s *cli.Streams, t *target) *cobra.Command {
	var deleteData, force bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove the registry and its pull-through caches (their volumes are kept unless --delete-data)",
		Long: "Remove the shared registry container. What was pushed stays on its volume for the next `registry up`\n" +
			"or `up` unless --delete-data (alias --volumes) is given. Refuses while kind clusters on the engine\n" +
			"are wired to it (their nodes pull from it), whichever state directory made them, unless --force.",
		Example: `  kindlab registry down
  kindlab registry down --delete-data --force`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o, err := t.options(c.Context())
			if err != nil {
				return err
			}
			ctx := c.Context()
			if !force {
				// The same question `kindlab down` asks before removing it.
				users, err := registry.Users(ctx, o.Docker, o.Name)
				if err != nil {
					return dockerErr(err)
				}
				if len(users) > 0 {
					return cli.Usagef("kind clusters %s are wired to registry %s (their nodes pull from it): delete them first (kindlab down LAB) or pass --force",
						strings.Join(users, ", "), o.Name)
				}
			}
			st, err := registry.Inspect(ctx, o)
			if err != nil {
				return dockerErr(err)
			}
			if err := registry.Remove(ctx, o, registry.RemoveOptions{DeleteData: deleteData}); err != nil {
				return dockerErr(err)
			}
			caches, err := registry.RemoveProxies(ctx, o, registry.RemoveOptions{DeleteData: deleteData})
			if err != nil {
				return dockerErr(err)
			}
			for _, c := range caches {
				if deleteData {
					fmt.Fprintf(s.Out, "pull-through cache %s removed, with its data\n", c)
				} else {
					fmt.Fprintf(s.Out, "pull-through cache %s removed; its data stays on its volume (--delete-data removes it)\n", c)
				}
			}
			switch {
			case st.Absent() && deleteData && st.Volume != "":
				fmt.Fprintf(s.Out, "registry %s: already absent; its data volume %s deleted\n", st.Name, st.Volume)
			case st.Absent() && st.Volume != "":
				fmt.Fprintf(s.Out, "registry %s: already absent; its data stays on volume %s (--delete-data removes it)\n", st.Name, st.Volume)
			case st.Absent():
				fmt.Fprintf(s.Out, "registry %s: already absent\n", st.Name)
			case deleteData:
				fmt.Fprintf(s.Out, "registry %s removed, with its data\n", st.Name)
			default:
				fmt.Fprintf(s.Out, "registry %s removed; its data stays on volume %s (--delete-data removes it)\n", st.Name, st.Volume)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&deleteData, "delete-data", false, "also delete the volumes holding what was pushed and what the caches hold")
	// docker compose's word for the same thing (`docker compose down -v`).
	cmd.Flags().BoolVar(&deleteData, "volumes", false, "same as --delete-data")
	cmd.Flags().BoolVar(&force, "force", false, "remove it even while kind clusters are wired to it")
	return cmd
}

func newBuildImageCommand(s *cli.Streams) *cobra.Command {
	var bin, tag string
	cmd := &cobra.Command{
		Use:   "build-image",
		Short: "Build a registry image offline from Debian's docker-registry binary and load it into Docker",
		Long: "Build a registry image without pulling anything: Debian's distribution registry binary (apt-get install\n" +
			"docker-registry, the same code as registry:2), the libraries it links and registry:2's config, loaded into\n" +
			"Docker as " + offlineimage.Tag + ". Use it with --registry-image where no registry can be pulled from.",
		Example: `  kindlab registry build-image
  kindlab registry up --registry-image ` + offlineimage.Tag,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			d, err := docker(c.Context())
			if err != nil {
				return err
			}
			got, err := offlineimage.Ensure(c.Context(), d, bin, tag)
			if err != nil {
				return dockerErr(err)
			}
			fmt.Fprintln(s.Out, got)
			return nil
		},
	}
	cmd.Flags().StringVar(&bin, "binary", offlineimage.DefaultBinary, "the distribution registry binary")
	cmd.Flags().StringVar(&tag, "tag", offlineimage.Tag, "the image tag to load it as")
	return cmd
}

// docker is the command's engine client, once the engine answers; no
// engine found or answering is exit 4.
func docker(ctx context.Context) (*client.Client, error) {
	e, err := cli.ReachableEngine(ctx)
	if err != nil {
		return nil, err
	}
	return e.Client(), nil
}

// dockerErr gives an unreachable engine its own exit code.
func dockerErr(err error) error {
	if client.IsErrConnectionFailed(err) || errors.Is(err, context.DeadlineExceeded) && strings.Contains(err.Error(), "docker") {
		return cli.WithCode(cli.ExitNoDocker, fmt.Errorf("%w (is the Docker engine running? see `kindlab doctor`)", err))
	}
	return err
}
