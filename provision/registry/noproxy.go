package registry

import (
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
)

// The proxy variables kind passes to the nodes when any is set, upper case
// first (sigs.k8s.io/kind v0.31.0
// pkg/cluster/internal/providers/common/proxy.go getProxyEnvs): it appends
// its own entries (the cluster's subnets, node names, .svc…) to the NO_PROXY
// it reads from this process, so extending that value extends the nodes'.
var proxyVars = []string{"HTTPS_PROXY", "HTTP_PROXY"}

// ProxyFromEnv returns the proxy kind will hand the nodes (HTTPS_PROXY,
// then HTTP_PROXY, either case) and the NO_PROXY it starts from; "" when no
// proxy is set.
func ProxyFromEnv(getenv func(string) string) (proxy, noProxy string) {
	for _, v := range proxyVars {
		if proxy = firstEnv(getenv, v); proxy != "" {
			break
		}
	}
	return proxy, firstEnv(getenv, "NO_PROXY")
}

func firstEnv(getenv func(string) string, name string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return getenv(strings.ToLower(name))
}

// NoProxyHosts are the names the nodes reach kindlab's registries by,
// which must not go through a proxy: the registry container
// (kind-registry), the pull-through caches of upstreams
// (kind-registry-proxy-docker.io…), and localhost/127.0.0.1, which the
// nodes' hosts.toml files name. Every name is a whole host: Go's proxy
// matching (golang.org/x/net/http/httpproxy), which containerd uses, has no
// prefix wildcard.
func NoProxyHosts(cacheUpstreams []string) []string {
	hosts := []string{ContainerName, "localhost", "127.0.0.1"}
	ups := append([]string(nil), cacheUpstreams...)
	for _, p := range DefaultProxies {
		ups = append(ups, p.Upstream)
	}
	sort.Strings(ups)
	for _, u := range ups {
		hosts = append(hosts, ProxyName(ContainerName, u))
	}
	return dedupe(hosts)
}

// ExtendNoProxy appends to a NO_PROXY value the hosts it lacks, keeping
// what it has and its order.
func ExtendNoProxy(current string, hosts []string) string {
	have := map[string]bool{}
	var out []string
	for _, e := range strings.Split(current, ",") {
		if e = strings.TrimSpace(e); e != "" && !have[e] {
			have[e] = true
			out = append(out, e)
		}
	}
	for _, h := range hosts {
		if !have[h] {
			have[h] = true
			out = append(out, h)
		}
	}
	return strings.Join(out, ",")
}

// SetNoProxyForNodes extends this process's NO_PROXY and no_proxy with
// NoProxyHosts when a proxy is set, before kind creates nodes (kind copies
// them into the nodes). It returns the proxy (credentials redacted) and the
// hosts added, or "" and nil when no proxy is set.
func SetNoProxyForNodes(cacheUpstreams []string) (proxy string, added []string, err error) {
	p, current := ProxyFromEnv(os.Getenv)
	if p == "" {
		return "", nil, nil
	}
	hosts := NoProxyHosts(cacheUpstreams)
	v := ExtendNoProxy(current, hosts)
	for _, name := range []string{"NO_PROXY", "no_proxy"} {
		if err := os.Setenv(name, v); err != nil {
			return "", nil, err
		}
	}
	for _, h := range hosts {
		if !strings.Contains(","+current+",", ","+h+",") {
			added = append(added, h)
		}
	}
	return RedactURL(p), added, nil
}

// RedactURL hides a password in a proxy URL (http://user:xxxxx@host:3128).
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	return u.Redacted()
}

// LoopbackProxy says whether a proxy URL names this machine's loopback,
// which inside a kind node is the node itself: the nodes cannot reach it.
func LoopbackProxy(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		u, err = url.Parse("http://" + raw) // HTTP_PROXY=host:port, as curl accepts
		if err != nil {
			return false
		}
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func dedupe(list []string) []string {
	seen := map[string]bool{}
	out := list[:0]
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
