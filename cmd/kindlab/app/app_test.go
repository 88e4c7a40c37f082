package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app"
	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
)

func run(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := app.Run(context.Background(), &cli.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	return code, out.String(), errOut.String()
}

// isolate points kindlab's state and kubeconfig at a temp dir so a test never
// touches the user's.
func isolate(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("KINDLAB_STATE_DIR", filepath.Join(dir, "state"))
	t.Setenv("KUBECONFIG", filepath.Join(dir, "kubeconfig"))
	return dir
}

func TestLabsListsBuiltins(t *testing.T) {
	isolate(t)
	code, out, _ := run(t, "labs", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var rows []struct{ Name, Source string }
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range rows {
		names[r.Name] = true
	}
	for _, n := range []string{"all-features", "image-volume", "anonymous-auth", "nftables", "base"} {
		if !names[n] {
			t.Errorf("labs lacks %s: %v", n, rows)
		}
	}
}

func TestRenderAllFeaturesText(t *testing.T) {
	isolate(t)
	code, out, errOut := run(t, "render", "all-features")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, s := range []string{"kind: Cluster", "ImageVolume: true", "AnonymousAuthConfigurableEndpoints: true",
		"MultiCIDRServiceAllocator: true", "networking.k8s.io/v1beta1: \"true\"", "kubeProxyMode: nftables",
		"authentication-config: /etc/kubernetes/kindlab/authentication-config.yaml", "kind: AuthenticationConfiguration",
		"/etc/containerd/certs.d/localhost:5001/hosts.toml", "localhost:5001/kindlab/model:v1",
		"criSocket: unix:///run/kindlab-cri/cri.sock", "containerPath: /etc/systemd/system/kindlab-cri-shim.service",
		"every node runs kindlab's CRI shim (kindlab-cri-shim.service", "image-volume mounts are made read-only"} {
		if !strings.Contains(out, s) {
			t.Errorf("render output lacks %q", s)
		}
	}
}

func TestRenderKindFormatIsOnlyTheConfig(t *testing.T) {
	isolate(t)
	code, out, _ := run(t, "render", "nftables", "-o", "kind")
	if code != 0 || !strings.HasPrefix(out, "apiVersion: kind.x-k8s.io/v1alpha4") || strings.Contains(out, "# ---") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}

func TestValidate(t *testing.T) {
	dir := isolate(t)
	code, out, _ := run(t, "validate", "all-features")
	if code != 0 || !strings.Contains(out, `lab "all-features" is valid`) {
		t.Fatalf("exit %d: %s", code, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: bad\nspec:\n  include: [base]\n  nodes:\n  - role: boss\n"), 0o644)
	code, _, errOut := run(t, "validate", bad)
	if code != cli.ExitUsage {
		t.Errorf("exit %d, want %d", code, cli.ExitUsage)
	}
	want := bad + `:8: spec.nodes[0].role: "boss" is not a node role (valid: control-plane, worker)`
	if strings.TrimSpace(errOut) != "ERROR: "+want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
}

func TestUsageErrors(t *testing.T) {
	isolate(t)
	for _, args := range [][]string{
		{"render"},
		{"render", "no-such-lab"},
		{"render", "all-features", "-o", "xml"},
		{"render", "all-features", "--name", "Not_A_Label"},
		{"render", "all-features", "--registry-port", "70000"},
		{"up", "all-features", "--bogus"},
		{"validate", "/nonexistent/lab.yaml"},
	} {
		code, _, errOut := run(t, args...)
		if code != cli.ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, cli.ExitUsage, errOut)
		}
		if lines := strings.Count(strings.TrimSpace(errOut), "\n"); lines != 0 || !strings.HasPrefix(errOut, "ERROR: ") {
			t.Errorf("%v: want one ERROR line, got %q", args, errOut)
		}
	}
}

func TestUpWithoutDockerSaysSoInOneLine(t *testing.T) {
	dir := isolate(t)
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(dir, "no-docker.sock"))
	code, _, errOut := run(t, "up", "nftables")
	if code != cli.ExitNoDocker {
		t.Fatalf("exit %d, want %d: %s", code, cli.ExitNoDocker, errOut)
	}
	if strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, "no container engine reachable") ||
		!strings.Contains(errOut, "DOCKER_HOST") {
		t.Fatalf("stderr %q", errOut)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "state", "clusters")); len(entries) != 0 {
		t.Fatalf("a failed up left state behind: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(dir, "kubeconfig")); err == nil {
		t.Fatal("a failed up wrote a kubeconfig")
	}
}
