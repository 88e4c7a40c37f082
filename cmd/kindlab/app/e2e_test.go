package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kindlab/kindlab/provision/crishim"
)

// e2eImage is the node image the end-to-end test runs: the lab's pinned
// kindest/node unless KINDLAB_E2E_IMAGE names another (the offline build).
func e2eImage() string {
	if img := os.Getenv("KINDLAB_E2E_IMAGE"); img != "" {
		return img
	}
	return "kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b"
}

// requireE2E skips, saying why, when no engine or node image is here, unless
// KINDLAB_REQUIRE_E2E=1 makes that a failure (CI, once it builds the image).
func requireE2E(t testing.TB) string {
	t.Helper()
	img := e2eImage()
	why := ""
	if err := exec.Command("docker", "version").Run(); err != nil {
		why = "no Docker engine answers (`make docker` starts one on CI machines)"
	} else if err := exec.Command("docker", "image", "inspect", img).Run(); err != nil {
		why = "node image " + img + " is not in the Docker engine and no registry is reachable to pull it " +
			"(build one offline: fixtures/nodeimage/build.sh, then KINDLAB_E2E_IMAGE=kindlab.local/node:v1.31.14)"
	}
	if why == "" {
		e2eShimBinary(t)
		return img
	}
	if os.Getenv("KINDLAB_REQUIRE_E2E") == "1" {
		t.Fatalf("end-to-end test required but cannot run: %s", why)
	}
	t.Skipf("end-to-end test skipped: %s", why)
	return ""
}

var shimBuild struct {
	once sync.Once
	path string
	err  error
}

// e2eShimBinary makes sure a lab with the CRI shim gets a static kindlab
// for its nodes. These tests run kindlab in-process, so the running
// executable is the test binary, which is not kindlab: KINDLAB_CRI_SHIM_BINARY
// names the binary (make e2e: bin/kindlab), or one is built here once.
func e2eShimBinary(t testing.TB) {
	t.Helper()
	if os.Getenv(crishim.BinaryEnv) != "" {
		return
	}
	shimBuild.once.Do(func() {
		dir := filepath.Join(os.TempDir(), "kindlab-e2e-shim")
		shimBuild.path = filepath.Join(dir, "kindlab")
		cmd := exec.Command("go", "build", "-trimpath", "-o", shimBuild.path, "github.com/kindlab/kindlab/cmd/kindlab")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			shimBuild.err = fmt.Errorf("build a static kindlab for the nodes' CRI shim: %v\n%s", err, out)
		}
	})
	if shimBuild.err != nil {
		t.Fatal(shimBuild.err)
	}
	t.Setenv(crishim.BinaryEnv, shimBuild.path)
}

