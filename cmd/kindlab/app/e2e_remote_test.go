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

	"github.com/kindlab/kindlab/provision/crishim"
	"github.com/kindlab/kindlab/provision/engine/remoteenginetest"
	"github.com/kindlab/kindlab/provision/nodefiles"
)

// remoteLab is the anonymous-auth lab plus kindlab's CRI shim (fixtures/labs).
const remoteLab = "../../../fixtures/labs/remote-engine.yaml"

// TestEndToEndRemoteEngine brings a lab up on a Docker engine whose
// filesystem is not this machine's (dockerd in a privileged container,
// DOCKER_HOST=tcp://127.0.0.1:PORT): the anonymous-auth lab's
// authentication config and the CRI shim's binary and units must reach its
// nodes, which a host path written here cannot. The lab's check passes
// (`up`, then `kindlab check`), the shim runs on every node (up's own step),
// and `down` leaves no container, volume or network of the lab on that
// engine.
func TestEndToEndRemoteEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	img := requireE2E(t)
	dir := isolate(t)
	eng := remoteenginetest.Start(t, img)
	t.Setenv("DOCKER_HOST", eng.Host)
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

	start := time.Now()
	// Its API server is published on the engine's side of the bridge: the
	// engine's 127.0.0.1 is not this machine's (README, Remote Docker engines).
	code, out, errOut := run(t, "up", remoteLab, "--name", name, "--image", img,
		"--api-server-address", eng.IP, "-o", "json")
	t.Logf("up on %s took %s\n%s", eng.Host, time.Since(start).Round(time.Second), errOut)
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

	code, out, errOut = run(t, "down", "--name", name)
	if code != 0 {
		t.Fatalf("down: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out+errOut, vol) {
		t.Errorf("down did not say it removed %s: %s %s", vol, out, errOut)
	}
	containers, volumes, networks, err := eng.Lists(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(containers) > 0 || len(volumes) > 0 {
		t.Errorf("left on the remote engine after down: containers %v, volumes %v", containers, volumes)
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
