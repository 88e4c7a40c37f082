package up

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kindlab "github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/nodefiles"
	"github.com/kindlab/kindlab/provision/progress"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/render"
)

// The kind config up creates from mounts every node file from the volume's
// directory on the engine (same layout, same container paths, read-only),
// and the rendered plan keeps its host paths for render -o kind.
func TestDeliverNodeFilesRebasesMounts(t *testing.T) {
	c := registrytest.Docker(t)
	img := registrytest.BusyboxImage(t, c)
	cat := lab.NewCatalog()
	if err := cat.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	// The apiserver's authentication config and the CRI shim.
	r, err := cat.Resolve("all-features", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "kindlab")
	if err := os.WriteFile(bin, []byte("not run"), 0o755); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("kindlab-test-up-nf-%d", time.Now().UnixNano()%1e6)
	stateDir := filepath.Join(t.TempDir(), "clusters", name)
	plan, err := render.Render(r, render.Options{Name: name, StateDir: stateDir, CRIShimBinary: bin})
	if err != nil {
		t.Fatal(err)
	}
	for i := range plan.Config.Nodes {
		plan.Config.Nodes[i].Image = img // fills the volume; nothing else runs here
	}
	t.Cleanup(func() { _, _ = nodefiles.Remove(context.Background(), c, name) })
	before, _ := plan.KindConfigYAML()

	cfg, err := deliverNodeFiles(context.Background(), c, plan, &progress.Status{})
	if err != nil {
		t.Fatal(err)
	}
	vol, err := c.VolumeInspect(context.Background(), nodefiles.VolumeName(name))
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := plan.KindConfigYAML(); string(after) != string(before) {
		t.Error("deliverNodeFiles changed the rendered plan's kind config")
	}
	mounts := 0
	for i, n := range cfg.Nodes {
		orig := plan.Config.Nodes[i].ExtraMounts
		if len(n.ExtraMounts) != len(orig) {
			t.Fatalf("node %d: %d mounts, rendered %d", i, len(n.ExtraMounts), len(orig))
		}
		for j, m := range n.ExtraMounts {
			rel, err := filepath.Rel(stateDir, orig[j].HostPath)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Fatalf("rendered mount %s is not under %s", orig[j].HostPath, stateDir)
			}
			if want := vol.Mountpoint + "/" + rel; m.HostPath != want || m.ContainerPath != orig[j].ContainerPath || !m.Readonly {
				t.Errorf("node %d mount %+v, want %s at %s read-only", i, m, want, orig[j].ContainerPath)
			}
			mounts++
		}
	}
	// control plane: the apiserver's directory and the shim's three; workers: the shim's.
	if mounts != 4+3+3 {
		t.Errorf("%d mounts, want 10", mounts)
	}
	if vol.Labels[nodefiles.LabelCluster] != name || vol.Labels[nodefiles.LabelNodeFiles] != name {
		t.Errorf("volume labels %v", vol.Labels)
	}
}
