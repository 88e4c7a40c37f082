package app_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The CRI shim's verb is for the nodes' systemd, not for people: hidden
// from help, and a bad endpoint is a usage error in one line.
func TestCRIShimVerb(t *testing.T) {
	isolate(t)
	_, out, _ := run(t, "--help")
	if strings.Contains(out, "cri-shim") {
		t.Errorf("help lists the hidden cri-shim verb:\n%s", out)
	}
	code, _, errOut := run(t, "cri-shim", "--listen", "tcp://127.0.0.1:1")
	if code != 2 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 ||
		!strings.Contains(errOut, `--listen: "tcp://127.0.0.1:1" is not a unix socket endpoint (valid: unix:///absolute/path.sock)`) {
		t.Errorf("bad --listen: exit %d, %q", code, errOut)
	}
}

// up refuses, before creating anything, a lab whose CRI shim binary the
// nodes could not run: a dynamically linked executable (a real engine is
// asked its architecture; no cluster is made).
func TestUpRefusesDynamicShimBinary(t *testing.T) {
	if exec.Command("docker", "version").Run() != nil {
		if os.Getenv("KINDLAB_REQUIRE_DOCKER") == "1" {
			t.Fatal("no Docker engine answers (and KINDLAB_REQUIRE_DOCKER=1 forbids skipping)")
		}
		t.Skip("no Docker engine answers")
	}
	dir := isolate(t)
	ls, _ := exec.LookPath("ls")
	t.Setenv("KINDLAB_CRI_SHIM_BINARY", ls)
	name := "kindlab-clitest-shim"
	code, _, errOut := run(t, "up", "image-volume", "--name", name)
	last := lastLine(errOut)
	if code == 0 || !strings.HasPrefix(last, "ERROR: kindlab at "+ls+" is dynamically linked") || !strings.Contains(last, "CGO_ENABLED=0 go build") {
		t.Errorf("exit %d, last line %q", code, last)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "state", "clusters")); len(entries) != 0 {
		t.Errorf("state left behind: %v", entries)
	}
	if left, _ := exec.Command("docker", "ps", "-a", "--filter", "label=io.x-k8s.kind.cluster="+name, "--format", "{{.Names}}").Output(); len(strings.TrimSpace(string(left))) != 0 {
		t.Errorf("nodes created: %s", left)
	}
}
