package app_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEndToEndPinnedKitTwoImages is the workshop path as users have it: a
// lab whose node images are pinned by digest (as labs/base.yaml pins
// kindest/node), one node on an image of its own, saved into a kit; the
// engine then has neither pinned reference and no registry answers; the kit
// is loaded and `up` brings the lab up from it, each node on its own image,
// with nothing pulled.
//
// The digests are real: both images are pushed to a throwaway registry
// (the offline registry image) to get them, as a user's pinned images were
// pushed once upstream.
func TestEndToEndPinnedKitTwoImages(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	base := requireE2E(t)
	regImage := os.Getenv("KINDLAB_REGISTRY_IMAGE")
	if regImage == "" {
		t.Fatal("KINDLAB_REGISTRY_IMAGE must name the offline registry image (make e2e sets it)")
	}
	dir := isolate(t)
	// make e2e points the labs' agnhost at the offline build; this lab
	// runs no workload, so it names no image to override.
	t.Setenv("KINDLAB_IMAGE_OVERRIDES", "")
	name := "kindlab-e2e-pinned"
	t.Cleanup(func() { run(t, "down", "--name", name) })

	// Image B: the node image with one more label, so its ID differs and
	// the node that runs it can be told apart.
	tagB := "kindlab-e2e/node-b:v1"
	build := exec.Command("docker", "build", "-q", "-t", tagB, "-")
	build.Stdin = strings.NewReader("FROM " + base + "\nLABEL dev.kindlab.e2e=node-b\n")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build %s: %v\n%s", tagB, err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "image", "rm", "-f", tagB).Run() })
	idA, idB := imageID(t, base), imageID(t, tagB)
	if idA == idB {
		t.Fatalf("%s and %s are the same image %s", base, tagB, idA)
	}

	// Real digests: push both to a registry of our own, then take it away.
	port := freeTCPPort(t)
	regName := "kindlab-e2e-pin-registry"
	exec.Command("docker", "rm", "-f", "-v", regName).Run()
	if out, err := exec.Command("docker", "run", "-d", "--name", regName, "-p", "127.0.0.1:"+port+":5000", regImage).CombinedOutput(); err != nil {
		t.Fatalf("start a registry: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", "-v", regName).Run() })
	waitRegistry(t, "127.0.0.1:"+port)
	repoA := "127.0.0.1:" + port + "/kindlab/node"
	repoB := "127.0.0.1:" + port + "/kindlab/node-b"
	pinA := push(t, base, repoA+":v1.31.14")
	pinB := push(t, tagB, repoB+":v1")
	t.Logf("pinned: %s, %s", pinA, pinB)

	labDir := filepath.Join(dir, "lab")
	if err := os.MkdirAll(labDir, 0o755); err != nil {
		t.Fatal(err)
	}
	labFile := filepath.Join(labDir, "pinned.yaml")
	src := fmt.Sprintf(`apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: pinned
spec:
  description: "End-to-end test lab: node images pinned by digest, a worker on its own image."
  nodeImage: %s
  nodes:
  - role: control-plane
  - role: worker
    image: %s
`, pinA, pinB)
	if err := os.WriteFile(labFile, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}

	kitFile := filepath.Join(dir, "pinned-kit.tar")
	start := time.Now()
	if code, _, errOut := run(t, "kit", "save", labFile, "-o", kitFile); code != 0 {
		t.Fatalf("kit save: exit %d\n%s", code, errOut)
	}
	t.Logf("kit save took %s", time.Since(start).Round(100*time.Millisecond))
	code, out, errOut := run(t, "kit", "inspect", kitFile, "-o", "json")
	var man struct{ Entries []kitEntry }
	if err := json.Unmarshal([]byte(out), &man); err != nil || code != 0 {
		t.Fatalf("kit inspect: exit %d %v\n%s", code, err, errOut)
	}
	var nodeRefs []string
	for _, e := range man.Entries {
		if e.Role == "node" {
			nodeRefs = append(nodeRefs, e.Reference)
		}
	}
	if strings.Join(nodeRefs, " ") != pinA+" "+pinB {
		t.Fatalf("kit's node images %v, want [%s %s]", nodeRefs, pinA, pinB)
	}

	// The machine of an attendee: no registry answers, and the engine has
	// neither pinned reference. B is gone altogether; A's bytes stay under
	// the offline tag the other end-to-end tests use, but nothing in the
	// engine answers to A's pin any more.
	if out, err := exec.Command("docker", "rm", "-f", "-v", regName).CombinedOutput(); err != nil {
		t.Fatalf("remove the registry: %v\n%s", err, out)
	}
	if out, err := exec.Command("docker", "image", "rm", "-f", idB).CombinedOutput(); err != nil {
		t.Fatalf("docker image rm %s: %v\n%s", idB, err, out)
	}
	// Untagging the repository's last tag drops its digest too.
	if out, err := exec.Command("docker", "image", "rm", repoA+":v1.31.14").CombinedOutput(); err != nil {
		t.Fatalf("docker image rm %s: %v\n%s", repoA+":v1.31.14", err, out)
	}
	for _, ref := range []string{pinA, pinB} {
		if exec.Command("docker", "image", "inspect", ref).Run() == nil {
			t.Fatalf("the engine still answers to %s", ref)
		}
	}

	start = time.Now()
	if code, _, errOut := run(t, "kit", "load", kitFile); code != 0 {
		t.Fatalf("kit load: exit %d\n%s", code, errOut)
	}
	t.Logf("kit load took %s", time.Since(start).Round(100*time.Millisecond))

	start = time.Now()
	code, _, errOut = run(t, "up", labFile, "--name", name)
	if code != 0 {
		t.Fatalf("up from the kit with no registry: exit %d\n%s", code, errOut)
	}
	t.Logf("up took %s", time.Since(start).Round(100*time.Millisecond))
	// Its last lines name the next verbs for this cluster (text output
	// only: -o json prints none).
	if !strings.Contains(errOut, "  kindlab instructions --name "+name+"   # the lab's steps") || !strings.Contains(errOut, "kindlab down --name "+name+"\n") {
		t.Errorf("up's last lines do not name the next verbs for cluster %s:\n%s", name, errOut)
	}
	if strings.Contains(errOut, "Pulling image") {
		t.Errorf("up pulled something:\n%s", errOut)
	}
	for node, want := range map[string]string{name + "-control-plane": idA, name + "-worker": idB} {
		got, err := exec.Command("docker", "inspect", "--format", "{{.Image}}", node).Output()
		if err != nil {
			t.Fatalf("inspect node %s: %v", node, err)
		}
		if s := strings.TrimSpace(string(got)); s != want {
			t.Errorf("node %s runs image %s, want %s", node, s, want)
		}
	}
	if code, _, errOut := run(t, "down", "--name", name); code != 0 {
		t.Errorf("down: %s", errOut)
	}
	if left, _ := exec.Command("docker", "ps", "-a", "--filter", "label=io.x-k8s.kind.cluster="+name, "--format", "{{.Names}}").Output(); strings.TrimSpace(string(left)) != "" {
		t.Errorf("nodes left behind: %s", left)
	}
}

