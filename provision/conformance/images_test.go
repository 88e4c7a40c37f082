package conformance

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// PrepareAgnhost against a real distribution registry: the lab's agnhost,
// kept under the registry's mirror path, gets the tag upstream's tests
// ask for, with the same digest, and the repo list points upstream's e2e
// registry at its directory.
func TestPrepareAgnhostTagsTheLabsImage(t *testing.T) {
	reg := registrytest.StartDistribution(t)
	_, portStr, _ := strings.Cut(reg.Addr, ":")
	port, _ := strconv.Atoi(portStr)
	ctx := context.Background()

	push := func(repo, tag string) string {
		t.Helper()
		img, err := random.Image(512, 2)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.NewTag(fmt.Sprintf("localhost:%d/%s:%s", port, repo, tag), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		d, _ := img.Digest()
		return d.String()
	}
	digestOf := func(ref string) string {
		t.Helper()
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Get(r)
		if err != nil {
			t.Fatalf("get %s: %v", ref, err)
		}
		return desc.Digest.String()
	}

	t.Run("offline override, same repository", func(t *testing.T) {
		d := push("mirror/kindlab.local/e2e-test-images/agnhost", "2.52-k8s-v1.31.14")
		lab := "kindlab.local/e2e-test-images/agnhost:2.52-k8s-v1.31.14@" + d
		img, err := PrepareAgnhost(ctx, lab, port)
		if err != nil {
			t.Fatal(err)
		}
		if img.Agnhost != "kindlab.local/e2e-test-images/agnhost:2.52" || !img.Tagged || img.From != lab {
			t.Errorf("got %+v", img)
		}
		if img.RepoList == nil || img.RepoList.PromoterE2eRegistry != "kindlab.local/e2e-test-images" {
			t.Errorf("repo list %+v, want promoterE2eRegistry kindlab.local/e2e-test-images", img.RepoList)
		}
		if got := digestOf(fmt.Sprintf("localhost:%d/mirror/kindlab.local/e2e-test-images/agnhost:2.52", port)); got != d {
			t.Errorf("tag 2.52 is %s, want the lab's %s", got, d)
		}
		y, err := RepoListYAML(img.RepoList)
		if err != nil || string(y) != "promoterE2eRegistry: kindlab.local/e2e-test-images\n" {
			t.Errorf("repo list file %q, %v", y, err)
		}
	})

	t.Run("override of another name is copied", func(t *testing.T) {
		d := push("mirror/example.test/tools/my-agnhost", "v9")
		img, err := PrepareAgnhost(ctx, "example.test/tools/my-agnhost:v9@"+d, port)
		if err != nil {
			t.Fatal(err)
		}
		if img.Agnhost != "example.test/tools/agnhost:2.52" || !img.Tagged {
			t.Errorf("got %+v", img)
		}
		if got := digestOf(fmt.Sprintf("localhost:%d/mirror/example.test/tools/agnhost:2.52", port)); got != d {
			t.Errorf("copied tag is %s, want %s", got, d)
		}
	})

	t.Run("upstream image not in the registry", func(t *testing.T) {
		lab := "registry.k8s.io/e2e-test-images/agnhost:2.52@sha256:b173c7d0ffe3d805d49f4dfe48375169b7b8d2e1feb81783efd61eb9d08042e6"
		img, err := PrepareAgnhost(ctx, lab, port)
		if err != nil {
			t.Fatal(err)
		}
		if img.RepoList != nil || img.Tagged || img.Agnhost != "registry.k8s.io/e2e-test-images/agnhost:2.52" {
			t.Errorf("got %+v, want upstream's name, no repo list, nothing tagged", img)
		}
	})

	t.Run("no registry", func(t *testing.T) {
		img, err := PrepareAgnhost(ctx, "kindlab.local/e2e-test-images/agnhost:2.52-k8s-v1.31.14", 0)
		if err != nil {
			t.Fatal(err)
		}
		if img.Tagged || img.RepoList == nil {
			t.Errorf("got %+v", img)
		}
	})

	t.Run("bad reference", func(t *testing.T) {
		if _, err := PrepareAgnhost(ctx, "Not A Reference", port); err == nil || !strings.Contains(err.Error(), `agnhost image "Not A Reference"`) {
			t.Errorf("err %v", err)
		}
	})
}
