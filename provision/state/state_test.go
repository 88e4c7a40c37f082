package state

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestChecksAreKeptPerRecordedCluster(t *testing.T) {
	s := Store{Root: t.TempDir()}
	if err := s.SaveChecks("ghost", []string{"x"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("saving checks of a cluster without a record: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(s.ClusterDir("ghost")); !os.IsNotExist(err) {
		t.Fatalf("a cluster without a record got a directory: %v", err)
	}
	if _, err := s.LoadChecks("lab"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no checks saved yet: %v, want ErrNotFound", err)
	}
	if err := s.Save(Record{Cluster: "lab", Lab: "lab"}); err != nil {
		t.Fatal(err)
	}
	type result struct{ Name, Status string }
	want := []result{{"a", "pass"}, {"b", "fail"}}
	if err := s.SaveChecks("lab", want); err != nil {
		t.Fatal(err)
	}
	c, err := s.LoadChecks("lab")
	if err != nil {
		t.Fatal(err)
	}
	var got []result
	if err := json.Unmarshal(c.Results, &got); err != nil || len(got) != 2 || got[1] != want[1] || c.SavedAt.IsZero() {
		t.Fatalf("loaded %+v at %v (%v)", got, c.SavedAt, err)
	}
	if left, _ := filepath.Glob(filepath.Join(s.ClusterDir("lab"), ".*.tmp")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if err := s.Remove("lab"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadChecks("lab"); !errors.Is(err, ErrNotFound) {
		t.Errorf("checks outlived the cluster's removal: %v", err)
	}
}

// TestOnProvider: a record without a provider (written before kindlab drove
// podman) is docker's; a command on the other provider is refused with an
// *OtherProviderError naming both and the flag.
func TestOnProvider(t *testing.T) {
	for _, c := range []struct {
		recorded, using string
		ok              bool
	}{
		{"", "docker", true}, {"", "", true}, {"docker", "docker", true}, {"podman", "podman", true},
		{"", "podman", false}, {"podman", "docker", false}, {"docker", "podman", false},
	} {
		err := Record{Cluster: "c", Provider: c.recorded}.OnProvider(c.using)
		var ope *OtherProviderError
		if c.ok != (err == nil) || !c.ok && (!errors.As(err, &ope) || !strings.Contains(err.Error(), "--provider ")) {
			t.Errorf("recorded %q, using %q: %v", c.recorded, c.using, err)
		}
	}
}
