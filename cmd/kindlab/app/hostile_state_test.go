package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/state"
)

// runWithin is run that fails the test, instead of hanging it, when the
// command takes longer than d (a read of a FIFO blocks forever).
func runWithin(t *testing.T, d time.Duration, args ...string) (int, string, string) {
	t.Helper()
	type res struct {
		code        int
		out, errOut string
	}
	done := make(chan res, 1)
	go func() {
		code, out, errOut := run(t, args...)
		done <- res{code, out, errOut}
	}()
	select {
	case r := <-done:
		return r.code, r.out, r.errOut
	case <-time.After(d):
		t.Fatalf("%v still running after %s", args, d)
		return 0, "", ""
	}
}

// plantRecord writes content (or, with content "", makes a FIFO) as the
// record of cluster in the state directory, as a hostile user could.
func plantRecord(t *testing.T, store state.Store, cluster, content string) string {
	t.Helper()
	dir := store.ClusterDir(cluster)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "cluster.json")
	if content == "" {
		if err := syscall.Mkfifo(file, 0o644); err != nil {
			t.Fatal(err)
		}
	} else if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// Records kindlab did not write (a FIFO, JSON that does not parse, a
// record of another cluster than its directory, a symlink) fail nobody
// else: status lists what is good and names each bad one in one line;
// a verb on the bad cluster is exit 2 naming the file; nothing acts on a
// record whose cluster is not its directory.
func TestHostileRecordsStatus(t *testing.T) {
	isolate(t)
	store, err := state.Default()
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		plantRecord(t, store, "fifo", ""):                                       "is a FIFO, not a regular file",
		plantRecord(t, store, "badjson", "{not json"):                           "not a kindlab record",
		plantRecord(t, store, "rh-junk", `{"cluster":"rh-victim","fleet":"F"}`): `records cluster "rh-victim", not "rh-junk"`,
		plantRecord(t, store, "huge", `"`+strings.Repeat("x", 2<<20)+`"`):       "larger than 1024 KiB",
	}
	link := filepath.Join(store.ClusterDir("zero"), "cluster.json")
	os.MkdirAll(filepath.Dir(link), 0o755)
	// Not /dev/zero: a reader that followed it would not stop.
	if err := os.Symlink(filepath.Join(store.ClusterDir("badjson"), "cluster.json"), link); err != nil {
		t.Fatal(err)
	}
	bad[link] = "is a symbolic link, not a regular file"
	code, _, errOut := runWithin(t, 10*time.Second, "status")
	if code != 0 {
		t.Errorf("status: exit %d, want 0: %s", code, errOut)
	}
	for file, reason := range bad {
		if !strings.Contains(errOut, "WARNING: state file "+file+": "+reason) {
			t.Errorf("status does not name %s (%s): %q", file, reason, errOut)
		}
	}
	if n := strings.Count(errOut, "WARNING"); n != len(bad) {
		t.Errorf("status: %d warnings, want %d: %q", n, len(bad), errOut)
	}
}

// Verbs on a cluster whose record is bad are exit 2 naming the file, and
// the others are not held up by it; down --fleet does not act on a record
// whose cluster is not its directory's (here it would forget rh-victim).
func TestHostileRecordsDown(t *testing.T) {
	registrytest.Docker(t) // down asks the engine before it reads records
	isolate(t)
	store, err := state.Default()
	if err != nil {
		t.Fatal(err)
	}
	fifo := plantRecord(t, store, "fifo", "")
	junk := plantRecord(t, store, "rh-junk", `{"cluster":"rh-victim","fleet":"F"}`)
	if err := store.Save(state.Record{Cluster: "rh-victim", Lab: "base", Fleet: "G", Context: "kind-rh-victim"}); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(store.ClusterDir("rh-victim"), "cluster.json")
	for file, args := range map[string][]string{fifo: {"down", "--name", "fifo"}, junk: {"down", "--name", "rh-junk"}} {
		code, _, errOut := runWithin(t, 30*time.Second, args...)
		if code != cli.ExitUsage || strings.Count(errOut, "ERROR") != 1 || !strings.Contains(errOut, "state file "+file+": ") {
			t.Errorf("%v: exit %d, want 2 and one ERROR line naming %s: %q", args, code, file, errOut)
		}
	}
	if code, _, errOut := runWithin(t, 30*time.Second, "down", "--name", "other"); code != 0 {
		t.Errorf("down --name other: exit %d: %s", code, errOut)
	}
	code, _, errOut := runWithin(t, 30*time.Second, "down", "--fleet", "F")
	if code != 0 || !strings.Contains(errOut, `Nothing to remove: no cluster of fleet "F"`) {
		t.Errorf("down --fleet F: exit %d: %q", code, errOut)
	}
	for _, f := range []string{victim, junk, fifo} {
		if _, err := os.Lstat(f); err != nil {
			t.Errorf("%s is gone: %v", f, err)
		}
	}
}

