package app_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/google/go-containerregistry/pkg/v1/random"
	kindlab "github.com/kindlab/kindlab"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/bundle"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry/offlineimage"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
)

// While another process holds a cluster (an up, down, reset or replay of
// it), every command that would change it fails at once in one line naming
// that process's pid and command, exit 1, and touches nothing: not the
// record, not the state directory, not a node. With --wait-lock the command
// waits for it and then does its work.
func TestBusyClusterIsLeftAlone(t *testing.T) {
	c := registrytest.Docker(t) // up, down and replay ask the engine before anything else
	dir := isolate(t)
	store, err := state.Default()
	if err != nil {
		t.Fatal(err)
	}
	const fleetName, member = "busy", "busy-1"
	if err := store.Save(state.Record{Cluster: member, Lab: "nftables", Fleet: fleetName, Context: "kind-" + member}); err != nil {
		t.Fatal(err)
	}
	recordFile := filepath.Join(store.ClusterDir(member), "cluster.json")
	record, err := os.ReadFile(recordFile)
	if err != nil {
		t.Fatal(err)
	}
	// A replay gets as far as the lock only with every image here: a bundle
	// of a one-node lab without workloads, replayed with a node image the
	// engine has (should the lock not hold, kind fails on it at once).
	nodeImage := fmt.Sprintf("kindlab.local/lock-test-%x:v1", rand.Uint32())
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := offlineimage.Load(context.Background(), c, img, nodeImage); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.ImageRemove(context.Background(), nodeImage, image.RemoveOptions{Force: true, PruneChildren: true})
	})
	replayable := tinyBundle(t, dir)
	holder, release := holdLock(t, member)
	wantHolder := fmt.Sprintf("held by process %d (%s hold %s)", holder.Process.Pid, filepath.Base(os.Args[0]), member)

	// Should the lock not hold, up fails fast on that image instead of
	// creating a cluster (and the record check below catches its clean-up).
	for _, args := range [][]string{
		{"up", "nftables", "--name", member, "--image", nodeImage},
		{"up", "nftables", "--name", fleetName, "--count", "1", "--image", nodeImage},
		{"down", "--name", member},
		{"down", "--fleet", fleetName},
		{"reset", "nftables", "--name", member},
		{"bundle", "replay", replayable, "--yes", "--name", member, "--image", nodeImage},
	} {
		start := time.Now()
		code, _, errOut := run(t, args...)
		took := time.Since(start)
		last := lastLine(errOut)
		if code != cli.ExitError || !strings.HasPrefix(last, "ERROR: cluster "+member+" is busy: "+wantHolder) || !strings.Contains(last, "--wait-lock") {
			t.Errorf("%v: exit %d, %q; want exit 1 and one line naming the holder (%s)", args, code, last, wantHolder)
		}
		if strings.Count(errOut, "ERROR") != 1 {
			t.Errorf("%v: stderr %q", args, errOut)
		}
		if took > 5*time.Second {
			t.Errorf("%v: took %s to refuse, want at once", args, took)
		}
		if now, err := os.ReadFile(recordFile); err != nil || !bytes.Equal(now, record) {
			t.Fatalf("%v changed the busy cluster's record: %v\n%s", args, err, now)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "state", "clusters")); len(entries) != 1 {
			t.Errorf("%v: state directory holds %d clusters, want only %s", args, len(entries), member)
		}
		if out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=io.x-k8s.kind.cluster="+member).Output(); len(bytes.TrimSpace(out)) != 0 {
			t.Fatalf("%v made nodes for the busy cluster", args)
		}
	}

	// The same from a process of its own: refused at once.
	start := time.Now()
	out, err := kindlabProcess("down", "--name", member).CombinedOutput()
	if code := exitCode(err); code != cli.ExitError || !strings.Contains(string(out), wantHolder) {
		t.Errorf("kindlab down in another process: exit %d, %q", code, out)
	}
	t.Logf("a second process refused in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))

	// --wait-lock: the down waits, says for whom, and goes on once the
	// holder lets go.
	waiter := kindlabProcess("down", "--name", member, "--wait-lock", "2m")
	stderr, err := waiter.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { waiter.Process.Kill() })
	lines := bufio.NewScanner(stderr)
	var said []string
	for lines.Scan() {
		said = append(said, lines.Text())
		if strings.HasPrefix(lines.Text(), "Waiting for cluster "+member) {
			break
		}
	}
	if len(said) == 0 || !strings.Contains(said[len(said)-1], fmt.Sprintf("process %d", holder.Process.Pid)) {
		t.Fatalf("the waiting down said %q", said)
	}
	time.Sleep(500 * time.Millisecond) // it must still be waiting, record in place
	if _, err := os.Stat(recordFile); err != nil {
		t.Fatalf("the waiting down did not wait: %v", err)
	}
	released := time.Now()
	release.Close()
	for lines.Scan() {
		said = append(said, lines.Text())
	}
	err = waiter.Wait()
	t.Logf("down --wait-lock finished %s after the holder let go: %q", time.Since(released).Round(time.Millisecond), said)
	if code := exitCode(err); code != 0 || !strings.Contains(strings.Join(said, "\n"), "Forgot cluster "+member) {
		t.Errorf("down --wait-lock: exit %d, %q", code, said)
	}
	if _, err := os.Stat(recordFile); !os.IsNotExist(err) {
		t.Errorf("after down --wait-lock the record is still there: %v", err)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// tinyBundle is a real bundle, made without a cluster, of a lab of one
// node and nothing else.
func tinyBundle(t *testing.T, dir string) string {
	t.Helper()
	file := filepath.Join(dir, "labs", "tiny.yaml")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(`apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: tiny
spec:
  description: one node, nothing else
  nodeImage: kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b
  nodes: [{role: control-plane}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	c := lab.NewCatalog()
	if _, err := c.AddFile(file); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("tiny", lab.ResolveOptions{KnownChecks: check.Names()})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := render.Render(r, render.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "tiny.tar.gz")
	if _, err := bundle.Create(context.Background(), bundle.Input{Catalog: c, Plan: plan}, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// replayableBundle is a real bundle of a built-in lab, made without a
// cluster (as the bundle command's own tests make one).
func replayableBundle(t *testing.T, dir string) string {
	t.Helper()
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("pv-last-transition-time", lab.ResolveOptions{KnownChecks: check.Names()})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := render.Render(r, render.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "pv.tar.gz")
	if _, err := bundle.Create(context.Background(), bundle.Input{Catalog: c, Plan: plan}, out); err != nil {
		t.Fatal(err)
	}
	return out
}
