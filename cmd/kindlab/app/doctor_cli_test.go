package app_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/provision/state"
)

// doctor LAB looks at the node image the lab's cluster came up with (an
// offline build, say), not at the lab's pinned one it would tell the user
// to pull (fresh-user review, session 13); --image and $KINDLAB_NODE_IMAGE
// still decide first.
func TestDoctorLooksAtTheRunningLabsNodeImage(t *testing.T) {
	dir := isolate(t)
	t.Chdir(t.TempDir())
	t.Setenv("KINDLAB_NODE_IMAGE", "")
	store := state.Store{Root: filepath.Join(dir, "state")}
	if err := store.Save(state.Record{Cluster: "nftables", Lab: "nftables", LabSource: "builtin:labs/nftables.yaml", Context: "kind-nftables", NodeImage: "kindlab.local/node:doctor-test"}); err != nil {
		t.Fatal(err)
	}
	nodeImage := func(args ...string) string {
		t.Helper()
		_, out, errOut := run(t, append([]string{"doctor", "nftables", "-o", "json"}, args...)...)
		var fs []struct{ Check, Detail string }
		if err := json.Unmarshal([]byte(out), &fs); err != nil {
			t.Fatalf("doctor: %q (%s): %v", out, errOut, err)
		}
		for _, f := range fs {
			if f.Check == "node-image" {
				return f.Detail
			}
		}
		t.Fatalf("doctor has no node-image finding (is Docker up?): %s", out)
		return ""
	}
	if got := nodeImage(); !strings.HasPrefix(got, "kindlab.local/node:doctor-test ") {
		t.Errorf("doctor of a lab that runs looked at %q, not its cluster's node image", got)
	}
	if got := nodeImage("--image", "kindlab.local/node:flag"); !strings.HasPrefix(got, "kindlab.local/node:flag ") {
		t.Errorf("doctor --image looked at %q", got)
	}
	t.Setenv("KINDLAB_NODE_IMAGE", "kindlab.local/node:env")
	if got := nodeImage(); !strings.HasPrefix(got, "kindlab.local/node:env ") {
		t.Errorf("doctor with $KINDLAB_NODE_IMAGE looked at %q", got)
	}
}
