package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// containerdSocket finds a running containerd: the system one, or the one
// dockerd 20.10 starts for itself.
func containerdSocket(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("ctr"); err != nil {
		registrytest.SkipOrFail(t, "ctr (containerd's client) not on PATH (apt-get install containerd)")
	}
	for _, s := range []string{"/run/containerd/containerd.sock", "/var/run/docker/containerd/containerd.sock"} {
		if fi, err := os.Stat(s); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return s
		}
	}
	registrytest.SkipOrFail(t, "no containerd socket at /run/containerd/containerd.sock or /var/run/docker/containerd/containerd.sock")
	return ""
}

// TestContainerdResolvesThroughHostsTOML proves, with a real containerd,
// that the hosts.toml WireNodes writes sends a pull of localhost:5001/...
// to the registry endpoint it names, and that the artifact Build makes is
// an image containerd unpacks and mounts with the files inside: what the
// kubelet's image volume asks of containerd on a node.
func TestContainerdResolvesThroughHostsTOML(t *testing.T) {
	if os.Geteuid() != 0 {
		registrytest.SkipOrFail(t, "mounting an image with ctr needs root")
	}
	sock := containerdSocket(t)
	reg := registrytest.StartDistribution(t)
	ctx := context.Background()

	fsys, err := artifact.OpenDir("../../fixtures/image-volume/files/model")
	if err != nil {
		t.Fatal(err)
	}
	img, err := artifact.Build(fsys, artifact.BuildOptions{ArtifactType: "application/vnd.kindlab.model.v1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := artifact.Push(ctx, img, reg.Addr+"/kindlab/model:v1", artifact.PushOptions{}); err != nil {
		t.Fatal(err)
	}

	// As on a node: localhost:5001 means "the registry at this endpoint".
	hostsDir := t.TempDir()
	dir := filepath.Join(hostsDir, "localhost:5001")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(registry.HostsTOML(reg.Addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("kindlab-test-%x", rand.Uint32())
	ctr := func(args ...string) (string, error) {
		cmd := exec.Command("ctr", append([]string{"--address", sock, "-n", ns}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	const ref = "localhost:5001/kindlab/model:v1"
	t.Cleanup(func() {
		_, _ = ctr("images", "rm", "--sync", ref)
		_, _ = exec.Command("ctr", "--address", sock, "namespaces", "rm", ns).CombinedOutput()
	})
	if out, err := ctr("images", "pull", "--hosts-dir", hostsDir, ref); err != nil {
		t.Fatalf("containerd pull of %s through hosts.toml: %v\n%s", ref, err, out)
	}
	mnt := t.TempDir()
	if out, err := ctr("images", "mount", ref, mnt); err != nil {
		t.Fatalf("containerd mount of the artifact: %v\n%s", err, out)
	}
	defer func() {
		if out, err := ctr("images", "unmount", "--rm", mnt); err != nil {
			t.Errorf("unmount: %v\n%s", err, out)
		}
	}()
	got, err := os.ReadFile(filepath.Join(mnt, "model.txt"))
	if err != nil {
		t.Fatalf("model.txt in the mounted artifact: %v", err)
	}
	want, _ := os.ReadFile("../../fixtures/image-volume/files/model/model.txt")
	if !bytes.Equal(got, want) || len(strings.TrimSpace(string(want))) == 0 {
		t.Errorf("mounted model.txt %q, fixture %q", got, want)
	}
}

// TestContainerdPullsUpstreamNameThroughMirror proves, with a real
// containerd, the hosts.toml kit loads rely on: an image named after an
// upstream registry that cannot be reached is pulled, by its upstream name
// and digest, from the local registry's mirror/<host>/ path.
func TestContainerdPullsUpstreamNameThroughMirror(t *testing.T) {
	sock := containerdSocket(t)
	reg := registrytest.StartDistribution(t)
	ctx := context.Background()
	const upstream = "kindlab-upstream.invalid"
	img, err := artifact.Build(fstest.MapFS{"hello.txt": {Data: []byte("from the mirror\n")}}, artifact.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := artifact.Push(ctx, img, reg.Addr+"/mirror/"+upstream+"/e2e/app:v1", artifact.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hostsDir := t.TempDir()
	dir := filepath.Join(hostsDir, upstream)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(registry.MirrorHostsTOML(upstream, reg.Addr, nil)), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("kindlab-test-%x", rand.Uint32())
	ref := upstream + "/e2e/app:v1@" + res.Digest
	t.Cleanup(func() {
		_, _ = exec.Command("ctr", "--address", sock, "-n", ns, "images", "rm", "--sync", ref).CombinedOutput()
		_, _ = exec.Command("ctr", "--address", sock, "namespaces", "rm", ns).CombinedOutput()
	})
	out, err := exec.Command("ctr", "--address", sock, "-n", ns, "images", "pull", "--hosts-dir", hostsDir, ref).CombinedOutput()
	if err != nil {
		t.Fatalf("containerd pull of %s through the mirror: %v\n%s", ref, err, out)
	}
	list, _ := exec.Command("ctr", "--address", sock, "-n", ns, "images", "ls", "-q").CombinedOutput()
	if !strings.Contains(string(list), upstream+"/e2e/app") {
		t.Errorf("containerd lists %q, want the upstream name", list)
	}
}
