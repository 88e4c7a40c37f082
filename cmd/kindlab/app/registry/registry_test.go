package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/cmd/kindlab/app/registry"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	s := &cli.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	code := cli.Execute(context.Background(), registry.NewCommand(s), s, args)
	return out.String(), errOut.String(), code
}

func TestUpStatusDown(t *testing.T) {
	c := registrytest.Docker(t)
	image := registrytest.RegistryImage(t, c)
	id := fmt.Sprintf("%x", rand.Uint32())
	target := []string{"--name", "kindlab-clitest-" + id, "--network", "kindlab-clitest-net-" + id}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	t.Cleanup(func() {
		run(t, append([]string{"down", "--force", "--delete-data"}, target...)...)
		_ = c.NetworkRemove(context.Background(), "kindlab-clitest-net-"+id)
	})

	out, errOut, code := run(t, append([]string{"up", "--registry-port", fmt.Sprint(port), "--registry-image", image}, target...)...)
	if code != 0 || !strings.Contains(out, "created") {
		t.Fatalf("up: exit %d: %s %s", code, out, errOut)
	}
	out, errOut, code = run(t, append([]string{"status", "-o", "json"}, target...)...)
	var st struct {
		State    string `json:"state"`
		Running  bool   `json:"running"`
		HostPort int    `json:"hostPort"`
		Endpoint string `json:"endpoint"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
		t.Fatalf("status: exit %d %v: %s %s", code, err, out, errOut)
	}
	if !st.Running || st.HostPort != port || st.Endpoint != fmt.Sprintf("localhost:%d", port) {
		t.Errorf("status %+v", st)
	}
	out, _, code = run(t, append([]string{"up", "--registry-port", fmt.Sprint(port), "--registry-image", image}, target...)...)
	if code != 0 || !strings.Contains(out, "reused") {
		t.Errorf("second up: exit %d: %s", code, out)
	}
	out, errOut, code = run(t, append([]string{"down", "--force"}, target...)...)
	if code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("down: exit %d: %s %s", code, out, errOut)
	}
	out, _, _ = run(t, append([]string{"status"}, target...)...)
	if !strings.Contains(out, "absent") {
		t.Errorf("status after down: %s", out)
	}
}
