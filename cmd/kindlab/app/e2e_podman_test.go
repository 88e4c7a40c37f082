package app_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/nodefiles"
)

// requirePodman skips, saying why, when podman's CLI or its API service is
// not here, unless KINDLAB_REQUIRE_PODMAN=1 makes that a failure (make e2e,
// which starts the service with .ci/podman.sh).
func requirePodman(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := exec.LookPath("podman"); err != nil {
		why = "the podman CLI is not on PATH (`make deps` installs podman)"
	} else if e, err := engine.Open(context.Background(), engine.WithProvider(engine.ProviderPodman)); err != nil {
		why = err.Error()
	} else {
		if err := e.Ping(context.Background()); err != nil {
			why = err.Error() + " (`bash .ci/podman.sh` starts it)"
		}
		e.Close()
	}
	if why == "" {
		return
	}
	if os.Getenv("KINDLAB_REQUIRE_PODMAN") == "1" {
		t.Fatalf("podman end-to-end test required but cannot run: %s", why)
	}
	t.Skipf("podman end-to-end test skipped: %s", why)
}

// podman runs the podman CLI (this machine's, as kind's podman provider
// does) and returns its standard output.
func podman(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("podman", args...).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), &podmanError{args, strings.TrimSpace(string(ee.Stderr)), err}
	}
	return string(out), err
}

type podmanError struct {
	args   []string
	stderr string
	err    error
}

func (e *podmanError) Error() string {
	return "podman " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + e.stderr
}

// podmanLab is the one-node lab with the registry, an image-volume
// artifact, agnhost workloads, the CRI shim and nftables (fixtures/labs).
const podmanLab = "../../../fixtures/labs/podman.yaml"

