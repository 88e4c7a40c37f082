package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/state"
)

// Bad requests to up --count, down and reset are one line and exit 2
// before anything is looked up or made; no engine is needed to say so.
func TestFleetAndResetUsageErrors(t *testing.T) {
	dir := isolate(t)
	store, err := state.Default()
	if err != nil {
		t.Fatal(err)
	}
	// A cluster kindlab made for another lab.
	if err := store.Save(state.Record{Cluster: "sandbox", Lab: "nftables", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"up", "nftables", "--count", "0"}, "--count: 0 is not a number of clusters (valid: 1 or more)"},
		{[]string{"up", "nftables", "--count", "-3"}, "--count: -3 is not a number of clusters"},
		{[]string{"up", "nftables", "--count", "2", "--kubeconfig", filepath.Join(dir, "k")}, "--kubeconfig: not with --count"},
		{[]string{"up", "nftables", "--kubeconfig-dir", dir}, "--kubeconfig-dir: only with --count"},
		{[]string{"down", "nftables", "--fleet", "ws"}, "--fleet: names what to take down on its own"},
		{[]string{"down", "--fleet", "ws", "--count", "2"}, "--fleet: names what to take down on its own"},
		{[]string{"down", "nftables", "--count", "0"}, "--count: 0 is not a number of clusters"},
		{[]string{"down", "--count", "2"}, "--count: name the fleet"},
		{[]string{"reset", "nftables"}, "cluster nftables: kindlab has no record of it"},
		{[]string{"reset", "all-features", "--name", "sandbox"}, "cluster sandbox runs lab nftables, not all-features"},
		{[]string{"reset", "no-such-lab"}, "no-such-lab"},
	} {
		code, _, errOut := run(t, tc.args...)
		if code != cli.ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, cli.ExitUsage, errOut)
		}
		if strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.HasPrefix(errOut, "ERROR: ") || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: stderr %q, want one ERROR line with %q", tc.args, errOut, tc.want)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "state", "clusters"))
	if len(entries) != 1 {
		t.Errorf("state changed: %v", entries)
	}
}
