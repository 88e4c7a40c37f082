package artifact_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// TestPushLab pushes the built-in image-volume lab's artifacts from the
// files embedded in the binary, the way `kindlab up image-volume` does, and
// checks the embedded build has the digest of the disk build.
func TestPushLab(t *testing.T) {
	reg := registrytest.StartDistribution(t)
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("image-volume", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Artifacts) == 0 {
		t.Fatal("image-volume lab declares no artifacts")
	}
	port := reg.Addr[strings.LastIndex(reg.Addr, ":")+1:]
	var calls atomic.Int32
	res, err := artifact.PushLab(context.Background(), r.Artifacts, atoi(t, port), func(ref string, p artifact.Progress) {
		calls.Add(1)
		if !strings.HasPrefix(ref, "localhost:"+port+"/") {
			t.Errorf("progress for %s, want a push to localhost:%s", ref, port)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(r.Artifacts) || calls.Load() == 0 {
		t.Fatalf("results %+v, %d progress calls", res, calls.Load())
	}
	model := res[0]
	if model.Reference != "localhost:5001/kindlab/model:v1" || model.PushedTo != "localhost:"+port+"/kindlab/model:v1" {
		t.Errorf("reference %s pushed to %s", model.Reference, model.PushedTo)
	}
	disk := buildModel(t)
	d, _ := disk.Digest()
	if model.Digest != d.String() {
		t.Errorf("embedded build %s, disk build %s: the same files must give the same digest", model.Digest, d)
	}
	registrytest.Skopeo(t, "inspect", "--tls-verify=false", "--raw", "docker://"+model.PushedTo)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			t.Fatalf("not a port: %q", s)
		}
		n = n*10 + int(r-'0')
	}
	return n
}

// TestImportLab writes the image-volume lab's artifact into a registry
// container through the Engine API (the remote-engine path) and reads it
// back over HTTP: same digest as a build, tag in place, layers whole, and
// no offline-kit marker (down may delete pushed artifacts).
func TestImportLab(t *testing.T) {
	d := registrytest.Docker(t)
	o := registrytest.Options(t, d)
	ctx := context.Background()
	if _, err := registry.Ensure(ctx, o); err != nil {
		t.Fatal(err)
	}
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("image-volume", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := artifact.ImportLab(ctx, r.Artifacts, o, d)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range r.Artifacts {
		ref, err := name.ParseReference(registry.PushReference(a.Reference, o.HostPort), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(ref)
		if err != nil {
			t.Fatalf("%s after import: %v", ref, err)
		}
		if got, _ := img.Digest(); got.String() != res[i].Digest {
			t.Errorf("%s: registry serves %s, imported %s", ref, got, res[i].Digest)
		}
		ls, _ := img.Layers()
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Errorf("layer: %v", err)
			}
			rc.Close()
		}
	}
	if registry.HoldsKits(ctx, o, d) {
		t.Error("importing artifacts marked the registry as holding a kit")
	}
}

// TestBuildLabRefusesHiddenFiles: a lab's artifact folder holding a dotfile
// (a stranger's lab naming a folder beside a .ssh, say) is refused, naming
// the file, before anything is built or pushed.
func TestBuildLabRefusesHiddenFiles(t *testing.T) {
	dir := t.TempDir()
	for p, data := range map[string]string{"data/model.txt": "model\n", "data/.ssh/id_ed25519": "SECRET\n"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(file, []byte("apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: hid\nspec:\n"+
		"  nodeImage: kindest/node:v1.31.14@sha256:"+strings.Repeat("ab", 32)+"\n  nodes:\n  - role: control-plane\n"+
		"  artifacts:\n  - name: m\n    source: data\n    reference: localhost:5001/m:v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := lab.NewCatalog()
	if _, err := c.AddFile(file); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("hid", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = artifact.BuildLab(r.Artifacts[0])
	if err == nil || !strings.Contains(err.Error(), ".ssh is hidden") {
		t.Fatalf("BuildLab: %v, want .ssh refused as hidden", err)
	}
	// The same folder without it builds.
	if err := os.RemoveAll(filepath.Join(dir, "data", ".ssh")); err != nil {
		t.Fatal(err)
	}
	if _, err := artifact.BuildLab(r.Artifacts[0]); err != nil {
		t.Fatal(err)
	}
}
