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
	volume := "kindlab-clitest-" + id + "-data"
	if !strings.Contains(out, "its data stays on volume "+volume) {
		t.Errorf("down did not name the volume it kept: %s", out)
	}
	out, _, _ = run(t, append([]string{"status"}, target...)...)
	if !strings.Contains(out, "absent") || !strings.Contains(out, "volume "+volume+", kept") {
		t.Errorf("status after down: %s", out)
	}
	out, _, _ = run(t, append([]string{"status", "-o", "json"}, target...)...)
	if !strings.Contains(out, `"volume": "`+volume+`"`) {
		t.Errorf("status -o json after down does not name the kept volume: %s", out)
	}
	// docker compose's word: --volumes is --delete-data.
	out, errOut, code = run(t, append([]string{"down", "--volumes"}, target...)...)
	if code != 0 || !strings.Contains(out, "already absent; its data volume "+volume+" deleted") {
		t.Fatalf("down --volumes: exit %d: %s %s", code, out, errOut)
	}
	if _, err := c.VolumeInspect(context.Background(), volume); err == nil {
		t.Errorf("volume %s still there after down --volumes", volume)
	}
	out, _, _ = run(t, append([]string{"status"}, target...)...)
	if strings.Contains(out, volume) {
		t.Errorf("status after down --volumes still names %s: %s", volume, out)
	}
}
