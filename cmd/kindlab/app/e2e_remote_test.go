package app_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	kindlab "github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/crishim"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/engine/remoteenginetest"
	"github.com/kindlab/kindlab/provision/engine/sshenginetest"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/nodefiles"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/reset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// remoteLab is the anonymous-auth lab plus kindlab's CRI shim (fixtures/labs).
const remoteLab = "../../../fixtures/labs/remote-engine.yaml"

// TestEndToEndRemoteEngine brings a lab up on a Docker engine whose
// filesystem is not this machine's (dockerd in a privileged container),
// reached as users reach one, over ssh (DOCKER_HOST=ssh://root@127.0.0.1:PORT,
// a real sshd whose sessions dial that engine): the anonymous-auth lab's
// authentication config and the CRI shim's binary and units must reach its
// nodes, which a host path written here cannot, and its artifact a registry
// whose port is not on this machine. The lab's check passes (`up`, then
// `kindlab check`), the shim runs on every node (up's own step); after an
// attendee deletes an object and another artifact overwrites the lab's tag,
// `reset` over ssh puts both back; `down` leaves no container, volume or
// network of the lab on that engine.
func TestEndToEndRemoteEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	img := requireE2E(t)
	dir := isolate(t)
	regImage := os.Getenv("KINDLAB_REGISTRY_IMAGE") // make e2e's offline one
	if regImage == "" {
		regImage = registrytest.RegistryImage(t, registrytest.Docker(t))
		t.Setenv("KINDLAB_REGISTRY_IMAGE", regImage)
	}
	eng := remoteenginetest.Start(t, img, regImage)
	ssh := sshenginetest.Start(t, sshenginetest.Options{Target: eng.Host})
	ssh.UseForDockerCLI(t) // kind's docker CLI, and kindlab's own ssh
	t.Setenv(engine.SSHOptsEnv, "")
	t.Setenv("DOCKER_HOST", ssh.URL)
	name := "kindlab-e2e-remote"
	// After the engine's own clean-up was registered, so it runs first.
	t.Cleanup(func() { run(t, "down", "--name", name) })
	ctx := context.Background()

	// A shim binary for another architecture than the remote engine's is
	// refused in one line before anything is made there.
	shim := os.Getenv(crishim.BinaryEnv) // requireE2E's static kindlab
	otherArch := otherArchBinary(t)
	t.Setenv(crishim.BinaryEnv, otherArch.path)
	code, _, errOut := run(t, "up", remoteLab, "--name", name, "--image", img, "--api-server-address", eng.IP)
	if last := lastLine(errOut); code != 1 || !strings.HasPrefix(last, "ERROR: kindlab at "+otherArch.path+" is built for "+otherArch.goarch+" but the nodes run on x86_64") {
		t.Errorf("up with an %s shim binary: exit %d, last line %q", otherArch.goarch, code, last)
	}
	if c, v, _, err := eng.Lists(ctx); err != nil || len(c)+len(v) != 0 {
		t.Errorf("the refused up left containers %v, volumes %v (%v)", c, v, err)
	}
	t.Setenv(crishim.BinaryEnv, shim)

	// doctor says the same engine can run the shim (it said a remote
	// engine could not, which this test's up disproves).
	code, out, errOut := run(t, "doctor", remoteLab, "-o", "json")
	var findings []struct{ Check, Level, Detail string }
	if err := json.Unmarshal([]byte(out), &findings); err != nil {
		t.Fatalf("doctor: exit %d, %q (%s): %v", code, out, errOut, err)
	}
	shimFound := false
	for _, f := range findings {
		if f.Check == "cri-shim" {
			shimFound = true
			if f.Level != "ok" {
				t.Errorf("doctor on the remote engine: cri-shim %s: %s", f.Level, f.Detail)
			}
		}
	}
	if !shimFound {
		t.Errorf("doctor on the remote engine has no cri-shim finding: %s", out)
	}

	start := time.Now()
	// Its API server is published on the engine's side of the bridge: the
	// engine's 127.0.0.1 is not this machine's (README, Remote Docker engines).
	code, out, errOut = run(t, "up", remoteLab, "--name", name, "--image", img,
		"--api-server-address", eng.IP, "-o", "json")
	t.Logf("up on %s (over ssh to %s) took %s\n%s", ssh.URL, eng.Host, time.Since(start).Round(time.Second), errOut)
	var res upResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("up exit %d, output %q: %v", code, out, err)
	}
	if code != 0 || !res.Created {
		t.Fatalf("up: exit %d, created %v: %s", code, res.Created, errOut)
	}
	if len(res.Checks) != 1 || res.Checks[0].Name != "anonymous-auth" || res.Checks[0].Status != "pass" {
		t.Errorf("up's checks %+v, want anonymous-auth passing", res.Checks)
	}
	if !strings.Contains(errOut, "kindlab's CRI shim runs on 3 node(s)") {
		t.Errorf("up did not prove the CRI shim on the 3 nodes:\n%s", errOut)
	}

	// The file the apiserver reads is the lab's, in the node, from the
	// volume on the remote engine; this machine has no such volume.
	want, err := os.ReadFile("../../../fixtures/anonymous-auth/files/authentication-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := eng.Docker(ctx, nil, "exec", name+"-control-plane", "cat", "/etc/kubernetes/kindlab/authentication-config.yaml")
	if err != nil || got != string(want) {
		t.Errorf("authentication config in the control-plane node: %v\n%s\nwant the lab's:\n%s", err, got, want)
	}
	vol := nodefiles.VolumeName(name)
	if local, _ := eng.Local(ctx, nil, "volume", "ls", "-q", "--filter", "name=^"+vol+"$"); strings.TrimSpace(local) != "" {
		t.Errorf("volume %s is on this machine's engine too: the test would not show the remote engine's files", vol)
	}

	code, out, errOut = run(t, "check", remoteLab, "--name", name, "-o", "json")
	var checked []checkResult
	if err := json.Unmarshal([]byte(out), &checked); err != nil {
		t.Fatalf("check exit %d, output %q: %v (%s)", code, out, err, errOut)
	}
	if code != 0 || len(checked) != 1 || checked[0].Status != "pass" {
		t.Errorf("kindlab check: exit %d, %+v", code, checked)
	}

	resetOverSSH(t, ctx, eng, name)

	code, out, errOut = run(t, "down", "--name", name)
	if code != 0 {
		t.Fatalf("down: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out+errOut, vol) {
		t.Errorf("down did not say it removed %s: %s %s", vol, out, errOut)
	}
	// down keeps the registry's data for the next up, and says so;
	// `registry down --delete-data` is the way to remove it.
	if !strings.Contains(errOut, "kept its data on volume "+registry.ContainerName+"-data") {
		t.Errorf("down did not say it kept the registry's volume: %s", errOut)
	}
	if code, out, errOut := run(t, "registry", "down", "--delete-data"); code != 0 {
		t.Errorf("registry down --delete-data: exit %d: %s %s", code, out, errOut)
	}
	containers, volumes, networks, err := eng.Lists(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(containers) > 0 || len(volumes) > 0 {
		t.Errorf("left on the remote engine after down and registry down --delete-data: containers %v, volumes %v", containers, volumes)
	}
	// kind's network is shared by every kind cluster of an engine and kind
	// never removes it (nor does `kind delete cluster`); nothing may be
	// left attached to it, and no other network.
	for _, n := range networks {
		if n != "kind" {
			t.Errorf("network %s left on the remote engine", n)
			continue
		}
		attached, err := eng.Docker(ctx, nil, "network", "inspect", "-f", "{{len .Containers}}", n)
		if err != nil || strings.TrimSpace(attached) != "0" {
			t.Errorf("kind network on the remote engine still has %s container(s) attached (%v)", strings.TrimSpace(attached), err)
		}
	}
	if entries, _ := os.ReadDir(dir + "/state/clusters"); len(entries) != 0 {
		t.Errorf("state left behind: %v", entries)
	}
}

// otherArchBinary builds a static Linux executable for an architecture the
// test engine (x86_64 here) does not run.
func otherArchBinary(t *testing.T) (b struct{ path, goarch string }) {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skipf("the remote engine runs this machine's architecture, %s; the test knows another only for amd64", runtime.GOARCH)
	}
	b.goarch = "arm64"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.path = filepath.Join(dir, "kindlab-arm64")
	cmd := exec.Command("go", "build", "-o", b.path, "main.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64", "GO111MODULE=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build an arm64 binary: %v\n%s", err, out)
	}
	return b
}

