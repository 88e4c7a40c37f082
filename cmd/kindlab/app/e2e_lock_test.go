package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/state"
)

// Two `kindlab up` of one lab started together, as two processes: one
// creates the lab, the other fails at once naming it and touches nothing
// (before the lock, the loser's clean-up deleted the winner's record and
// the running cluster was disowned). A third, started with --wait-lock
// while the first still works, waits and then converges on the same
// cluster. Afterwards there is one cluster, kindlab owns it (status, reset
// and down work on it), and down leaves nothing.
func TestEndToEndConcurrentUpsOfOneLab(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	img := requireE2E(t)
	dir := isolate(t)
	const name = "lock-e2e"
	registryBefore := containerExists(registry.ContainerName)
	downArgs := []string{"down", "--name", name}
	if registryBefore {
		downArgs = append(downArgs, "--keep-registry")
	}
	t.Cleanup(func() {
		run(t, downArgs...)
		nodes := exec.Command("docker", "ps", "-aq", "--filter", "label=io.x-k8s.kind.cluster="+name)
		if out, _ := nodes.Output(); len(bytes.TrimSpace(out)) != 0 {
			exec.Command("sh", "-c", "docker rm -f "+strings.Join(strings.Fields(string(out)), " ")).Run()
		}
	})
	upArgs := []string{"up", oneNodeLab, "--name", name, "--image", img}

	type result struct {
		cmd    *exec.Cmd
		stderr *bytes.Buffer
		err    error
		took   time.Duration
	}
	start := func(args ...string) *result {
		r := &result{cmd: kindlabProcess(args...), stderr: &bytes.Buffer{}}
		r.cmd.Stderr = r.stderr
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	wait := func(r *result, began time.Time, done chan<- *result) {
		r.err = r.cmd.Wait()
		r.took = time.Since(began)
		done <- r
	}

	began := time.Now()
	done := make(chan *result, 3)
	a, b := start(upArgs...), start(upArgs...)
	go wait(a, began, done)
	go wait(b, began, done)
	loser := <-done
	var winner *result
	if loser == a {
		winner = b
	} else {
		winner = a
	}
	t.Logf("the second up ended after %s: exit %d, %s", loser.took.Round(time.Millisecond), exitCode(loser.err), lastLine(loser.stderr.String()))
	wantBusy := fmt.Sprintf("ERROR: cluster %s is busy: held by process %d (%s up %s --name %s --image %s)",
		name, winner.cmd.Process.Pid, filepath.Base(os.Args[0]), oneNodeLab, name, img)
	if exitCode(loser.err) != 1 || !strings.HasPrefix(lastLine(loser.stderr.String()), wantBusy) || strings.Count(loser.stderr.String(), "\n") != 1 {
		t.Errorf("the losing up: exit %d, stderr %q; want exit 1 and the one line %q…", exitCode(loser.err), loser.stderr.String(), wantBusy)
	}
	if loser.took > 20*time.Second {
		t.Errorf("the losing up took %s to give up, want at once", loser.took)
	}

	// A third up, told to wait, while the winner still works.
	third := start(append(upArgs, "--wait-lock", "10m")...)
	go wait(third, time.Now(), done)

	w := <-done
	if w != winner {
		t.Fatalf("the up waiting for the lock ended before the one holding it: exit %d, %s", exitCode(w.err), w.stderr.String())
	}
	t.Logf("the winning up took %s: exit %d", winner.took.Round(time.Second), exitCode(winner.err))
	if exitCode(winner.err) != 0 || !strings.Contains(winner.stderr.String(), "Lab one-node is up") {
		t.Fatalf("the winning up: exit %d\n%s", exitCode(winner.err), winner.stderr.String())
	}
	w = <-done
	t.Logf("the waiting up ended %s after it started: exit %d", w.took.Round(time.Second), exitCode(w.err))
	if exitCode(w.err) != 0 || !strings.Contains(w.stderr.String(), "Waiting for cluster "+name+", held by process "+fmt.Sprint(winner.cmd.Process.Pid)) ||
		!strings.Contains(w.stderr.String(), "Reusing cluster "+name) {
		t.Errorf("the up with --wait-lock: exit %d\n%s", exitCode(w.err), w.stderr.String())
	}

	// One cluster, one node, kindlab's record of it.
	if out, _ := exec.Command("docker", "ps", "-a", "--filter", "label=io.x-k8s.kind.cluster="+name, "--format", "{{.Names}}").Output(); len(strings.Fields(string(out))) != 1 {
		t.Errorf("nodes of %s: %q, want exactly one", name, out)
	}
	store, err := state.Default()
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := store.Load(name); err != nil || rec.Lab != "one-node" {
		t.Fatalf("record of %s: %+v, %v", name, rec, err)
	}
	code, out, errOut := run(t, "status", "-o", "json")
	var rows []struct{ Cluster, Lab, State string }
	if err := json.Unmarshal([]byte(out), &rows); err != nil || code != 0 || len(rows) != 1 || rows[0].Cluster != name || rows[0].State != "running" {
		t.Errorf("status: exit %d, %q (%v) %s", code, out, err, errOut)
	}
	code, _, errOut = run(t, "reset", oneNodeLab, "--name", name, "--skip-checks")
	if code != 0 {
		t.Errorf("reset: exit %d\n%s", code, errOut)
	}
	code, _, errOut = run(t, downArgs...)
	if code != 0 {
		t.Fatalf("down: exit %d\n%s", code, errOut)
	}
	if out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=io.x-k8s.kind.cluster="+name).Output(); len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("nodes left after down: %s", out)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "state", "clusters")); len(entries) != 0 {
		t.Errorf("state left after down: %v", entries)
	}
	if kc, _ := os.ReadFile(filepath.Join(dir, "kubeconfig")); strings.Contains(string(kc), "kind-"+name) {
		t.Error("context left after down")
	}
	if after := containerExists(registry.ContainerName); after != registryBefore {
		t.Errorf("registry there before: %t, after down: %t", registryBefore, after)
	}
}