func TestEndToEndAllFeatures(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	img := requireE2E(t)
	dir := isolate(t)
	e2eKit(t, img)
	name := "kindlab-e2e"
	t.Cleanup(func() {
		run(t, "down", "--name", name)
	})
	start := time.Now()
	code, out, errOut := run(t, "up", "all-features", "--name", name, "--image", img, "-o", "json")
	t.Logf("up took %s\n%s", time.Since(start).Round(time.Second), errOut)
	var res struct {
		Created bool
		Checks  []checkResult
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("up exit %d, output %q: %v", code, out, err)
	}
	if !res.Created {
		t.Error("first up did not report creating the cluster")
	}
	assertChecks(t, "up", res.Checks)
	if code != 0 && !t.Failed() {
		t.Errorf("up exit %d with every check passing", code)
	}
	kubeconfig, _ := os.ReadFile(filepath.Join(dir, "kubeconfig"))
	if !strings.Contains(string(kubeconfig), "kind-"+name) {
		t.Errorf("kubeconfig lacks context kind-%s", name)
	}

	assertKubeletPatch(t, e2eClient(t, name))
	assertStatusNodes(t, name)

	// A bug report of the running lab, replayed once the lab is gone.
	bundle := e2eBundleCreate(t, name, dir)

	// An attendee breaks the lab; reset puts it back without a recreate.
	e2eReset(t, name)

	// The workshop console on the lab, in a real browser.
	t.Run("console", func(t *testing.T) { e2eConsole(t, name) })

	// A second up converges: same cluster, not a new one.
	start = time.Now()
	code, out, errOut = run(t, "up", "all-features", "--name", name, "--image", img, "--skip-checks", "-o", "json")
	t.Logf("second up took %s\n%s", time.Since(start).Round(time.Second), errOut)
	if code != 0 || !strings.Contains(out, `"created": false`) {
		t.Errorf("second up: exit %d, %s %s", code, out, errOut)
	}

	// check on the running lab must see what up saw: same images, same
	// results. Its traffic-distribution check asks through the workload's
	// client pods; with their DaemonSet deleted (an attendee's doing) it
	// starts client pods of its own, as upstream's test does.
	cs := e2eClient(t, name)
	if err := cs.AppsV1().DaemonSets("kindlab-traffic-distribution").Delete(context.Background(), "client", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete the traffic-distribution clients: %v", err)
	}
	// The garbage collector deletes its pods a moment later.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		pods, err := cs.CoreV1().Pods("kindlab-traffic-distribution").List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=client"})
		if err != nil {
			t.Fatal(err)
		}
		left := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d client pods still not being deleted a minute after their DaemonSet", left)
		}
	}
	code, out, errOut = run(t, "check", "all-features", "--name", name, "-o", "json")
	var checked []checkResult
	if err := json.Unmarshal([]byte(out), &checked); err != nil {
		t.Fatalf("check exit %d, output %q: %v (%s)", code, out, err, errOut)
	}
	assertChecks(t, "check", checked)
	if code != 0 && !t.Failed() {
		t.Errorf("check exit %d with every check passing", code)
	}
	var details []struct {
		Name    string
		Details []string
	}
	_ = json.Unmarshal([]byte(out), &details)
	for _, d := range details {
		if d.Name == "traffic-distribution" && !strings.Contains(strings.Join(d.Details, "\n"), "client client-in-zone-a-") {
			t.Errorf("traffic-distribution without the workload's clients did not start its own:\n%s", strings.Join(d.Details, "\n"))
		}
	}

	// Upstream's own e2e tests of the lab's features, on the same cluster.
	t.Run("conformance", func(t *testing.T) { e2eConformance(t, name) })

	code, _, errOut = run(t, "down", "--name", name)
	if code != 0 {
		t.Fatalf("down: exit %d: %s", code, errOut)
	}
	leftovers, _ := exec.Command("docker", "ps", "-a", "--filter", "label=io.x-k8s.kind.cluster="+name, "--format", "{{.Names}}").Output()
	if s := strings.TrimSpace(string(leftovers)); s != "" {
		t.Errorf("containers left behind: %s", s)
	}
	// It was the registry's only user: its container goes, and what was
	// pushed stays on its volume for the next up (down says so); then
	// `registry down --delete-data` removes that too.
	dockerLists := func(args ...string) string {
		out, _ := exec.Command("docker", args...).Output()
		return strings.TrimSpace(string(out))
	}
	if left := dockerLists("ps", "-a", "--filter", "name=^kind-registry$", "--format", "{{.Names}}"); left != "" {
		t.Errorf("registry container left behind after the last lab went: %s", left)
	}
	if volume := dockerLists("volume", "ls", "-q", "--filter", "name=^kind-registry-data$"); volume == "" {
		t.Error("down deleted the registry's data volume, which it keeps for the next up")
	}
	if !strings.Contains(errOut, "kept its data on volume kind-registry-data") {
		t.Errorf("down did not say it kept the registry's volume:\n%s", errOut)
	}
	removeRegistry := func() {
		if code, _, errOut := run(t, "registry", "down", "--delete-data"); code != 0 {
			t.Errorf("registry down --delete-data: %s", errOut)
		}
		for _, args := range [][]string{
			{"ps", "-a", "--filter", "name=^kind-registry$", "--format", "{{.Names}}"},
			{"volume", "ls", "-q", "--filter", "name=^kind-registry-data$"},
		} {
			if left := dockerLists(args...); left != "" {
				t.Errorf("left behind after registry down --delete-data: %s", left)
			}
		}
	}
	kit := os.Getenv("KINDLAB_E2E_KIT") != ""
	kubeconfig, _ = os.ReadFile(filepath.Join(dir, "kubeconfig"))
	if strings.Contains(string(kubeconfig), "kind-"+name) {
		t.Error("kubeconfig context left behind")
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "state", "clusters")); len(entries) != 0 {
		t.Errorf("state left behind: %v", entries)
	}

	// Someone else, with the bundle alone (and the kit's images), gets the
	// same lab and the same check results. It pulls from the registry the
	// kit filled, so that goes last, with what the kit put in it.
	if !kit {
		t.Log("bundle replay not run: it pulls the offline images from the registry a kit filled (make e2e sets KINDLAB_E2E_KIT)")
		removeRegistry()
		return
	}
	// The replaying machine has the kit loaded: load it again (it verifies
	// and starts the registry on the data it kept; nothing is re-sent).
	if code, _, errOut := run(t, "kit", "load", os.Getenv("KINDLAB_E2E_KIT")); code != 0 {
		t.Fatalf("kit load before replay: %s", errOut)
	}
	e2eBundleReplay(t, bundle, img)
	removeRegistry()
}

type checkResult struct{ Name, Status, Reason string }

// assertChecks accepts every feature check passing, except AppArmor on a
// host without it, and that only with the kubelet's own reason.
func assertChecks(t *testing.T, what string, results []checkResult) {
	t.Helper()
	if len(results) != 11 {
		t.Errorf("%s ran %d checks, want the 11 feature checks", what, len(results))
	}
	for _, c := range results {
		t.Logf("%s: check %-28s %-11s %s", what, c.Name, c.Status, c.Reason)
		switch {
		case c.Status == "pass":
		case c.Name == "apparmor" && c.Status == "unsupported" && strings.Contains(c.Reason, "Cannot enforce AppArmor") && !hostHasAppArmor():
		// image-volume must pass: all-features includes the image-volume
		// lab, which runs kindlab's CRI shim, so containerd 2.2 mounts the
		// artifact the 1.31 kubelet asks for (TestEndToEndImageVolumeShim
		// shows the refusal without it).
		default:
			t.Errorf("%s: check %s: %s: %s", what, c.Name, c.Status, c.Reason)
		}
	}
}

