package check

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/state"
)

// A run of some checks (--only) updates those and keeps the others, so the
// saved results still cover the whole lab.
func TestSaveChecksMergesPartialRuns(t *testing.T) {
	store := state.Store{Root: t.TempDir()}
	if err := store.Save(state.Record{Cluster: "c", Lab: "l"}); err != nil {
		t.Fatal(err)
	}
	full := []check.Result{{Name: "a", Status: check.Pass}, {Name: "b", Status: check.Pass}}
	if err := saveChecks(store, "c", full, false); err != nil {
		t.Fatal(err)
	}
	if err := saveChecks(store, "c", []check.Result{{Name: "b", Status: check.Fail, Reason: "broke"}, {Name: "z", Status: check.Pass}}, true); err != nil {
		t.Fatal(err)
	}
	saved, err := store.LoadChecks("c")
	if err != nil {
		t.Fatal(err)
	}
	var got []check.Result
	if err := json.Unmarshal(saved.Results, &got); err != nil {
		t.Fatal(err)
	}
	want := []check.Result{{Name: "a", Status: check.Pass}, {Name: "b", Status: check.Fail, Reason: "broke"}, {Name: "z", Status: check.Pass}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("saved %+v, want %+v", got, want)
	}
	if err := saveChecks(store, "c", full, false); err != nil {
		t.Fatal(err)
	}
	saved, _ = store.LoadChecks("c")
	got = nil
	json.Unmarshal(saved.Results, &got)
	if !reflect.DeepEqual(got, full) {
		t.Errorf("a full run did not replace the results: %+v", got)
	}
}
