package lifecycle

import (
	"slices"
	"testing"

	"github.com/kindlab/kindlab/provision/lab"
)

// TestPullRefs: the names pulled are those the CRI looks a pod's image up
// by (reference.ParseDockerRef): fully qualified, a pinned tag dropped for
// its digest, each once.
func TestPullRefs(t *testing.T) {
	const d = "sha256:b173c7d0ffe3d805d49f4dfe48375169b7b8d2e1feb81783efd61eb9d08042e6"
	got, err := pullRefs([]lab.Image{
		{Name: "agnhost", Reference: "registry.k8s.io/e2e-test-images/agnhost:2.52@" + d},
		{Name: "again", Reference: "registry.k8s.io/e2e-test-images/agnhost@" + d},
		{Name: "busybox", Reference: "busybox:1.36"},
		{Name: "local", Reference: "localhost:5001/kindlab/health-device-plugin:v1.31.14"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"registry.k8s.io/e2e-test-images/agnhost@" + d,
		"docker.io/library/busybox:1.36",
		"localhost:5001/kindlab/health-device-plugin:v1.31.14",
	}
	if !slices.Equal(got, want) {
		t.Errorf("pullRefs = %q, want %q", got, want)
	}
	if _, err := pullRefs([]lab.Image{{Name: "bad", Reference: "UPPER/case::x"}}); err == nil {
		t.Error("pullRefs accepted an invalid reference")
	}
}
