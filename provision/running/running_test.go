package running_test

import (
	"context"
	"errors"
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
