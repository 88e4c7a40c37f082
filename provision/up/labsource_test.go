package up

import (
	"os"
	"path/filepath"
	"testing"

	kindlab "github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
)

// A lab file named relative to where up ran is recorded by its absolute
// path, so check, reset and the console read it from any directory; an
// older record's relative path is still read from where up ran.
func TestLabSourceIsAbsolute(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "one.yaml"),
		[]byte("apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: ux-one\nspec:\n  include: [nftables]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	catalog := func() *lab.Catalog {
		c := lab.NewCatalog()
		if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Chdir(dir)
	c := catalog()
	if _, err := c.AddFile("one.yaml"); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("ux-one", lab.ResolveOptions{KnownChecks: check.Names()})
	if err != nil {
		t.Fatal(err)
	}
	if r.Source != "one.yaml" {
		t.Fatalf("the catalog's source is %q, want the path as given (one.yaml)", r.Source)
	}
	src := LabSource(r.Source)
	if want := filepath.Join(dir, "one.yaml"); src != want {
		t.Fatalf("LabSource(%q) = %q, want %q", r.Source, src, want)
	}
	if got := LabSource("builtin:labs/nftables.yaml"); got != "builtin:labs/nftables.yaml" {
		t.Errorf("a built-in lab's source became %q", got)
	}

	t.Chdir(t.TempDir())
	c = catalog()
	if _, err := running.RecordedCatalog(c, state.Record{Cluster: "ux-one", Lab: "ux-one", LabSource: src}); err != nil {
		t.Fatalf("the recorded lab from another directory: %v", err)
	}
	if _, err := c.Resolve("ux-one", lab.ResolveOptions{KnownChecks: check.Names()}); err != nil {
		t.Fatalf("resolve the recorded lab from another directory: %v", err)
	}
	if _, err := running.RecordedCatalog(catalog(), state.Record{Cluster: "ux-one", Lab: "ux-one", LabSource: "one.yaml"}); err == nil {
		t.Error("an old relative record was read from another directory than up's")
	}
	t.Chdir(dir)
	if _, err := running.RecordedCatalog(catalog(), state.Record{Cluster: "ux-one", Lab: "ux-one", LabSource: "one.yaml"}); err != nil {
		t.Errorf("an old relative record, from the directory up ran in: %v", err)
	}
}