// resetOverSSH breaks the remote lab as an attendee would (an object of the
// lab deleted, the artifact's tag overwritten by another artifact, written
// into the remote registry through the Engine API) and proves that `kindlab
// reset`, over ssh, puts both back.
func resetOverSSH(t *testing.T, ctx context.Context, eng *remoteenginetest.Engine, name string) {
	t.Helper()
	const ns, cm, ref = "kindlab-anonymous-auth", "remote-probe", "localhost:5001/kindlab/remote-probe:v1"
	cs := clientFor(t, "", "kind-"+name)
	if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, cm, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete ConfigMap %s/%s: %v", ns, cm, err)
	}
	remoteDocker, err := client.NewClientWithOpts(client.WithHost(eng.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer remoteDocker.Close()
	ro := registry.Options{Docker: remoteDocker}
	_, digestBefore := overwriteArtifact(t, ctx, remoteDocker, ref)
	if got, err := registry.TagDigest(ctx, ro, remoteDocker, ref); err != nil || got != digestBefore {
		t.Fatalf("the remote registry's %s after overwriting it: %s, want %s (%v)", ref, got, digestBefore, err)
	}

	start := time.Now()
	code, out, errOut := run(t, "reset", remoteLab, "--name", name, "-o", "json")
	t.Logf("reset over %s took %s\n%s", os.Getenv("DOCKER_HOST"), time.Since(start).Round(100*time.Millisecond), errOut)
	var res reset.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 {
		t.Fatalf("reset: exit %d, output %q: %v (%s)", code, out, err, errOut)
	}
	created := false
	for _, c := range res.Changes {
		created = created || (c.Object == "ConfigMap "+ns+"/"+cm && c.Action == "created")
	}
	if !created {
		t.Errorf("reset did not create ConfigMap %s/%s again: %+v", ns, cm, res.Changes)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, cm, metav1.GetOptions{}); err != nil {
		t.Errorf("ConfigMap %s/%s after reset: %v", ns, cm, err)
	}
	if len(res.Artifacts) != 1 || !res.Artifacts[0].Restored || res.Artifacts[0].Was != digestBefore {
		t.Fatalf("reset's artifacts %+v, want %s put back from %s", res.Artifacts, ref, digestBefore)
	}
	if got, err := registry.TagDigest(ctx, ro, remoteDocker, ref); err != nil || got != res.Artifacts[0].Digest {
		t.Errorf("the remote registry's %s after reset: %s, want the lab's %s (%v)", ref, got, res.Artifacts[0].Digest, err)
	}
	if len(res.Checks) != 1 || res.Checks[0].Status != "pass" {
		t.Errorf("checks after reset: %+v", res.Checks)
	}
}

// overwriteArtifact writes another artifact under ref into the remote
// engine's registry, as `kindlab artifact push` of other content would, and
// returns its digest.
func overwriteArtifact(t *testing.T, ctx context.Context, d *client.Client, ref string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "other"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "other", "probe.txt"), []byte("not the lab's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "overwrite.yaml")
	if err := os.WriteFile(file, []byte(`apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: overwrite
spec:
  include: [base]
  registry:
    enabled: true
  artifacts:
  - name: probe
    source: other
    reference: `+ref+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddFile(file); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("overwrite", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := artifact.ImportLab(ctx, r.Artifacts, registry.Options{Docker: d}, d)
	if err != nil || len(res) != 1 {
		t.Fatalf("overwrite %s on the remote registry: %v", ref, err)
	}
	return file, res[0].Digest
}
