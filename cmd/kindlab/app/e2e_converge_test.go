package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kindlab/kindlab/provision/state"
)

// nodePauseImage is the pause image the node image carries, pinned by the
// digest its containerd has for it (read from the image's containerd
// metadata, as imported at build time), and its tag, so that a pod can run
// it with no registry reachable once the node knows it by that digest
// (tagDigestOnNode).
func nodePauseImage(t *testing.T, nodeImage string) (tag, pinned string) {
	t.Helper()
	db, err := exec.Command("docker", "run", "--rm", "--entrypoint", "cat", nodeImage,
		"/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db").Output()
	if err != nil {
		t.Fatalf("read the containerd metadata of %s: %v", nodeImage, err)
	}
	m := regexp.MustCompile(`(?s)(registry\.k8s\.io/pause:[0-9.]+).{0,400}?target.{0,200}?digest(sha256:[0-9a-f]{64})`).FindSubmatch(db)
	if m == nil {
		t.Fatalf("node image %s: no pause image with a digest in its containerd metadata", nodeImage)
	}
	return string(m[1]), string(m[1]) + "@" + string(m[2])
}

// tagDigestOnNode gives the image tag on the node's containerd its
// name@digest too, as a pull by digest would have (an image imported into
// a node image has no repo digest, so kubelet would go to the registry
// for it), once the node and its containerd run; it tries until stop closes.
func tagDigestOnNode(node, tag, pinned string, stop <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	repo := tag[:strings.LastIndex(tag, ":")]
	digestRef := repo + "@" + pinned[strings.LastIndex(pinned, "@")+1:]
	go func() {
		var err error
		for {
			var out []byte
			out, err = exec.Command("docker", "exec", node, "ctr", "-n", "k8s.io", "images", "tag", "--force", tag, digestRef).CombinedOutput()
			if err == nil {
				done <- nil
				return
			}
			err = fmt.Errorf("tag %s as %s on %s: %v: %s", tag, digestRef, node, err, out)
			select {
			case <-stop:
				done <- err
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	return done
}

const convergeLab = `apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: ux-converge
spec:
  description: "End-to-end test lab: one node, one workload whose image only an override makes runnable offline."
  include: [base]
  nodes:
  - role: control-plane
  workloads:
  - name: sleeper
    path: manifests
`

const convergeManifests = `apiVersion: v1
kind: Namespace
metadata:
  name: kindlab-ux-converge
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sleeper
  namespace: kindlab-ux-converge
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: sleeper
  template:
    metadata:
      labels:
        app.kubernetes.io/name: sleeper
    spec:
      containers:
      - name: sleeper
        image: "@image/agnhost"
`

// TestEndToEndConvergeKeepsRecord: a lab from a file, brought up with an
// image override and $KUBECONFIG naming a file of its own, then, from
// another directory and without either: up converges with the recorded
// override (the workload keeps running the image it came up with), an
// --image other than the nodes' is refused, check and reset take the
// cluster's name alone and read the lab file from where it is, and down
// removes the context from the file it was written to.
func TestEndToEndConvergeKeepsRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	img := requireE2E(t)
	dir := isolate(t)
	t.Setenv("KINDLAB_IMAGE_OVERRIDES", "")
	t.Setenv("KINDLAB_NODE_IMAGE", "")
	pauseTag, pausePinned := nodePauseImage(t, img)
	override := "agnhost=" + pausePinned
	labDir := filepath.Join(dir, "lab")
	if err := os.MkdirAll(filepath.Join(labDir, "manifests"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(labDir, "ux.yaml"), []byte(convergeLab), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(labDir, "manifests", "sleeper.yaml"), []byte(convergeManifests), 0o644); err != nil {
		t.Fatal(err)
	}
	upKubeconfig := filepath.Join(dir, "up-kube", "config")
	t.Setenv("KUBECONFIG", upKubeconfig)
	name := "ux-converge"
	t.Cleanup(func() { run(t, "down", "--name", name, "--kubeconfig", upKubeconfig) })
	store := state.Store{Root: filepath.Join(dir, "state")}
	image := func() string {
		t.Helper()
		d, err := clientFor(t, upKubeconfig, "kind-"+name).AppsV1().Deployments("kindlab-ux-converge").Get(context.Background(), "sleeper", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("read the workload: %v", err)
		}
		return d.Spec.Template.Spec.Containers[0].Image
	}

	t.Chdir(labDir)
	stop := make(chan struct{})
	tagged := tagDigestOnNode(name+"-control-plane", pauseTag, pausePinned, stop)
	code, out, errOut := run(t, "up", "ux.yaml", "--name", name, "--image", img, "--image-override", override, "--skip-checks", "-o", "json")
	close(stop)
	if err := <-tagged; err != nil {
		t.Errorf("the workload's image on the node: %v", err)
	}
	if code != 0 {
		t.Fatalf("up: exit %d, %s\n%s", code, out, errOut)
	}
	rec, err := store.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	wantRef := strings.TrimPrefix(override, "agnhost=")
	if rec.LabSource != filepath.Join(labDir, "ux.yaml") || rec.Kubeconfig != upKubeconfig || rec.ImageOverrides["agnhost"] != wantRef {
		t.Errorf("record after up: labSource %q, kubeconfig %q, overrides %v; want %s, %s, agnhost=%s",
			rec.LabSource, rec.Kubeconfig, rec.ImageOverrides, filepath.Join(labDir, "ux.yaml"), upKubeconfig, wantRef)
	}
	if got := image(); got != wantRef {
		t.Fatalf("workload image after up: %s, want %s", got, wantRef)
	}

	// Elsewhere, with another kubeconfig in the environment and no overrides.
	t.Chdir(t.TempDir())
	t.Setenv("KUBECONFIG", filepath.Join(dir, "other-kubeconfig"))
	code, out, errOut = run(t, "up", filepath.Join(labDir, "ux.yaml"), "--name", name, "--skip-checks", "-o", "json")
	if code != 0 {
		t.Fatalf("second up: exit %d, %s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "Keeping the image overrides cluster "+name+" came up with (--image-override replaces them): "+override) {
		t.Errorf("second up did not say it kept the recorded overrides:\n%s", errOut)
	}
	if got := image(); got != wantRef {
		t.Errorf("workload image after the second up: %s, want the recorded %s", got, wantRef)
	}
	if rec, err := store.Load(name); err != nil || rec.ImageOverrides["agnhost"] != wantRef {
		t.Errorf("record after the second up: %v, %v; want the override kept", rec.ImageOverrides, err)
	}

	code, _, errOut = run(t, "up", filepath.Join(labDir, "ux.yaml"), "--name", name, "--image", "kindlab.local/node:other", "--skip-checks")
	if code != 2 || !strings.Contains(errOut, "nodes cannot change image") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("up with another node image: exit %d, %q; want exit 2 and one line", code, errOut)
	}

	code, out, errOut = run(t, "check", "--name", name)
	if code != 0 || !strings.Contains(errOut, "lab ux-converge has no checks") {
		t.Errorf("check --name: exit %d, %s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "reset", "--name", name, "--skip-checks", "-o", "json")
	var res struct{ Changes []json.RawMessage }
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
		t.Errorf("reset --name: exit %d, %s\n%s", code, out, errOut)
	}
	if got := image(); got != wantRef {
		t.Errorf("workload image after reset: %s, want the recorded %s", got, wantRef)
	}

	// down, with $KUBECONFIG naming another file, removes the context from
	// the one up wrote it to.
	code, _, errOut = run(t, "down", "--name", name)
	if code != 0 {
		t.Fatalf("down: exit %d, %s", code, errOut)
	}
	if b, _ := os.ReadFile(upKubeconfig); strings.Contains(string(b), "kind-"+name) {
		t.Errorf("down left context kind-%s in %s:\n%s", name, upKubeconfig, b)
	}
}