// TestEndToEndPodman runs a lab on kindlab's second engine
// (KIND_EXPERIMENTAL_PROVIDER=podman): kind's nodes through the podman
// CLI, kindlab's registry, kit, artifact and node calls through podman's
// Docker-compatible API service. The node, registry and workload images
// come into podman the offline way, as a kit saved from Docker and loaded
// into podman; the one-node lab comes up with its registry and artifact
// (mounted as an image volume through kindlab's CRI shim, whose files reach
// the node through the node-files volume on podman), its pods pull agnhost
// and the artifact from the lab's registry (the registry's own log shows
// the node's pulls), `check` passes, a kit saved back from podman
// (an empty kit cache, so podman's own image export) holds the same
// images, and `down` (then `registry down --delete-data`) leaves no
// container, volume, kubeconfig context or DNS entry of the lab on podman.
func TestEndToEndPodman(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	img := requireE2E(t) // Docker, with the node image: the kit's source
	requirePodman(t)
	dir := isolate(t)
	regImage := os.Getenv("KINDLAB_REGISTRY_IMAGE")
	name := "podman-e2e"
	// The podman registry's own port: Docker's lab registry may hold
	// 127.0.0.1:5001 on the same machine.
	port := freeTCPPort(t)

	// The kit, from Docker (the shared kit cache makes a second save cheap).
	// The workload images are in Docker's lab registry (make e2e's
	// offline-images); it is started for the save if it is not running, and
	// stopped again with its data kept.
	t.Setenv(engine.ProviderEnv, "")
	if running, _ := exec.Command("docker", "ps", "-q", "--filter", "name=^kind-registry$").Output(); strings.TrimSpace(string(running)) == "" {
		if code, _, errOut := run(t, "registry", "up"); code != 0 {
			t.Fatalf("registry up on docker: exit %d\n%s", code, errOut)
		}
		t.Cleanup(func() { run(t, "--provider", "docker", "registry", "down") })
	}
	kitFile := filepath.Join(dir, "one-node-kit.tar")
	start := time.Now()
	if code, _, errOut := run(t, "kit", "save", podmanLab, "--image", img, "-o", kitFile); code != 0 {
		// Docker's registry lost the workload images (a test emptied it
		// on a shared machine): the all-features kit of an earlier run
		// carries the same node, registry and agnhost images.
		prev := os.Getenv("KINDLAB_E2E_KIT")
		if _, err := os.Stat(prev); prev == "" || err != nil {
			t.Fatalf("kit save on docker: exit %d\n%s", code, errOut)
		}
		t.Logf("kit save on docker: exit %d (%s); loading %s instead", code, lastLine(errOut), prev)
		kitFile = prev
	}
	t.Logf("kit save on docker: %s", time.Since(start).Round(100*time.Millisecond))
	docker := kitDigests(t, kitFile)

	t.Setenv(engine.ProviderEnv, "podman")
	t.Cleanup(func() {
		run(t, "down", "--name", name)
		run(t, "registry", "down", "--delete-data")
	})
	// A fresh podman as far as this lab goes: the images come from the kit.
	for _, im := range []string{img, regImage} {
		if _, err := podman(t, "image", "exists", im); err == nil {
			if _, err := podman(t, "image", "rm", im); err != nil {
				t.Fatal(err)
			}
		}
	}
	networksBefore := podmanNetworks(t)

	start = time.Now()
	code, out, errOut := run(t, "kit", "load", kitFile, "--registry-port", port, "-o", "json")
	if code != 0 {
		t.Fatalf("kit load into podman: exit %d\n%s", code, errOut)
	}
	t.Logf("kit load into podman: %s", time.Since(start).Round(100*time.Millisecond))
	var loaded struct {
		Images []struct {
			Role, Reference, Into string
			AlreadyThere          bool
		}
	}
	if err := json.Unmarshal([]byte(out), &loaded); err != nil {
		t.Fatalf("kit load output %q: %v", out, err)
	}
	for _, im := range loaded.Images {
		if im.AlreadyThere && im.Role != "workload" && im.Role != "artifact" {
			t.Errorf("kit load found %s %s already in podman, which the test emptied", im.Role, im.Reference)
		}
	}
	for _, im := range []string{img, regImage} {
		if _, err := podman(t, "image", "exists", im); err != nil {
			t.Errorf("after kit load podman lacks %s: %v", im, err)
		}
	}

	start = time.Now()
	code, out, errOut = run(t, "up", podmanLab, "--name", name, "--image", img, "--registry-port", port, "-o", "json")
	t.Logf("up on podman took %s\n%s", time.Since(start).Round(time.Second), errOut)
	var res upResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("up exit %d, output %q: %v", code, out, err)
	}
	if code != 0 || !res.Created {
		t.Fatalf("up: exit %d, created %v: %s", code, res.Created, errOut)
	}
	if len(res.Checks) != 2 {
		t.Errorf("up ran %d checks, want image-volume and nftables: %+v", len(res.Checks), res.Checks)
	}
	if !strings.Contains(errOut, "kindlab's CRI shim runs on 1 node(s)") {
		t.Errorf("up did not prove the CRI shim on the node:\n%s", errOut)
	}
	vol := nodefiles.VolumeName(name)
	if mp, err := podman(t, "volume", "inspect", "-f", "{{.Mountpoint}}", vol); err != nil || !strings.HasPrefix(mp, "/") {
		t.Errorf("node-files volume %s on podman: %q %v", vol, mp, err)
	}
	for _, c := range res.Checks {
		if c.Status != "pass" {
			t.Errorf("up's check %s: %s %s", c.Name, c.Status, c.Reason)
		}
	}
	node := name + "-control-plane"
	if labels, err := podman(t, "inspect", "-f", `{{index .Config.Labels "io.x-k8s.kind.cluster"}}`, node); err != nil || strings.TrimSpace(labels) != name {
		t.Errorf("podman has no kind node %s of cluster %s: %q %v", node, name, labels, err)
	}
	if _, err := exec.Command("docker", "inspect", node).Output(); err == nil {
		t.Errorf("node %s is on Docker, not podman", node)
	}

	// The workload's pods run agnhost, which only the lab's registry holds
	// (loaded from the kit; nothing can be pulled here), and the registry
	// served the node's pulls of it.
	ids, err := podman(t, "exec", node, "kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "pods", "-n", "kindlab-nftables",
		"-o", "jsonpath={range .items[*]}{.status.phase} {.status.containerStatuses[*].imageID}{\"\\n\"}{end}")
	if err != nil || !strings.HasPrefix(ids, "Running ") || !strings.Contains(ids, "agnhost@sha256:") {
		t.Errorf("nftables echo pods: %q %v", ids, err)
	}
	logs, err := exec.Command("podman", "logs", "kind-registry").CombinedOutput()
	for _, pull := range []string{"/v2/mirror/kindlab.local/e2e-test-images/agnhost/manifests/", "/v2/kindlab/model/manifests/"} {
		if err != nil || !strings.Contains(string(logs), pull) {
			t.Errorf("the lab registry's log shows no GET %s by the node (%v):\n%s", pull, err, tail(string(logs), 20))
		}
	}

	code, out, errOut = run(t, "check", podmanLab, "--name", name, "-o", "json")
	var checked []checkResult
	if err := json.Unmarshal([]byte(out), &checked); err != nil {
		t.Fatalf("check exit %d, output %q: %v (%s)", code, out, err, errOut)
	}
	if code != 0 || len(checked) != 2 {
		t.Errorf("kindlab check: exit %d, %+v", code, checked)
	}

	// A kit saved from podman, through an empty kit cache (so from podman's
	// own image export, not blobs remembered from Docker's), holds the same
	// images and artifact as the one saved from Docker.
	t.Setenv("KINDLAB_CACHE", t.TempDir())
	kit2 := filepath.Join(dir, "from-podman.tar")
	start = time.Now()
	if code, _, errOut := run(t, "kit", "save", podmanLab, "--image", img, "--registry-port", port, "-o", kit2); code != 0 {
		t.Errorf("kit save on podman: exit %d\n%s", code, errOut)
	} else {
		t.Logf("kit save on podman: %s", time.Since(start).Round(100*time.Millisecond))
		got := kitDigests(t, kit2)
		same := 0
		for _, g := range got {
			if slices.Contains(docker, g) {
				same++
			}
		}
		// Node, registry and agnhost images at least; the artifact too
		// when both kits are of this lab.
		if same < 3 || kitFile != os.Getenv("KINDLAB_E2E_KIT") && same != len(got) {
			t.Errorf("kit from podman holds\n%s\nthe kit from docker\n%s", strings.Join(got, "\n"), strings.Join(docker, "\n"))
		}
	}

	code, out, errOut = run(t, "down", "--name", name)
	if code != 0 {
		t.Fatalf("down: exit %d: %s %s", code, out, errOut)
	}
	if code, out, errOut := run(t, "registry", "down", "--delete-data"); code != 0 {
		t.Fatalf("registry down --delete-data: exit %d: %s %s", code, out, errOut)
	}
	if left, _ := podman(t, "ps", "-aq", "--filter", "label=io.x-k8s.kind.cluster="+name); strings.TrimSpace(left) != "" {
		t.Errorf("nodes left on podman: %s", left)
	}
	if left, _ := podman(t, "ps", "-aq", "--filter", "name=^kind-registry$"); strings.TrimSpace(left) != "" {
		t.Errorf("registry container left on podman: %s", left)
	}
	// kind's /var volumes are anonymous: none may be left by the test's
	// node, nor the registry's data volume, nor the node-files volume.
	if vols, _ := podman(t, "volume", "ls", "--format", "{{.Name}} {{.Labels}}"); strings.Contains(vols, name) || strings.Contains(vols, "kind-registry-data") {
		t.Errorf("volumes left on podman:\n%s", vols)
	}
	// kind's podman provider keeps its network "kind" for every cluster (as
	// with docker); nothing may be attached to it, and no other network is new.
	if attached, _ := podman(t, "ps", "-aq", "--filter", "network=kind"); strings.TrimSpace(attached) != "" {
		t.Errorf("containers still on podman's kind network: %s", attached)
	}
	for _, n := range podmanNetworks(t) {
		if n != "kind" && !slices.Contains(networksBefore, n) {
			t.Errorf("network %s left on podman", n)
		}
	}
	// netavark's DNS (aardvark-dns) keeps one file per network listing its
	// containers' names.
	if b, err := os.ReadFile("/run/containers/networks/aardvark-dns/kind"); err == nil && strings.Contains(string(b), name) {
		t.Errorf("aardvark-dns still resolves the lab's node:\n%s", b)
	}
	if kc, _ := os.ReadFile(filepath.Join(dir, "kubeconfig")); strings.Contains(string(kc), "kind-"+name) {
		t.Errorf("kubeconfig context kind-%s left", name)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "state", "clusters")); len(entries) != 0 {
		t.Errorf("state left behind: %v", entries)
	}
}

// kitDigests lists a kit's entries as "role reference digest", sorted.
func kitDigests(t *testing.T, file string) []string {
	t.Helper()
	code, out, errOut := run(t, "kit", "inspect", file, "-o", "json")
	var man struct{ Entries []kitEntry }
	if err := json.Unmarshal([]byte(out), &man); err != nil || code != 0 {
		t.Fatalf("kit inspect %s: exit %d %v\n%s", file, code, err, errOut)
	}
	var rows []string
	for _, e := range man.Entries {
		rows = append(rows, e.Role+" "+e.Reference+" "+e.Digest)
	}
	sort.Strings(rows)
	return rows
}

func podmanNetworks(t *testing.T) []string {
	t.Helper()
	out, err := podman(t, "network", "ls", "--format", "{{.Name}}")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
