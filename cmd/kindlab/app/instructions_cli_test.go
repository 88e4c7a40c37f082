package app_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/provision/state"
)

// `kindlab instructions` prints a lab's steps with each command written for
// the cluster, as the console's attendee page does: kubectl with the
// cluster's context, its node names, and check/reset naming the cluster
// (an included lab's `kindlab check LAB` checks only that lab's check).
func TestInstructionsForTheCluster(t *testing.T) {
	dir := isolate(t)
	t.Chdir(t.TempDir()) // no ./labs to shadow the built-in labs

	code, out, errOut := run(t, "instructions", "nftables")
	if code != 0 {
		t.Fatalf("instructions nftables: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"Lab nftables on cluster nftables (context kind-nftables)",
		"  1. kube-proxy runs in nftables mode:",
		"       kubectl --context kind-nftables -n kube-system get configmap kube-proxy",
		"       kindlab check nftables --name nftables\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("instructions nftables lacks %q:\n%s", want, out)
		}
	}

	code, out, errOut = run(t, "instructions", "all-features", "--name", "sandbox-1")
	if code != 0 {
		t.Fatalf("instructions all-features --name sandbox-1: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"docker exec sandbox-1-worker nft list table ip kube-proxy",
		"kindlab check all-features --name sandbox-1 --only nftables",
		// An included lab's "put the lab back" resets the attendee's
		// cluster, not a cluster of the included lab's name.
		"kindlab reset all-features --name sandbox-1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("instructions all-features --name sandbox-1 lacks %q:\n%s", want, out)
		}
	}
	for _, stale := range []string{"nftables-worker", "kind-all-features", "kindlab up "} {
		if strings.Contains(out, stale) {
			t.Errorf("instructions for sandbox-1 still say %q:\n%s", stale, out)
		}
	}

	// A heredoc is printed from the first column, and pastes into bash
	// whole: an indented EOF never ended it (fresh-user review, session 13).
	code, out, errOut = run(t, "instructions", "apparmor")
	start, end := strings.Index(out, "\nkindlab migrate apparmor - <<'EOF'\n"), strings.Index(out, "\nEOF\n")
	if code != 0 || start < 0 || end < start {
		t.Fatalf("instructions apparmor: exit %d, no heredoc from the first column:\n%s%s", code, out, errOut)
	}
	block := out[start+1 : end+len("\nEOF")]
	pasted, err := exec.Command("bash", "-c", "kindlab() { cat; }\n"+block+"\necho pasted").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(pasted), "apiVersion: v1\nkind: Pod\n") || !strings.HasSuffix(string(pasted), "image: registry.k8s.io/pause:3.10\npasted\n") {
		t.Errorf("the heredoc pasted into bash: %v\n%s", err, pasted)
	}

	// A recorded cluster: its lab and context are the record's.
	store := state.Store{Root: filepath.Join(dir, "state")}
	if err := store.Save(state.Record{Cluster: "attendee-7", Lab: "nftables", LabSource: "builtin:labs/nftables.yaml", Context: "kind-attendee-7"}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, "instructions", "--name", "attendee-7", "-o", "json")
	var steps []struct {
		Lab, Number, Text string
		Commands          []string
	}
	if err := json.Unmarshal([]byte(out), &steps); err != nil || code != 0 {
		t.Fatalf("instructions --name attendee-7 -o json: exit %d, %q (%s): %v", code, out, errOut, err)
	}
	if len(steps) != 4 || steps[3].Number != "4" || len(steps[3].Commands) != 1 || steps[3].Commands[0] != "kindlab check nftables --name attendee-7" {
		t.Errorf("steps of attendee-7: %+v", steps)
	}

	// A stranger's lab: its escapes are shown, not sent to the terminal.
	evil := filepath.Join(dir, "evil.yaml")
	if err := os.WriteFile(evil, []byte("apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: evil\nspec:\n  include: [base]\n  nodes:\n  - role: control-plane\n"+
		`  instructions: "1. Look\e]0;pwned\a here:\n     kubectl get pods \e[1A\e[2K\u009b2J\n"`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, "instructions", evil)
	if code != 0 || strings.ContainsAny(out, "\x1b\x07\u009b") || !strings.Contains(out, `1. Look\x1b]0;pwned\a here:`) || !strings.Contains(out, `kubectl --context kind-evil get pods \x1b[1A\x1b[2K\u009b2J`) {
		t.Errorf("instructions of a lab with terminal escapes: exit %d, %q (%s)", code, out, errOut)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"instructions"}, "name the lab (kindlab instructions LAB) or its cluster (--name)"},
		{[]string{"instructions", "--name", "nobody"}, "cluster nobody: kindlab has no record of it, so name its lab"},
		{[]string{"instructions", "image-volume", "--name", "attendee-7"}, "cluster attendee-7 runs lab nftables, not image-volume"},
		{[]string{"instructions", "nftable"}, "nftables"},
		{[]string{"instructions", "nftables", "--name", "Bad_Name"}, "--name"},
	} {
		code, _, errOut := run(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: exit %d, %q; want exit 2 and one line with %q", tc.args, code, errOut, tc.want)
		}
	}
}
