package registry

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
)

// LabelProxy marks a pull-through cache; its value is the upstream host.
const LabelProxy = "dev.kindlab.registry.proxy"

// Proxy is a pull-through cache of one upstream registry, as k3d's
// --proxy-remote-url and ctlptl's pull-through registries run it: a
// distribution registry in proxy mode (one upstream per container, as
// distribution allows), on the kind network, its cache on a volume that
// outlives labs, so a lab recreated on a connected machine downloads each
// layer once.
type Proxy struct {
	// Upstream is the registry host images name, e.g. docker.io.
	Upstream string `json:"upstream"`
	// RemoteURL is where the cache fetches from, e.g. https://registry-1.docker.io.
	RemoteURL string `json:"remoteURL"`
}

// DefaultProxies are the caches `--pull-through` starts.
var DefaultProxies = []Proxy{
	{Upstream: "docker.io", RemoteURL: "https://registry-1.docker.io"},
	{Upstream: "registry.k8s.io", RemoteURL: "https://registry.k8s.io"},
}

// ProxyName is the container name of the cache of upstream beside the
// registry named registry (kind-registry-proxy-docker.io).
func ProxyName(registry, upstream string) string { return registry + "-proxy-" + upstream }

// ParseProxy parses HOST=URL (what --proxy takes).
func ParseProxy(s string) (Proxy, error) {
	host, url, ok := strings.Cut(s, "=")
	if !ok || host == "" || strings.ContainsAny(host, "/ ") || !(strings.HasPrefix(url, "https://") || strings.HasPrefix(url, "http://")) {
		return Proxy{}, fmt.Errorf("--proxy %q: want UPSTREAM=URL, e.g. docker.io=https://registry-1.docker.io", s)
	}
	return Proxy{Upstream: host, RemoteURL: url}, nil
}

// EnsureProxy starts (or reuses) the pull-through cache of p.Upstream
// beside the registry opts names (its image, network and engine too).
func EnsureProxy(ctx context.Context, opts Options, p Proxy) (*Status, error) {
	if opts.Name == "" {
		opts.Name = ContainerName
	}
	opts.Name, opts.Volume, opts.HostPort = ProxyName(opts.Name, p.Upstream), "", 0
	opts.proxy = &p
	return Ensure(ctx, opts)
}

// Proxies lists the running pull-through caches beside the registry opts
// names: upstream host → the endpoint nodes reach it at.
func Proxies(ctx context.Context, opts Options) (map[string]string, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cs, err := o.Docker.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelProxy))})
	if err != nil {
		return nil, fmt.Errorf("list pull-through caches: %w", err)
	}
	out := map[string]string{}
	for _, c := range cs {
		up := c.Labels[LabelProxy]
		if c.Labels[LabelOwner] != "true" || len(c.Names) == 0 || strings.TrimPrefix(c.Names[0], "/") != ProxyName(o.Name, up) {
			continue
		}
		out[up] = fmt.Sprintf("%s:%d", ProxyName(o.Name, up), ContainerPort)
	}
	return out, nil
}

// RemoveProxies removes every pull-through cache (with DeleteData, their
// caches too).
func RemoveProxies(ctx context.Context, opts Options, ro RemoveOptions) ([]string, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cs, err := o.Docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelProxy))})
	if err != nil {
		return nil, fmt.Errorf("list pull-through caches: %w", err)
	}
	var removed []string
	for _, c := range cs {
		up := c.Labels[LabelProxy]
		if c.Labels[LabelOwner] != "true" || up == "" || len(c.Names) == 0 || strings.TrimPrefix(c.Names[0], "/") != ProxyName(o.Name, up) {
			continue
		}
		po := o
		po.Name, po.Volume, po.HostPort, po.proxy = ProxyName(o.Name, up), "", 0, &Proxy{Upstream: up}
		if err := Remove(ctx, po, ro); err != nil {
			return removed, err
		}
		removed = append(removed, po.Name)
	}
	sort.Strings(removed)
	return removed, nil
}
