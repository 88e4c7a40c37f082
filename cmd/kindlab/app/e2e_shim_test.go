package app_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindlab/kindlab/provision/crishim"
	"github.com/kindlab/kindlab/provision/registry"
)

// The image-volume lab on one node, with kindlab's CRI shim (as the
// image-volume lab has it) and without (fixtures/labs).
const (
	shimLab   = "../../../fixtures/labs/image-volume-one-node.yaml"
	noShimLab = "../../../fixtures/labs/image-volume-no-shim.yaml"
	// shimOnlyLab has the shim and no registry: its failed up leaves the
	// shared registry (and the offline images in it) alone.
	shimOnlyLab = "../../../fixtures/labs/cri-shim-only.yaml"
)

// downArgs takes a test cluster down, keeping the shared registry when it
// ran before the test: it holds what others pushed (the offline images).
func downArgs(name string, registryBefore bool) []string {
	args := []string{"down", "--name", name}
	if registryBefore {
		args = append(args, "--keep-registry")
	}
	return args
}

type upResult struct {
	Created bool
	Checks  []struct {
		Name, Status, Reason string
		Details              []string
	}
}

// TestEndToEndImageVolumeShim runs the image-volume lab on a stock kind
// node image (containerd 2.2.0, unpatched) three ways: with a shim binary
// that cannot serve, `up` fails in one line naming the node, the shim and
// its saved log, and leaves nothing; with kindlab's CRI shim the artifact
// mounts, the check reads its file and `kubectl exec` shows it, read-only;
// with the shim switched off containerd refuses the mount and the check
// says so in containerd's words.
func TestEndToEndImageVolumeShim(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	img := requireE2E(t)
	dir := isolate(t)
	name := "kindlab-e2e-shim"
	registryBefore := containerExists(registry.ContainerName)
	t.Cleanup(func() { run(t, downArgs(name, registryBefore)...) })
	node := name + "-control-plane"
	noneLeft := func(what string) {
		t.Helper()
		left, _ := exec.Command("docker", "ps", "-a", "--filter", "label=io.x-k8s.kind.cluster="+name, "--format", "{{.Names}}").Output()
		if s := strings.TrimSpace(string(left)); s != "" {
			t.Errorf("%s: nodes left behind: %s", what, s)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "state", "clusters")); len(entries) != 0 {
			t.Errorf("%s: state left behind: %v", what, entries)
		}
		if kc, _ := os.ReadFile(filepath.Join(dir, "kubeconfig")); strings.Contains(string(kc), "kind-"+name) {
			t.Errorf("%s: kubeconfig context left behind", what)
		}
	}

	// 1. A shim that cannot start. Debian's static busybox passes the
	// binary check (a static x86-64 executable) but, mounted as
	// /opt/kindlab/bin/kindlab and run by the node's systemd, it exits at
	// once: "kindlab: applet not found".
	if _, err := os.Stat("/usr/bin/busybox"); err != nil {
		t.Fatal("/usr/bin/busybox not installed (make deps installs busybox-static)")
	}
	shim := os.Getenv(crishim.BinaryEnv)
	t.Setenv(crishim.BinaryEnv, "/usr/bin/busybox")
	start := time.Now()
	code, _, errOut := run(t, "up", shimOnlyLab, "--name", name, "--image", img)
	took := time.Since(start).Round(time.Second)
	t.Logf("up with a shim that cannot start: exit %d after %s\n%s", code, took, errOut)
	last := lastLine(errOut)
	logFile := filepath.Join(dir, "state", "logs", name, node+"-kindlab-cri-shim.log")
	if code == 0 || !strings.HasPrefix(last, "ERROR: node "+node+": kindlab's CRI shim (kindlab-cri-shim.service") ||
		!strings.Contains(last, "did not start: kindlab: applet not found") || !strings.Contains(last, "its log is saved in "+logFile) ||
		!strings.Contains(last, "journalctl -u kindlab-cri-shim.service") {
		t.Errorf("exit %d, last line %q: want one line naming the node, the shim, its error and its log %s", code, last, logFile)
	}
	if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), "applet not found") {
		t.Errorf("saved shim log %s: %v\n%s", logFile, err, b)
	}
	if took > 3*time.Minute {
		t.Errorf("a shim that cannot start took %s to fail up: kubeadm's wait for the kubelet must not be waited out", took)
	}
	noneLeft("after the failed up")
	t.Setenv(crishim.BinaryEnv, shim)

	// 2. With the shim: the mount works on 1.31.
	start = time.Now()
	code, out, errOut := run(t, "up", shimLab, "--name", name, "--image", img, "-o", "json")
	t.Logf("up with the shim took %s\n%s", time.Since(start).Round(time.Second), errOut)
	var res upResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 {
		t.Fatalf("up: exit %d, %v\n%s", code, err, out)
	}
	if !strings.Contains(errOut, "kindlab's CRI shim runs on 1 node(s): kubelet → unix:///run/kindlab-cri/cri.sock → containerd") {
		t.Errorf("up did not report the shim step")
	}
	logChecks(t, "shim on", res)
	if len(res.Checks) != 1 || res.Checks[0].Name != "image-volume" || res.Checks[0].Status != "pass" {
		t.Fatalf("image-volume with the shim: %+v, want pass", res.Checks)
	}
	details := strings.Join(res.Checks[0].Details, "\n")
	for _, want := range []string{
		`the container read /model/model.txt from the image volume: "kindlab example model v1 …"`,
		"mounted on Kubernetes 1.31 through kindlab's CRI shim on node " + node + " (containerd://",
		// The 1.31 kubelet names the image volume by the pulled image's ID.
		"the shim's journal on " + node + ": CreateContainer kindlab-image-volume/model-reader container read-model: image mount /model (sha256:",
	} {
		if !strings.Contains(details, want) {
			t.Errorf("check details lack %q:\n%s", want, details)
		}
	}
	kubectl := func(args ...string) (string, error) {
		b, err := exec.Command("kubectl", append([]string{"--context", "kind-" + name, "-n", "kindlab-image-volume"}, args...)...).CombinedOutput()
		return string(b), err
	}
	// Exec goes kubectl → apiserver → kubelet → the shim (CRI Exec) →
	// containerd's streaming server.
	got, err := kubectl("exec", "model-reader", "-c", "app", "--", "/agnhost", "mounttest", "--file_content=/model/model.txt")
	want, _ := os.ReadFile("../../../fixtures/image-volume/files/model/model.txt")
	t.Logf("kubectl exec model-reader -c app -- /agnhost mounttest --file_content=/model/model.txt:\n%s", got)
	if err != nil || !strings.Contains(got, string(want)) {
		t.Errorf("kubectl exec: %v; output %q, want the artifact's model.txt %q", err, got, want)
	}
	got, err = kubectl("exec", "model-reader", "-c", "app", "--", "/agnhost", "mounttest", "--new_file_0644=/model/written.txt")
	if err == nil || !strings.Contains(got, "read-only file system") {
		t.Errorf("writing into the image volume: %v %q, want the read-only mount to refuse it", err, got)
	}
	if code, _, errOut := run(t, downArgs(name, registryBefore)...); code != 0 {
		t.Fatalf("down: %s", errOut)
	}
	noneLeft("after down")

	// 3. Without the shim, stock kind on 1.31: containerd refuses.
	start = time.Now()
	code, out, errOut = run(t, "up", noShimLab, "--name", name, "--image", img, "-o", "json")
	t.Logf("up without the shim took %s\n%s", time.Since(start).Round(time.Second), errOut)
	res = upResult{}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 {
		t.Fatalf("up: exit %d, %v\n%s", code, err, out)
	}
	logChecks(t, "shim off", res)
	if strings.Contains(errOut, "CRI shim") {
		t.Errorf("a lab with the shim off ran it:\n%s", errOut)
	}
	if len(res.Checks) != 1 || res.Checks[0].Status != "unsupported" ||
		!strings.Contains(res.Checks[0].Reason, "readonly must be true while mount image") ||
		!strings.Contains(res.Checks[0].Reason, "spec.containerRuntime.imageVolumeReadOnlyShim") {
		t.Errorf("image-volume without the shim: %+v, want unsupported with containerd's message and the way to the shim", res.Checks)
	}
	if code, _, errOut := run(t, downArgs(name, registryBefore)...); code != 0 {
		t.Fatalf("down: %s", errOut)
	}
	noneLeft("after the second down")
}

// logChecks prints the check table as `kindlab check` does, one row each.
func logChecks(t *testing.T, what string, res upResult) {
	t.Helper()
	for _, c := range res.Checks {
		t.Logf("%s: check %-14s %-11s %s", what, c.Name, c.Status, c.Reason)
		for _, d := range c.Details {
			t.Logf("%s:   %s", what, d)
		}
	}
}
