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
// goes through Resolve or Open, so a KIND_EXPERIMENTAL_PROVIDER the kind CLI
// would obey (sigs.k8s.io/kind v0.31.0 pkg/internal/runtime/runtime.go) and
// kindlab does not drive is refused there too, not only by the CLI; podman
// resolves podman's socket, not DOCKER_HOST.
func TestResolveRefusesOtherProviders(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
	t.Setenv(engine.PodmanHostEnv, "")
	for v, want := range map[string]string{"": "unix:///var/run/docker.sock", "docker": "unix:///var/run/docker.sock",
		"podman": engine.PodmanSocket(), "nerdctl": "", "finch": "", "nerdctl.lima": "", "bogus": "", "Docker": ""} {
		t.Setenv(engine.ProviderEnv, v)
		ep, err := engine.Resolve()
		var upe *engine.UnsupportedProviderError
		switch {
		case want != "" && (err != nil || ep.Host != want):
			t.Errorf("%s=%q: Resolve %+v, %v; want %s", engine.ProviderEnv, v, ep, err, want)
		case want == "" && (!errors.As(err, &upe) || upe.Value != v || upe.Source != engine.ProviderEnv):
			t.Errorf("%s=%q: Resolve error %v", engine.ProviderEnv, v, err)
		}
	}
}

// TestChooseProvider: the flag wins over the variable, either may be docker
// or podman, nothing else; a refusal is one line naming where the value came
// from and the valid values.
func TestChooseProvider(t *testing.T) {
	for _, c := range []struct {
		flag, env, want, err string
	}{
		{"", "", "docker", ""},
		{"", "docker", "docker", ""},
		{"", "podman", "podman", ""},
		{"podman", "", "podman", ""},
		{"docker", "podman", "docker", ""},
		{"podman", "nerdctl", "podman", ""}, // the flag decides; the variable is not read
		{"", "nerdctl", "", `KIND_EXPERIMENTAL_PROVIDER="nerdctl": kindlab drives the docker and podman node providers only (valid: docker, podman; unset KIND_EXPERIMENTAL_PROVIDER for docker)`},
		{"finch", "podman", "", `--provider "finch": not a node provider kindlab drives (valid: docker, podman)`},
	} {
		t.Setenv(engine.ProviderEnv, c.env)
		got, err := engine.ChooseProvider(c.flag)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if got != c.want || msg != c.err {
			t.Errorf("flag %q, %s=%q: %q, %q; want %q, %q", c.flag, engine.ProviderEnv, c.env, got, msg, c.want, c.err)
		}
	}
}

// TestResolvePodman follows podman's own order: CONTAINER_HOST, else the
// rootful socket (root) or $XDG_RUNTIME_DIR's; DOCKER_HOST and docker
// contexts do not apply. An ssh:// CONTAINER_HOST is refused in one line.
func TestResolvePodman(t *testing.T) {
	t.Setenv(engine.ProviderEnv, "podman")
	t.Setenv("DOCKER_HOST", "tcp://docker.example:2376")
	t.Setenv(engine.PodmanHostEnv, "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1234")
	want := "unix:///run/user/1234/podman/podman.sock"
	if os.Geteuid() == 0 {
		want = engine.PodmanDefaultRootSocket
	}
	ep := resolve(t)
	if ep.Host != want || ep.Source != engine.SourcePodmanDefault || !ep.Podman || ep.Remote() || ep.String() != want+" (podman)" {
		t.Errorf("default: %+v %s, want %s", ep, ep, want)
	}
	t.Setenv(engine.PodmanHostEnv, "tcp://192.0.2.7:8888")
	if ep = resolve(t); ep.Host != "tcp://192.0.2.7:8888" || ep.Source != engine.SourcePodmanEnv || !ep.Remote() || ep.Hostname() != "192.0.2.7" {
		t.Errorf("CONTAINER_HOST: %+v", ep)
	}
	e, err := engine.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if e.Provider() != "podman" || e.Client().DaemonHost() != "tcp://192.0.2.7:8888" || e.Kind() == nil {
		t.Errorf("Open: provider %s, host %s", e.Provider(), e.Client().DaemonHost())
	}
	e.Close()
	t.Setenv(engine.PodmanHostEnv, "ssh://core@pod.example:22/run/podman/podman.sock")
	_, err = engine.Resolve()
	if err == nil || !strings.HasPrefix(err.Error(), `CONTAINER_HOST="ssh://core@pod.example:22/run/podman/podman.sock": kindlab reaches podman over unix:// or tcp:// only`) || strings.Contains(err.Error(), "\n") {
		t.Errorf("ssh CONTAINER_HOST: %v", err)
	}
	_, err = engine.Open(context.Background())
	if err = engine.Unreachable(err); !errors.Is(err, engine.ErrNoEngine) || !strings.Contains(err.Error(), "CONTAINER_HOST") {
		t.Errorf("Open with an ssh CONTAINER_HOST, reported: %v", err)
	}
}
