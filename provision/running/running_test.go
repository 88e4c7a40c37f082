package running_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
)

// Open tells bad requests (no record, another lab, an unknown lab) before it
// asks for the engine: a user who named the wrong cluster hears so with no
// engine running.
func TestOpenRefusesBeforeTheEngine(t *testing.T) {
	store := state.Store{Root: t.TempDir()}
	if err := store.Save(state.Record{Cluster: "sandbox", Lab: "nftables", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	called := false
	provider := func() (*cluster.Provider, error) {
		called = true
		return nil, errors.New("no engine here")
	}
	ctx := context.Background()
	var wrong *running.WrongLabError
	for _, tc := range []struct {
		opts  running.Options
		check func(error) bool
	}{
		{running.Options{Lab: "nftables", Catalog: c}, func(err error) bool { return errors.Is(err, running.ErrNotRecorded) }},
		{running.Options{Cluster: "sandbox", Lab: "all-features", Catalog: c}, func(err error) bool {
			return errors.As(err, &wrong) && wrong.Runs == "nftables" && wrong.Asked == "all-features"
		}},
		{running.Options{Cluster: "sandbox", Lab: "no-such-lab", Catalog: c, AllowOtherLab: true}, func(err error) bool {
			return err != nil && !errors.Is(err, running.ErrNotRecorded)
		}},
	} {
		called = false
		_, err := running.Open(ctx, store, provider, tc.opts)
		if !tc.check(err) || called {
			t.Errorf("%+v: error %v (engine asked: %v)", tc.opts, err, called)
		}
	}
	// A good request reaches the engine, whose error comes back as it is.
	for _, opts := range []running.Options{
		{Cluster: "sandbox", Catalog: c},                                           // the record's lab
		{Cluster: "sandbox", Lab: "all-features", Catalog: c, AllowOtherLab: true}, // check's leniency
		{Lab: "nftables", Catalog: c, AllowUnrecorded: true},                       // plain kind's cluster
	} {
		called = false
		if _, err := running.Open(ctx, store, provider, opts); !called || err == nil || err.Error() != "no engine here" {
			t.Errorf("%+v: error %v (engine asked: %v)", opts, err, called)
		}
	}
}

// A cluster that came up with a built-in lab is checked and reset with
// that lab, even from a directory whose ./labs holds another lab of its
// name (or of a name it includes): the record's lab, not the catalog's.
func TestRecordedBuiltinLabIgnoresShadowingDiskLab(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "labs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nftables", "base"} {
		file := "apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: " + name + "\nspec:\n  nodeImage: kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b\n  nodes: [{role: control-plane}]\n"
		if err := os.WriteFile(filepath.Join(dir, "labs", name+".yaml"), []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := lab.NewCatalog()
	if err := c.AddDir(filepath.Join(dir, "labs")); err != nil {
		t.Fatal(err)
	}
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	rec := state.Record{Cluster: "sandbox", Lab: "nftables", LabSource: "builtin:labs/nftables.yaml"}
	rc, err := running.RecordedCatalog(c, rec)
	if err != nil {
		t.Fatal(err)
	}
	r, err := rc.Resolve("nftables", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Source != rec.LabSource || r.Networking.KubeProxyMode != "nftables" || len(r.Nodes) != 3 {
		t.Errorf("resolved %s (kube-proxy %q, %d nodes), want the built-in nftables on the built-in base", r.Source, r.Networking.KubeProxyMode, len(r.Nodes))
	}
	// A lab that came up from a file is still that file's.
	rec.LabSource = filepath.Join(dir, "labs", "nftables.yaml")
	if rc, err = running.RecordedCatalog(c, rec); err != nil {
		t.Fatal(err)
	}
	if r, err = rc.Resolve("nftables", lab.ResolveOptions{}); err != nil || len(r.Nodes) != 1 {
		t.Errorf("the disk lab: %v, %+v", err, r)
	}
}