func imageID(t *testing.T, ref string) string {
	t.Helper()
	out, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", ref).Output()
	if err != nil {
		t.Fatalf("docker image inspect %s: %v", ref, err)
	}
	return strings.TrimSpace(string(out))
}

// push tags src as dst, pushes it and returns dst pinned by the digest the
// registry gave it (name:tag@sha256:…), as labs pin their node images.
func push(t *testing.T, src, dst string) string {
	t.Helper()
	if out, err := exec.Command("docker", "tag", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("docker tag %s %s: %v\n%s", src, dst, err, out)
	}
	if out, err := exec.Command("docker", "push", "-q", dst).CombinedOutput(); err != nil {
		t.Fatalf("docker push %s: %v\n%s", dst, err, out)
	}
	repo := dst[:strings.LastIndex(dst, ":")]
	out, err := exec.Command("docker", "image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", dst).Output()
	if err != nil {
		t.Fatalf("docker image inspect %s: %v", dst, err)
	}
	for _, rd := range strings.Fields(string(out)) {
		if r, d, ok := strings.Cut(rd, "@"); ok && r == repo {
			return dst + "@" + d
		}
	}
	t.Fatalf("pushed %s but the engine records no digest for %s: %s", dst, repo, out)
	return ""
}

func freeTCPPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// waitRegistry waits until the registry at host answers /v2/ (a container
// that has just started may not listen yet).
func waitRegistry(t *testing.T, host string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry %s did not answer /v2/ within 30s (last: %v)", host, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