// down of a cluster whose lock file was planted as a symlink is exit 2
// naming the lock file, and the link's target keeps its content.
func TestHostileLockFileDown(t *testing.T) {
	registrytest.Docker(t) // down asks the engine before it locks
	dir := isolate(t)
	store, err := state.Default()
	if err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim.txt")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(store.LockFile("x")), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, store.LockFile("x")); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runWithin(t, 30*time.Second, "down", "--name", "x")
	if code != cli.ExitUsage || strings.Count(errOut, "ERROR") != 1 || !strings.Contains(errOut, "state file "+store.LockFile("x")+": is a symbolic link") {
		t.Errorf("down --name x: exit %d, want 2 naming the lock file: %q", code, errOut)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the lock's symlink target was written: %q", b)
	}
}

// down removes a fleet member's emptied kubeconfig file only when it is
// named as the fleet names it (DIR/<cluster>.kubeconfig) and is a regular
// file: a record edited to point at any empty or `{}` file elsewhere, or a
// symlink of the right name, leaves that file alone and says so.
func TestDownRemovesOnlyFleetKubeconfigFiles(t *testing.T) {
	registrytest.Docker(t) // down asks the engine before it reads records
	dir := isolate(t)
	store, err := state.Default()
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	emptyVictim := write("victim-empty.txt", "")
	braceVictim := write("victim.json", "{}")
	fleetFile := write("hf-3.kubeconfig", "")
	linked := filepath.Join(dir, "hf-4.kubeconfig")
	if err := os.Symlink(emptyVictim, linked); err != nil {
		t.Fatal(err)
	}
	for cluster, kc := range map[string]string{"hf-1": emptyVictim, "hf-2": braceVictim, "hf-3": fleetFile, "hf-4": linked} {
		if err := store.Save(state.Record{Cluster: cluster, Lab: "base", Fleet: "hf", Context: "kind-" + cluster, Kubeconfig: kc}); err != nil {
			t.Fatal(err)
		}
	}
	for cluster, want := range map[string]string{
		"hf-1": "Left kubeconfig file " + emptyVictim + ": not the name of a fleet kubeconfig file kindlab writes for hf-1",
		"hf-2": "Left kubeconfig file " + braceVictim + ": not the name",
		"hf-3": "Removed kubeconfig file " + fleetFile,
		"hf-4": "Left kubeconfig file " + linked + ": a symbolic link, not a file kindlab wrote",
	} {
		code, _, errOut := runWithin(t, 30*time.Second, "down", "--name", cluster)
		if code != 0 || !strings.Contains(errOut, want) {
			t.Errorf("down --name %s: exit %d, want %q in %q", cluster, code, want, errOut)
		}
	}
	for _, f := range []string{emptyVictim, braceVictim, linked} {
		if _, err := os.Lstat(f); err != nil {
			t.Errorf("down removed %s: %v", f, err)
		}
	}
	if _, err := os.Lstat(fleetFile); err == nil {
		t.Errorf("down left the fleet's emptied kubeconfig file %s", fleetFile)
	}
}
