package app_test

import (
	"strings"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
)

// --api-server-address reaches kind's config; without it a remote engine
// (DOCKER_HOST=ssh://…) gets its host's address, since the API server is
// published there and not on this machine's 127.0.0.1. Nothing connects:
// the host is an IP, so neither ssh nor DNS is asked.
func TestRenderAPIServerAddress(t *testing.T) {
	isolate(t)
	t.Setenv("DOCKER_CONTEXT", "")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	for _, c := range []struct {
		dockerHost string
		args       []string
		want       string
	}{
		{"unix:///var/run/docker.sock", nil, "apiServerAddress: 127.0.0.1"},
		{"unix:///var/run/docker.sock", []string{"--api-server-address", "192.0.2.5"}, "apiServerAddress: 192.0.2.5"},
		{"ssh://kindlab@192.0.2.7:2222", nil, "apiServerAddress: 192.0.2.7"},
		{"ssh://kindlab@192.0.2.7", []string{"--api-server-address", "198.51.100.1"}, "apiServerAddress: 198.51.100.1"},
	} {
		t.Setenv("DOCKER_HOST", c.dockerHost)
		code, out, errOut := run(t, append([]string{"render", "nftables", "-o", "kind"}, c.args...)...)
		if code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("DOCKER_HOST=%s %v: exit %d, want %q in:\n%s%s", c.dockerHost, c.args, code, c.want, out, errOut)
		}
		// Another address than this machine's loopback: the engine picks the
		// port on its host (kind would try to listen on that address here).
		if remote := c.want != "apiServerAddress: 127.0.0.1"; remote != strings.Contains(out, "apiServerPort: -1") {
			t.Errorf("DOCKER_HOST=%s %v: apiServerPort -1 in the config is %v, want %v:\n%s", c.dockerHost, c.args, !remote, remote, out)
		}
	}
	t.Setenv("DOCKER_HOST", "")
	code, _, errOut := run(t, "render", "nftables", "--api-server-address", "not-an-ip")
	if code != cli.ExitUsage || !strings.Contains(errOut, "--api-server-address") {
		t.Errorf("a host name: exit %d %q", code, errOut)
	}
}
