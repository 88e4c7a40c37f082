package bundle

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/state"
)

func provider(t *testing.T) *cluster.Provider {
	t.Helper()
	p, err := cluster.New(context.Background(), registrytest.Engine(t))
	if err != nil {
		registrytest.SkipOrFail(t, err.Error())
	}
	return p
}

// A bundle whose images nobody can reach must fail before anything exists:
// no node, no kubeconfig context, no state, no registry, and one line that
// names every missing image.
func TestReplayWithUnreachableImagesCreatesNothing(t *testing.T) {
	p := provider(t)
	root := t.TempDir()
	const zeros = "0000000000000000000000000000000000000000000000000000000000000000"
	mustWrite(t, filepath.Join(root, "labs", "gone.yaml"), `apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: gone
spec:
  nodeImage: kindlab.invalid/node:v1.31.14@sha256:`+zeros+`
  nodes: [{role: control-plane}]
  images:
  - name: app
    reference: kindlab.invalid/app:v1@sha256:`+zeros+`
  workloads:
  - name: app
    path: ../manifests
`)
	mustWrite(t, filepath.Join(root, "manifests", "pod.yaml"), `apiVersion: v1
kind: Pod
metadata:
  name: app
  namespace: default
spec:
  containers:
  - name: app
    image: "@image/app"
`)
	c := lab.NewCatalog()
	if _, err := c.AddFile(filepath.Join(root, "labs", "gone.yaml")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "gone.tar.gz")
	create(t, c, "gone", out, nil)
	b, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}

	home := t.TempDir()
	store := state.Store{Root: filepath.Join(home, "state")}
	kubeconfig := filepath.Join(home, "kubeconfig")
	name := "bundle-test-unreachable"
	replay := func(nodeImage string) error {
		_, err := Replay(context.Background(), p, b, ReplayOptions{Store: store, Name: name, NodeImage: nodeImage, Kubeconfig: kubeconfig})
		t.Cleanup(func() {
			if t.Failed() {
				exec.Command("docker", "rm", "-f", name+"-control-plane").Run()
			}
		})
		return err
	}
	assertNothing := func() {
		t.Helper()
		left, _ := exec.Command("docker", "ps", "-a", "--filter", "label=io.x-k8s.kind.cluster="+name, "--format", "{{.Names}}").Output()
		if s := strings.TrimSpace(string(left)); s != "" {
			t.Errorf("nodes created: %s", s)
		}
		if _, err := os.Stat(kubeconfig); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("kubeconfig written: %v", err)
		}
		if _, err := os.Stat(store.Root); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state written: %v", err)
		}
	}

	err = replay("")
	if err == nil {
		t.Fatal("replay succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"cannot replay " + out + ", nothing was created:",
		"node image kindlab.invalid/node:v1.31.14@sha256:" + zeros + " is not in the Docker engine and cannot be pulled",
		"image kindlab.invalid/app:v1@sha256:" + zeros + " of workload app cannot be pulled"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	assertNothing()

	// With a node image that is here, the workload's image alone stops it.
	const offline = "kindlab.local/node:v1.31.14"
	if exec.Command("docker", "image", "inspect", offline).Run() != nil {
		t.Logf("%s not in Docker: the second case needs it", offline)
		return
	}
	err = replay(offline)
	if err == nil || strings.Contains(err.Error(), "node image") || !strings.Contains(err.Error(), "kindlab.invalid/app") {
		t.Errorf("with the node image present: %v", err)
	}
	assertNothing()
}
