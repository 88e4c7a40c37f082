package artifact_test

import (
	"context"
	"io"
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
