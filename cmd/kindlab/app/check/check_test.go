package check

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

func run(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	cmd := NewCommand(&cli.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.Execute()
	return out.String() + errOut.String(), err
}

// Argument mistakes are usage errors, found before any cluster is contacted.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
		code int
	}{
		{[]string{"no-such-lab"}, `"no-such-lab"`, cli.ExitUsage},
		{[]string{"anonymous-auth", "--only", "nftables"}, `lab anonymous-auth has no check "nftables"`, cli.ExitUsage},
		{[]string{"anonymous-auth", "-o", "yaml"}, `"yaml" is not a format`, cli.ExitUsage},
		{[]string{"anonymous-auth", "--parallel", "0"}, `--parallel: 0, want 1 (one check at a time) or more`, cli.ExitUsage},
	}
	for _, tt := range tests {
		_, err := run(tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) || cli.CodeOf(err) != tt.code {
			t.Errorf("check %v: %v (exit %d), want %q exit %d", tt.args, err, cli.CodeOf(err), tt.want, tt.code)
		}
	}
}

func TestLabWithoutChecks(t *testing.T) {
	out, err := run("base")
	if err != nil || !strings.Contains(out, "lab base has no checks") {
		t.Errorf("check base: %v %q", err, out)
	}
	// A script reading -o json gets an empty list, as for any run.
	if out, err := run("base", "-o", "json"); err != nil || !strings.HasPrefix(out, "[]") {
		t.Errorf("check base -o json: %v %q", err, out)
	}
}

// A cluster that does not run is bad input (exit 2), as the help says,
// whether or not kindlab recorded it: `check nftables` with no cluster
// nftables exited 1 (found by the fresh-user review, session 12). Needs a
// container engine to ask.
func TestCheckOfAClusterThatDoesNotRun(t *testing.T) {
	registrytest.Docker(t) // the engine answers, or the test fails under KINDLAB_REQUIRE_DOCKER
	t.Setenv("KINDLAB_STATE_DIR", t.TempDir())
	_, err := run("nftables", "--name", "kindlab-test-no-such-cluster")
	if err == nil || cli.CodeOf(err) != cli.ExitUsage || !strings.Contains(err.Error(), `cluster "kindlab-test-no-such-cluster" is not running`) {
		t.Errorf("check of a cluster that does not run: %v (exit %d), want exit 2", err, cli.CodeOf(err))
	}
}
