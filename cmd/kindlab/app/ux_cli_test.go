package app_test

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kindlab/kindlab/cmd/kindlab/app"
	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/state"
)

// TestClusterNameAlone: the verbs that act on a running cluster take
// --name without LAB (the lab is the record's); without either they say
// what to name, and a cluster running another lab is pointed at a reset
// that works whatever file its lab came from. Each refusal comes before
// any engine is looked for: one line, exit 2.
func TestClusterNameAlone(t *testing.T) {
	dir := isolate(t)
	labFile, err := filepath.Abs("../../../fixtures/labs/one-node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	store := state.Store{Root: filepath.Join(dir, "state")}
	if err := store.Save(state.Record{Cluster: "ux-rev-one", Lab: "one-node", LabSource: labFile, Provider: "docker"}); err != nil {
		t.Fatal(err)
	}
	if err := store.Save(state.Record{Cluster: "ux-rev-nft", Lab: "nftables", LabSource: "builtin:nftables", Provider: "docker", Checks: []string{"nftables"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check"}, "name the lab (kindlab check LAB) or its cluster (--name)"},
		{[]string{"reset"}, "name the lab (kindlab reset LAB) or its cluster (--name)"},
		{[]string{"check", "--name", "ux-nosuch"}, "cluster ux-nosuch: kindlab has no record of it, so the lab to check must be named (kindlab check LAB --name ux-nosuch)"},
		{[]string{"reset", "--name", "ux-nosuch"}, "cluster ux-nosuch: kindlab has no record of it"},
		{[]string{"reset", "nftables", "--name", "ux-rev-one"}, "cluster ux-rev-one runs lab one-node, not nftables (kindlab reset --name ux-rev-one)"},
		// check, unlike reset, runs another lab's checks where the
		// cluster's lab has them (below); here it has none, or not those.
		{[]string{"check", "nftables", "--name", "ux-rev-one"}, "--name: cluster ux-rev-one runs lab one-node (no checks), which lacks lab nftables's check nftables and its workload (kindlab check --name ux-rev-one checks its own lab)"},
		{[]string{"check", "all-features", "--name", "ux-rev-nft"}, "--name: cluster ux-rev-nft runs lab nftables (checks: nftables), which lacks lab all-features's check apparmor"},
		{[]string{"check", "all-features", "--only", "image-volume", "--name", "ux-rev-nft"}, "--name: cluster ux-rev-nft runs lab nftables (checks: nftables), which lacks lab all-features's check image-volume"},
	} {
		code, _, errOut := run(t, tc.args...)
		if code != cli.ExitUsage || !strings.HasPrefix(errOut, "ERROR: "+tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("kindlab %v: exit %d, stderr %q; want exit 2 and one line starting %q", tc.args, code, errOut, "ERROR: "+tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "kubeconfig")); err == nil {
		t.Error("a refused command wrote a kubeconfig")
	}
	// The checks the cluster's lab has are run there: past the input
	// checks to the engine, which is not reachable here (exit 4).
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "")
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(dir, "nonexistent.sock"))
	if code, _, errOut := run(t, "check", "all-features", "--only", "nftables", "--name", "ux-rev-nft"); code != cli.ExitNoDocker {
		t.Errorf("check all-features --only nftables on a cluster of lab nftables: exit %d, want %d: %s", code, cli.ExitNoDocker, errOut)
	}
}

// TestDoctorWithoutEngineExitsFour: doctor with no engine answering still
// prints its findings (the engine's failed, with its fix) and exits 4, the
// code every command gives for no container engine reachable.
func TestDoctorWithoutEngineExitsFour(t *testing.T) {
	dir := isolate(t)
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "")
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(dir, "nonexistent.sock"))
	code, out, errOut := run(t, "doctor")
	if code != cli.ExitNoDocker {
		t.Errorf("exit %d, want %d (%s)", code, cli.ExitNoDocker, errOut)
	}
	if !strings.Contains(out, "docker") || !strings.Contains(out, "FAIL") || !strings.Contains(out, "fix:") {
		t.Errorf("the findings did not print:\n%s", out)
	}
	if !strings.HasPrefix(errOut, "ERROR: no container engine reachable") {
		t.Errorf("stderr %q", errOut)
	}
}

// TestVersionCommand: `kindlab version -o json` gives the binary's version,
// its Go toolchain and the kind and client-go module versions go.mod pins;
// the text form and --version say the same version. A test binary carries
// no module versions (debug.ReadBuildInfo lists no dependencies), so the
// command runs in a kindlab built here, with a version stamped as a release is.
func TestVersionCommand(t *testing.T) {
	isolate(t)
	bin := filepath.Join(t.TempDir(), "kindlab")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X github.com/kindlab/kindlab/cmd/kindlab/app.Version=v0.0.0-uxtest",
		"github.com/kindlab/kindlab/cmd/kindlab")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build kindlab: %v\n%s", err, b)
	}
	kindlab := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).Output()
		if err != nil {
			t.Fatalf("kindlab %v: %v", args, err)
		}
		return string(out)
	}
	var v struct{ Kindlab, Go, Platform, Kind, ClientGo string }
	if out := kindlab("version", "-o", "json"); json.Unmarshal([]byte(out), &v) != nil {
		t.Fatalf("version -o json: %q", out)
	}
	gomod, err := os.ReadFile("../../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	pinned := func(module string) string {
		m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + `\s+(v\S+)`).FindSubmatch(gomod)
		if m == nil {
			t.Fatalf("go.mod does not require %s", module)
		}
		return string(m[1])
	}
	if v.Kindlab != "v0.0.0-uxtest" || v.Go != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH ||
		v.Kind != pinned("sigs.k8s.io/kind") || v.ClientGo != pinned("k8s.io/client-go") {
		t.Errorf("version -o json: %+v; want kindlab v0.0.0-uxtest, %s, kind %s, client-go %s", v, runtime.Version(),
			pinned("sigs.k8s.io/kind"), pinned("k8s.io/client-go"))
	}
	if out := kindlab("version"); !strings.HasPrefix(out, "kindlab v0.0.0-uxtest "+runtime.Version()) {
		t.Errorf("version: %q", out)
	}
	if out := kindlab("--version"); out != "kindlab version v0.0.0-uxtest\n" {
		t.Errorf("--version: %q", out)
	}
}

// TestFlagValueNames: pflag takes a backquoted word in a flag's usage as
// the name of its value in --help; every such name is one word (a quoted
// command in the usage renders as `--count up --count N`).
func TestFlagValueNames(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if name, _ := pflag.UnquoteUsage(f); strings.ContainsAny(name, " \t") {
				t.Errorf("kindlab %s --%s: --help shows its value as %q (a backquoted phrase in the usage)", c.CommandPath(), f.Name, name)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(app.NewRootCommand(&cli.Streams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard}))
	code, out, _ := run(t, "down", "--help")
	if code != 0 || !strings.Contains(out, "--count N ") {
		t.Errorf("down --help: exit %d, want --count N in\n%s", code, out)
	}
}
