package engine_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/provision/engine"
)

// writeContext stores a context the way `docker context create` does:
// contexts/meta/<sha256 of the name>/meta.json.
func writeContext(t *testing.T, configDir, name, host string, skipTLS bool) {
	t.Helper()
	sum := sha256.Sum256([]byte(name))
	dir := filepath.Join(configDir, "contexts", "meta", hex.EncodeToString(sum[:]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	skip := "false"
	if skipTLS {
		skip = "true"
	}
	meta := `{"Name":"` + name + `","Metadata":{"Description":"test"},"Endpoints":{"docker":{"Host":"` + host + `","SkipTLSVerify":` + skip + `}}}`
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), []byte(meta), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeCurrent(t *testing.T, configDir, name string) {
	t.Helper()
	if err := os.MkdirAll(configDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := `{"auths":{},"currentContext":"` + name + `"}`
	if err := os.WriteFile(filepath.Join(configDir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestResolveOrder is the docker CLI's order: DOCKER_HOST, then
// DOCKER_CONTEXT, then currentContext in $DOCKER_CONFIG/config.json
// (default ~/.docker), then the local socket.
func TestResolveOrder(t *testing.T) {
	cfg := t.TempDir()
	writeContext(t, cfg, "ctx-a", "ssh://alice@a.example:2222", false)
	writeContext(t, cfg, "ctx-b", "tcp://b.example:2376", true)
	writeCurrent(t, cfg, "ctx-a")
	t.Setenv("DOCKER_CONFIG", cfg)

	t.Setenv("DOCKER_HOST", "ssh://env@env.example")
	t.Setenv("DOCKER_CONTEXT", "ctx-b")
	ep := resolve(t)
	if ep.Host != "ssh://env@env.example" || ep.Source != engine.SourceEnv || ep.FromContext() {
		t.Errorf("DOCKER_HOST does not win: %+v", ep)
	}

	t.Setenv("DOCKER_HOST", "")
	ep = resolve(t)
	if ep.Host != "tcp://b.example:2376" || ep.Context != "ctx-b" || ep.ContextFrom != "DOCKER_CONTEXT" || !ep.SkipTLSVerify || !ep.FromContext() {
		t.Errorf("DOCKER_CONTEXT does not win over currentContext: %+v", ep)
	}

	t.Setenv("DOCKER_CONTEXT", "")
	ep = resolve(t)
	if ep.Host != "ssh://alice@a.example:2222" || ep.Context != "ctx-a" || ep.ContextFrom != filepath.Join(cfg, "config.json") {
		t.Errorf("currentContext not used: %+v", ep)
	}
	if !strings.Contains(ep.String(), `docker context "ctx-a"`) {
		t.Errorf("String() does not name the context: %s", ep)
	}

	t.Setenv("DOCKER_CONTEXT", "default")
	if ep = resolve(t); ep.Host != engine.DefaultHost || ep.Source != engine.SourceDefault {
		t.Errorf("context default: %+v", ep)
	}

	t.Setenv("DOCKER_CONTEXT", "no-such-context")
	_, err := engine.Resolve()
	if err == nil || !strings.Contains(err.Error(), `"no-such-context"`) || !strings.Contains(err.Error(), "DOCKER_CONTEXT") || strings.Contains(err.Error(), "\n") {
		t.Errorf("a missing context: %v", err)
	}
	t.Setenv("DOCKER_CONTEXT", "")

	// No DOCKER_CONFIG: ~/.docker.
	home := t.TempDir()
	writeContext(t, filepath.Join(home, ".docker"), "ctx-home", "ssh://home.example", false)
	writeCurrent(t, filepath.Join(home, ".docker"), "ctx-home")
	t.Setenv("DOCKER_CONFIG", "")
	t.Setenv("HOME", home)
	if ep = resolve(t); ep.Host != "ssh://home.example" {
		t.Errorf("~/.docker/config.json not read: %+v", ep)
	}

	// Nothing anywhere: the local socket.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if ep = resolve(t); ep.Host != engine.DefaultHost || ep.Remote() {
		t.Errorf("empty config: %+v", ep)
	}
}

func resolve(t *testing.T) engine.Endpoint {
	t.Helper()
	ep, err := engine.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func TestRemoteAndHostname(t *testing.T) {
	for _, c := range []struct {
		host   string
		remote bool
		name   string
	}{
		{"unix:///var/run/docker.sock", false, ""},
		{"npipe:////./pipe/docker_engine", false, ""},
		{"ssh://user@host:22", true, "host"},
		{"ssh://host", true, "host"},
		{"ssh://user@[::1]:22", true, "::1"},
		{"tcp://192.0.2.1:2376", true, "192.0.2.1"},
	} {
		ep := engine.Endpoint{Host: c.host}
		if ep.Remote() != c.remote || ep.Hostname() != c.name {
			t.Errorf("%s: remote %v hostname %q, want %v %q", c.host, ep.Remote(), ep.Hostname(), c.remote, c.name)
		}
	}
	for host, want := range map[string]string{"ssh://root@127.0.0.1:22": "127.0.0.1", "tcp://localhost:2375": "127.0.0.1"} {
		ip, err := engine.Endpoint{Host: host}.HostIP()
		if err != nil || ip != want {
			t.Errorf("%s: HostIP %q %v, want %s", host, ip, err, want)
		}
	}
}

func TestClientRefusesBadEndpoints(t *testing.T) {
	for _, host := range []string{"foo://x", "ssh://user:secret@host", "no-scheme"} {
		_, err := engine.Open(context.Background(), engine.WithEndpoint(engine.Endpoint{Host: host, Source: engine.SourceEnv}))
		if err == nil || !strings.Contains(err.Error(), "DOCKER_HOST") || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: %v", host, err)
		}
	}
	// A context that skips TLS verification makes an https client.
	e, err := engine.Open(context.Background(), engine.WithEndpoint(engine.Endpoint{Host: "tcp://192.0.2.1:2376", Source: engine.SourceContext, Context: "x", SkipTLSVerify: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c := e.Client()
	if c.DaemonHost() != "tcp://192.0.2.1:2376" {
		t.Errorf("DaemonHost %s", c.DaemonHost())
	}
}

// TestResolveRefusesOtherProviders: every Engine API client kindlab makes
// goes through Resolve, so a KIND_EXPERIMENTAL_PROVIDER the kind CLI would
// obey (sigs.k8s.io/kind v0.31.0 pkg/internal/runtime/runtime.go) and
// kindlab cannot is refused there too, not only by the CLI.
func TestResolveRefusesOtherProviders(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
	for v, ok := range map[string]bool{"": true, "docker": true, "podman": false, "nerdctl": false, "finch": false, "bogus": false} {
		t.Setenv(engine.ProviderEnv, v)
		_, err := engine.Resolve()
		var upe *engine.UnsupportedProviderError
		if ok && err != nil || !ok && !errors.As(err, &upe) {
			t.Errorf("%s=%q: Resolve error %v", engine.ProviderEnv, v, err)
		}
	}
}