func hostHasAppArmor() bool {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && strings.TrimSpace(string(b)) == "Y"
}

// A lab whose registry cannot start (its port is taken by another program)
// must fail with one line that names the way out, and leave nothing behind:
// no nodes (the registry starts before kind creates any), no context, no
// record, no registry container.
func TestEndToEndFailedUpLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	img := requireE2E(t)
	dir := isolate(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	name := "kindlab-e2e-fail"
	t.Cleanup(func() { run(t, "down", "--name", name) })

	code, _, errOut := run(t, "up", "image-volume", "--name", name, "--image", img, "--registry-port", port)
	if code == 0 {
		t.Fatal("up succeeded with the registry port taken")
	}
	last := strings.TrimSpace(errOut[strings.LastIndex(strings.TrimSpace(errOut), "\n")+1:])
	if !strings.HasPrefix(last, "ERROR: ") || !strings.Contains(last, port) || !strings.Contains(last, "--registry-port") {
		t.Errorf("error line %q does not name the port and the way out", last)
	}
	left, _ := exec.Command("docker", "ps", "-a", "--filter", "label=io.x-k8s.kind.cluster="+name, "--format", "{{.Names}}").Output()
	if s := strings.TrimSpace(string(left)); s != "" {
		t.Errorf("nodes left behind: %s", s)
	}
	if kc, _ := os.ReadFile(filepath.Join(dir, "kubeconfig")); strings.Contains(string(kc), "kind-"+name) {
		t.Error("kubeconfig context left behind")
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "state", "clusters")); len(entries) != 0 {
		t.Errorf("state left behind: %v", entries)
	}
	if reg, _ := exec.Command("docker", "ps", "-a", "--filter", "publish="+port, "--format", "{{.Names}}").Output(); strings.TrimSpace(string(reg)) != "" {
		t.Errorf("registry container left behind: %s", reg)
	}
}

// assertKubeletPatch reads each node's running kubelet configuration (its
// /configz, through the apiserver's node proxy) and fails unless the
// kubelet runs with render.KubeletPatch's settings:
// the joining nodes get it from the kubelet-config ConfigMap kubeadm wrote
// at init, not from kind's patch directly.
func assertKubeletPatch(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list nodes: %v", err)
	}
	for _, n := range nodes.Items {
		raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", n.Name, "proxy", "configz").DoRaw(ctx)
		if err != nil {
			t.Errorf("node %s: kubelet /configz: %v", n.Name, err)
			continue
		}
		var cz struct {
			KubeletConfig struct {
				SerializeImagePulls       *bool  `json:"serializeImagePulls"`
				NodeStatusUpdateFrequency string `json:"nodeStatusUpdateFrequency"`
				NodeStatusReportFrequency string `json:"nodeStatusReportFrequency"`
			} `json:"kubeletconfig"`
		}
		if err := json.Unmarshal(raw, &cz); err != nil {
			t.Errorf("node %s: kubelet /configz: %v: %.200s", n.Name, err, raw)
			continue
		}
		if p := cz.KubeletConfig.SerializeImagePulls; p == nil || *p {
			t.Errorf("node %s: the kubelet runs with serializeImagePulls %v, want false: %.300s", n.Name, p, raw)
		}
		if k := cz.KubeletConfig; k.NodeStatusUpdateFrequency != "2s" || k.NodeStatusReportFrequency != "5m0s" {
			t.Errorf("node %s: the kubelet runs with nodeStatusUpdateFrequency %q and nodeStatusReportFrequency %q, want 2s and 5m0s", n.Name, k.NodeStatusUpdateFrequency, k.NodeStatusReportFrequency)
		}
	}
}

// assertStatusNodes checks status's row for the running lab: running, and
// its nodes the ones Kubernetes has, sorted by name (kind lists them in the
// engine's order, which changed from one status to the next).
func assertStatusNodes(t *testing.T, name string) {
	t.Helper()
	code, out, errOut := run(t, "status", "-o", "json")
	var rows []struct {
		Cluster, State string
		Nodes          []string
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil || code != 0 {
		t.Fatalf("status: exit %d, %q (%s): %v", code, out, errOut, err)
	}
	nodes, err := e2eClient(t, name).CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range nodes.Items {
		want = append(want, n.Name)
	}
	sort.Strings(want)
	for _, r := range rows {
		if r.Cluster != name {
			continue
		}
		if r.State != "running" || !slices.Equal(r.Nodes, want) {
			t.Errorf("status of %s: %s, nodes %v; want running, nodes %v", name, r.State, r.Nodes, want)
		}
		return
	}
	t.Errorf("status does not list %s: %s", name, out)
}
