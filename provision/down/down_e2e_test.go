package down_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/errdefs"
	ggcrname "github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	kindcluster "sigs.k8s.io/kind/pkg/cluster"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/down"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/state"
)

// TestDownKeepsRegistryOtherStateDirUses runs on the real engine with two
// one-node kind clusters (KINDLAB_E2E_IMAGE, as the end-to-end tests; a
// missing image or engine fails with KINDLAB_REQUIRE_E2E=1 or
// KINDLAB_REQUIRE_DOCKER=1) what `down` got wrong before: two state directories on one engine, cluster A recorded in one and
// B in the other, both wired to the same registry. down A must keep the
// registry (B still pulls from it) and what was pushed to it; down B then
// removes the container and keeps its data volume, which the next start
// serves again. The test runs its own registry (own name and port, on
// kind's network) so the shared kind-registry is never touched.
func TestDownKeepsRegistryOtherStateDirUses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	e := registrytest.Engine(t)
	c := e.Client()
	ctx := context.Background()
	img := os.Getenv("KINDLAB_E2E_IMAGE")
	if img == "" {
		img = "kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b"
	}
	if _, err := c.ImageInspect(ctx, img); err != nil {
		why := fmt.Sprintf("node image %s is not in the engine (%v): build one offline with fixtures/nodeimage/build.sh, then KINDLAB_E2E_IMAGE=kindlab.local/node:v1.31.14", img, err)
		if os.Getenv("KINDLAB_REQUIRE_E2E") == "1" {
			t.Fatalf("end-to-end test required but cannot run: %s", why)
		}
		t.Skip("end-to-end test skipped: " + why)
	}
	regImage := registrytest.RegistryImage(t, c)
	p, err := cluster.New(ctx, e)
	if err != nil {
		t.Fatal(err)
	}

	id := fmt.Sprintf("%x", rand.Uint32())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	// On kind's network, as the shared one is: the nodes reach it by name.
	ro := registry.Options{Docker: c, Name: "keepreg-registry-" + id, HostPort: port, Image: regImage}
	names := []string{"keepreg-a-" + id, "keepreg-b-" + id}
	dir := t.TempDir()
	t.Cleanup(func() {
		for _, n := range names {
			_ = e.Kind().Delete(n, filepath.Join(dir, n+".kubeconfig"))
		}
		if err := registry.Remove(context.Background(), ro, registry.RemoveOptions{DeleteData: true}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	// Two state directories, one cluster recorded in each, both wired.
	stores := make([]state.Store, len(names))
	for i, n := range names {
		kc := filepath.Join(dir, n+".kubeconfig")
		start := time.Now()
		if err := e.Kind().Create(n, kindcluster.CreateWithNodeImage(img), kindcluster.CreateWithKubeconfigPath(kc),
			kindcluster.CreateWithDisplayUsage(false), kindcluster.CreateWithDisplaySalutation(false), kindcluster.CreateWithRetain(true)); err != nil {
			// Retained for this: what the node said (the cleanup deletes it).
			logs, _ := exec.Command("docker", "logs", "--tail", "30", n+"-control-plane").CombinedOutput()
			t.Fatalf("create cluster %s: %v\nnode log:\n%s", n, err, logs)
		}
		t.Logf("cluster %s created in %s", n, time.Since(start).Round(time.Second))
		ns, err := p.ListNodes(n)
		if err != nil || len(ns) != 1 {
			t.Fatalf("nodes of %s: %v %v", n, ns, err)
		}
		if _, err := registry.Up(ctx, ro, ns, nil, nil); err != nil {
			t.Fatalf("wire %s: %v", n, err)
		}
		stores[i] = state.Store{Root: filepath.Join(dir, "state-"+string(rune('a'+i)))}
		if err := stores[i].Save(state.Record{Cluster: n, Lab: "one-node", Kubeconfig: kc, Registry: true, RegistryPort: port,
			Provider: e.Provider(), CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	users, err := registry.Users(ctx, c, ro.Name)
	if err != nil || strings.Join(users, ",") != strings.Join(names, ",") {
		t.Fatalf("registry users: %v %v, want %v", users, err, names)
	}
	// Nothing else on the engine is wired to this registry: the shared
	// one's users are not its users.
	if shared, err := registry.Users(ctx, c, ""); err != nil {
		t.Fatal(err)
	} else {
		for _, n := range shared {
			if n == names[0] || n == names[1] {
				t.Errorf("cluster %s counted as a user of %s", n, registry.ContainerName)
			}
		}
	}

	// What a lab pushes (an artifact, `make offline-images`).
	ref, err := ggcrname.ParseReference(fmt.Sprintf("127.0.0.1:%d/kindlab/keepreg:v1", port), ggcrname.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, pushed); err != nil {
		t.Fatal(err)
	}
	want, _ := pushed.Digest()
	pullBack := func(when string) {
		t.Helper()
		img, err := remote.Image(ref)
		if err != nil {
			t.Fatalf("%s: pull %s back: %v", when, ref, err)
		}
		got, err := img.Digest()
		if err != nil || got != want {
			t.Fatalf("%s: %s is %s (%v), pushed %s", when, ref, got, err, want)
		}
		// Every layer, not just the manifest: the blobs are what a volume
		// lost would lose.
		layers, _ := img.Layers()
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatalf("%s: layer of %s: %v", when, ref, err)
			}
			rc.Close()
		}
	}

	// B's node is stopped (a host rebooted, `docker stop`): B still uses the
	// registry once started. kindlab used to ask running nodes by exec, so
	// a stopped one counted as no user and down A removed the registry,
	// with its data, from under B.
	nodeB := names[1] + "-control-plane"
	zero := 0
	if err := c.ContainerStop(ctx, nodeB, container.StopOptions{Timeout: &zero}); err != nil {
		t.Fatal(err)
	}
	if users, err := registry.Users(ctx, c, ro.Name); err != nil || strings.Join(users, ",") != strings.Join(names, ",") {
		t.Errorf("registry users with %s stopped: %v %v, want %v", nodeB, users, err, names)
	}

	// down A, from A's state directory: B (recorded elsewhere) still uses it.
	res, err := down.Run(ctx, p, stores[0], down.Options{Cluster: names[0], RegistryName: ro.Name})
	if err != nil {
		t.Fatalf("down %s: %v", names[0], err)
	}
	t.Logf("down %s: %q", names[0], res.Removed)
	for _, line := range res.Removed {
		if strings.Contains(line, "registry") {
			t.Errorf("down %s removed the registry B uses: %q", names[0], line)
		}
	}
	if st, err := registry.Inspect(ctx, ro); err != nil || !st.Running {
		t.Fatalf("registry after down %s: %+v %v", names[0], st, err)
	}
	pullBack("after down A")
	if users, err := registry.Users(ctx, c, ro.Name); err != nil || len(users) != 1 || users[0] != names[1] {
		t.Errorf("registry users after down A: %v %v, want [%s]", users, err, names[1])
	}

	// down B, its last user: the container goes, the data volume stays and
	// down says so.
	res, err = down.Run(ctx, p, stores[1], down.Options{Cluster: names[1], RegistryName: ro.Name})
	if err != nil {
		t.Fatalf("down %s: %v", names[1], err)
	}
	t.Logf("down %s: %q", names[1], res.Removed)
	volume := ro.Name + "-data"
	said := strings.Join(res.Removed, "\n")
	if !strings.Contains(said, "Removed registry "+ro.Name) || !strings.Contains(said, "kept its data on volume "+volume) ||
		!strings.Contains(said, "registry down --delete-data") {
		t.Errorf("down %s said %q; want the registry removed and its volume %s kept, with how to delete it", names[1], said, volume)
	}
	st, err := registry.Inspect(ctx, ro)
	if err != nil || !st.Absent() || st.Volume != volume {
		t.Fatalf("registry after down %s: %+v %v; want absent with volume %s kept", names[1], st, err, volume)
	}

	// up -> down -> up: the registry started again serves what was pushed.
	if _, err := registry.Ensure(ctx, ro); err != nil {
		t.Fatal(err)
	}
	pullBack("after the registry was made again on its kept volume")

	// And the way to remove it all.
	if err := registry.Remove(ctx, ro, registry.RemoveOptions{DeleteData: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.VolumeInspect(ctx, volume); !errdefs.IsNotFound(err) {
		t.Errorf("volume %s after Remove with DeleteData: %v, want gone", volume, err)
	}
}
