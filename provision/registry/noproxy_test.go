package registry_test

import (
	"net/url"
	"os"
	"strings"
	"testing"

	"golang.org/x/net/http/httpproxy"

	"github.com/kindlab/kindlab/provision/registry"
)

// TestNoProxyForNodes: behind a proxy, the NO_PROXY kind copies into the
// nodes (kind v0.31.0 pkg/cluster/internal/providers/common/proxy.go reads
// this process's and appends to it) keeps the user's entries and gains the
// registry, its caches and localhost, so that containerd, which decides with
// Go's proxy matching (golang.org/x/net/http/httpproxy), reaches them
// directly and still sends upstream pulls to the proxy.
func TestNoProxyForNodes(t *testing.T) {
	t.Setenv("HTTP_PROXY", "")
	t.Setenv("http_proxy", "")
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("https_proxy", "http://me:s3cret@proxy.corp:3128")
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "corp.internal,10.0.0.0/8")

	proxy, added, err := registry.SetNoProxyForNodes([]string{"quay.io"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(proxy, "s3cret") || !strings.Contains(proxy, "proxy.corp:3128") {
		t.Errorf("proxy shown as %q", proxy)
	}
	if len(added) == 0 {
		t.Fatal("nothing added")
	}
	noProxy := os.Getenv("NO_PROXY")
	if os.Getenv("no_proxy") != noProxy || !strings.HasPrefix(noProxy, "corp.internal,10.0.0.0/8,") {
		t.Fatalf("NO_PROXY %q, no_proxy %q: the user's entries must come first, both set", noProxy, os.Getenv("no_proxy"))
	}
	cfg := httpproxy.Config{HTTPProxy: "http://proxy.corp:3128", HTTPSProxy: "http://proxy.corp:3128", NoProxy: noProxy}
	proxyFor := cfg.ProxyFunc()
	for target, direct := range map[string]bool{
		"http://kind-registry:5000/v2/":                     true,
		"http://kind-registry-proxy-docker.io:5000/v2/":     true,
		"http://kind-registry-proxy-registry.k8s.io:5000/":  true,
		"http://kind-registry-proxy-quay.io:5000/v2/":       true,
		"http://localhost:5001/v2/":                         true,
		"https://git.corp.internal/":                        true,
		"https://registry.k8s.io/v2/":                       false,
		"https://registry-1.docker.io/v2/":                  false,
		"http://kind-registry-proxy-ghcr.io-not-ours:5000/": false,
	} {
		u, _ := url.Parse(target)
		p, err := proxyFor(u)
		if err != nil {
			t.Fatal(err)
		}
		if direct != (p == nil) {
			t.Errorf("%s: proxy %v, want direct=%t (NO_PROXY %s)", target, p, direct, noProxy)
		}
	}
	// A second up adds nothing twice.
	if _, again, _ := registry.SetNoProxyForNodes([]string{"quay.io"}); len(again) != 0 || os.Getenv("NO_PROXY") != noProxy {
		t.Errorf("second call added %v: %s", again, os.Getenv("NO_PROXY"))
	}
}

func TestNoProxyWithoutProxyChangesNothing(t *testing.T) {
	for _, v := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"} {
		t.Setenv(v, "")
	}
	t.Setenv("NO_PROXY", "x")
	if p, added, err := registry.SetNoProxyForNodes(nil); p != "" || added != nil || err != nil || os.Getenv("NO_PROXY") != "x" {
		t.Errorf("got %q %v %v, NO_PROXY %q", p, added, err, os.Getenv("NO_PROXY"))
	}
}

func TestLoopbackProxy(t *testing.T) {
	for raw, want := range map[string]bool{
		"http://127.0.0.1:3128": true, "http://localhost:3128": true, "http://[::1]:3128": true, "127.0.0.1:3128": true,
		"http://172.17.0.1:3128": false, "http://proxy.corp:3128": false,
	} {
		if got := registry.LoopbackProxy(raw); got != want {
			t.Errorf("LoopbackProxy(%q) = %t", raw, got)
		}
	}
}
