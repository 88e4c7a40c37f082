package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sigsyaml "sigs.k8s.io/yaml"

	"github.com/kindlab/kindlab/cmd/kindlab/app"
	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/state"
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

// A ./labs file with a built-in lab's name runs instead of it, and says so:
// on stderr where the lab is named (stdout stays the output), and in labs.
func TestShadowingLabIsNamed(t *testing.T) {
	dir := isolate(t)
	if err := os.MkdirAll(filepath.Join(dir, "labs"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := "apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: nftables\nspec:\n  include: [base]\n"
	if err := os.WriteFile(filepath.Join(dir, "labs", "nftables.yaml"), []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	want := "Lab nftables is labs/nftables.yaml, which shadows the built-in lab of that name (builtin:labs/nftables.yaml)\n"
	code, out, errOut := run(t, "render", "nftables", "-o", "kind")
	if code != 0 || errOut != want || !strings.HasPrefix(out, "apiVersion: kind.x-k8s.io/v1alpha4") {
		t.Errorf("render: exit %d, stderr %q (want %q), stdout starts %.40q", code, errOut, want, out)
	}
	// Once per command, though a fleet's up resolves the lab twice.
	if code, _, errOut := run(t, "up", "nftables", "--count", "2", "--name", "Bad_Name"); code != 2 || strings.Count(errOut, "which shadows") != 1 {
		t.Errorf("up --count: exit %d, stderr %q; want exit 2 and the notice once", code, errOut)
	}
	if code, _, errOut := run(t, "render", "base", "-o", "kind"); code != 0 || errOut != "" {
		t.Errorf("render base (not shadowed): exit %d, stderr %q", code, errOut)
	}
	code, out, _ = run(t, "labs", "-o", "json")
	var rows []struct{ Name, Source, Shadows string }
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil {
		t.Fatalf("labs: exit %d, %v", code, err)
	}
	for _, r := range rows {
		if (r.Name == "nftables") != (r.Shadows == "builtin:labs/nftables.yaml") {
			t.Errorf("labs row %+v", r)
		}
	}
}

// A lab file's name and description come from whoever wrote the ./labs
// directory: the escape sequences in them are shown, never sent raw to
// the terminal, where they could hide or rewrite the shadowing notice.
func TestLabTextIsPrintable(t *testing.T) {
	dir := isolate(t)
	if err := os.MkdirAll(filepath.Join(dir, "labs"), 0o755); err != nil {
		t.Fatal(err)
	}
	name := "x\x1b[2K\r\x1b[1;32mUsing built-in nftables lab (verified)\x1b[8m.yaml"
	file := "apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: nftables\nspec:\n  description: \"innocent\\e[2J\\e]0;pwned\\a\"\n  include: [base]\n"
	if err := os.WriteFile(filepath.Join(dir, "labs", name), []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	code, out, errOut := run(t, "render", "nftables", "-o", "kind")
	if code != 0 || strings.ContainsRune(errOut, 0x1b) || !strings.Contains(errOut, `\x1b[2K`) || strings.Count(errOut, "\n") != 1 {
		t.Errorf("render: exit %d, stderr %q: want the notice on one line with the escapes shown", code, errOut)
	}
	code, out, _ = run(t, "labs")
	if code != 0 || strings.ContainsRune(out, 0x1b) || strings.ContainsRune(out, 0x07) || !strings.Contains(out, `\x1b[2J`) {
		t.Errorf("labs: exit %d, output %q: want the escapes shown, not sent", code, out)
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

// TestRenderKindWritesWhatItMounts: `render -o kind | kind create cluster
// --config -` (the README's line) gives kind host paths to mount; kind
// mounts them as they are, so render writes them, and says so on stderr.
func TestRenderKindWritesWhatItMounts(t *testing.T) {
	dir := isolate(t)
	want, err := os.ReadFile(filepath.Join("..", "..", "..", "fixtures", "anonymous-auth", "files", "authentication-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KINDLAB_STATE_DIR", "rel-state") // kind needs absolute host paths even then
	t.Chdir(dir)
	code, out, errOut := run(t, "render", "anonymous-auth", "-o", "kind")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var cfg struct {
		Nodes []struct {
			Role        string
			ExtraMounts []struct{ HostPath, ContainerPath string } `json:"extraMounts"`
		}
	}
	if err := sigsyaml.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	mounts := 0
	for _, n := range cfg.Nodes {
		for _, m := range n.ExtraMounts {
			mounts++
			if !filepath.IsAbs(m.HostPath) {
				t.Errorf("host path %s is not absolute", m.HostPath)
			}
			got, err := os.ReadFile(filepath.Join(m.HostPath, "authentication-config.yaml"))
			if err != nil {
				t.Fatalf("kind would mount %s, which render did not create: %v", m.HostPath, err)
			}
			if string(got) != string(want) {
				t.Errorf("mounted file differs from the lab's:\n%s", got)
			}
			if !strings.Contains(errOut, "wrote "+filepath.Join(m.HostPath, "authentication-config.yaml")) {
				t.Errorf("stderr does not say what was written: %q", errOut)
			}
		}
	}
	if mounts != 1 {
		t.Errorf("%d mounts, want the control plane's one", mounts)
	}
}

// A lab with the CRI shim mounts kindlab's binary into every node: render
// -o kind copies it there, or plain kind's nodes would have no CRI socket.
func TestRenderKindCopiesTheShimBinary(t *testing.T) {
	isolate(t)
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KINDLAB_CRI_SHIM_BINARY", bin)
	code, out, errOut := run(t, "render", "image-volume", "-o", "kind")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var cfg struct {
		Nodes []struct {
			ExtraMounts []struct{ HostPath, ContainerPath string } `json:"extraMounts"`
		}
	}
	if err := sigsyaml.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, n := range cfg.Nodes {
		for _, m := range n.ExtraMounts {
			if m.ContainerPath != "/opt/kindlab/bin" {
				continue
			}
			found++
			if st, err := os.Stat(filepath.Join(m.HostPath, "kindlab")); err != nil || st.Mode()&0o111 == 0 {
				t.Fatalf("kind would mount %s without an executable kindlab in it: %v", m.HostPath, err)
			}
		}
	}
	if found != len(cfg.Nodes) || found == 0 || !strings.Contains(errOut, "on every node (the CRI shim)") {
		t.Fatalf("%d of %d nodes mount the shim binary; stderr %q", found, len(cfg.Nodes), errOut)
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
	// A terminal's escapes in a name from a stranger (here the file's own
	// name) reach stderr escaped: no title set, no screen cleared.
	esc := filepath.Join(dir, "x\x1b]0;owned\a\x1b[2Jy.yaml")
	os.WriteFile(esc, []byte("apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: esc\nspec:\n  nodez: 1\n"), 0o644)
	code, _, errOut = run(t, "validate", esc)
	if code != cli.ExitUsage || strings.ContainsAny(errOut, "\x1b\a") || !strings.Contains(errOut, `x\x1b]0;owned\a\x1b[2Jy.yaml:6: spec.nodez: unknown field`) {
		t.Errorf("exit %d, stderr %q: want the file's name escaped", code, errOut)
	}
}

// TestValidateRefusesWhatComponentsRefuse replays the reports of issue 13:
// each passed validate and failed minutes later inside up. Now each is one
// line on stderr, exit 2, naming the file, line and field.
func TestValidateRefusesWhatComponentsRefuse(t *testing.T) {
	dir := isolate(t)
	os.WriteFile(filepath.Join(dir, "authn.yaml"), []byte("apiVersion: apiserver.config.k8s.io/v1beta1\nkind: AuthenticationConfiguration\nanonymous:\n  enabled: true\n  conditions:\n  - path: /livez\n"), 0o644)
	cases := []struct{ name, spec, want string }{
		{"MultiCIDRServiceAllocator without runtimeConfig", "  featureGates:\n    MultiCIDRServiceAllocator: true\n",
			`:8: spec.featureGates.MultiCIDRServiceAllocator: needs the ServiceCIDR API too`},
		{"anonymous section with the gate off", "  apiServer:\n    authenticationConfig: authn.yaml\n",
			"authn.yaml:3: anonymous: Forbidden"},
		{"nftables with its gate off", "  featureGates:\n    NFTablesProxyMode: false\n  networking:\n    kubeProxyMode: nftables\n",
			`:10: spec.networking.kubeProxyMode: nftables needs feature gate NFTablesProxyMode on`},
		{"service subnet /8", "  networking:\n    serviceSubnet: 10.0.0.0/8\n", `:8: spec.networking.serviceSubnet: "10.0.0.0/8" is too large`},
		{"pod subnet /25", "  networking:\n    podSubnet: 10.244.0.0/25\n", `:8: spec.networking.podSubnet: "10.244.0.0/25" is smaller than the /24 each node gets`},
		{"service subnet not a CIDR", "  networking:\n    serviceSubnet: 10.96.0.300/12\n", `:8: spec.networking.serviceSubnet: "10.96.0.300/12" is not a CIDR`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, "lab.yaml")
			os.WriteFile(f, []byte("apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: bad\nspec:\n  include: [base]\n"+tc.spec), 0o644)
			code, out, errOut := run(t, "validate", f)
			if code != cli.ExitUsage || out != "" {
				t.Errorf("exit %d, stdout %q; want %d and nothing", code, out, cli.ExitUsage)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q, want one line with %q", errOut, tc.want)
			}
		})
	}
}

// TestUnsupportedProviderRefused: kind's CLI switches to podman, nerdctl,
// finch or nerdctl.lima on KIND_EXPERIMENTAL_PROVIDER (sigs.k8s.io/kind
// v0.31.0 pkg/internal/runtime/runtime.go); kindlab drives docker and podman
// and refuses the others instead of silently using Docker, before any verb
// that reaches an engine does anything: exit 2, one line naming the
// variable and the valid values.
func TestUnsupportedProviderRefused(t *testing.T) {
	isolate(t)
	engineVerbs := [][]string{{"up", "nftables"}, {"down", "nftables"}, {"status"}, {"check", "nftables"},
		{"reset", "nftables"}, {"registry", "status"}, {"kit", "load", "k.tar"}}
	for _, v := range []string{"nerdctl", "finch", "nerdctl.lima", "Docker", "Podman"} {
		t.Setenv("KIND_EXPERIMENTAL_PROVIDER", v)
		for _, args := range engineVerbs {
			code, out, errOut := run(t, args...)
			want := `ERROR: KIND_EXPERIMENTAL_PROVIDER="` + v + `": kindlab drives the docker and podman node providers only (valid: docker, podman; unset KIND_EXPERIMENTAL_PROVIDER for docker)` + "\n"
			if code != cli.ExitUsage || out != "" || errOut != want {
				t.Errorf("%s=%s kindlab %v: exit %d, stdout %q, stderr %q; want exit 2 and %q",
					"KIND_EXPERIMENTAL_PROVIDER", v, args, code, out, errOut, want)
			}
		}
		// Verbs that only read files need no engine and still work.
		if code, _, errOut := run(t, "validate", "nftables"); code != 0 {
			t.Errorf("validate with %s: exit %d: %s", v, code, errOut)
		}
		// The flag decides over the variable.
		if code, _, errOut := run(t, "--provider", "docker", "status"); code != 0 {
			t.Errorf("--provider docker with %s=%s: exit %d: %s", "KIND_EXPERIMENTAL_PROVIDER", v, code, errOut)
		}
	}
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "docker") // what kindlab does anyway
	if code, _, errOut := run(t, "status"); code != 0 {
		t.Errorf("status with docker: exit %d: %s", code, errOut)
	}
}

// TestProviderFlag: --provider takes docker or podman, on every verb (a
// file-only verb included: a bad flag is bad input wherever it is given),
// before or after the verb; anything else is exit 2 in one line naming the
// flag and the valid values, with nothing done.
func TestProviderFlag(t *testing.T) {
	isolate(t)
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "")
	for _, v := range []string{"nerdctl", "Podman", ""} {
		want := `ERROR: --provider "` + v + `": not a node provider kindlab drives (valid: docker, podman)` + "\n"
		if v == "" {
			want = "ERROR: --provider: empty (valid: docker, podman)\n"
		}
		for _, args := range [][]string{{"--provider", v, "status"}, {"status", "--provider", v}, {"up", "nftables", "--provider=" + v},
			{"--provider", v, "validate", "nftables"}, {"--provider", v, "kit", "load", "k.tar"}} {
			code, out, errOut := run(t, args...)
			if code != cli.ExitUsage || out != "" || errOut != want {
				t.Errorf("kindlab %q: exit %d, stdout %q, stderr %q; want exit 2 and %q", args, code, out, errOut, want)
			}
		}
	}
	if code, _, errOut := run(t, "--provider", "docker", "validate", "nftables"); code != 0 {
		t.Errorf("--provider docker validate: exit %d: %s", code, errOut)
	}
}

// TestDoctorSizesFleetsAsUpDoes: doctor --clusters judges with the sizing
// up --count enforces (fleet.Host.MaxClusters), named "capacity".
func TestDoctorSizesFleetsAsUpDoes(t *testing.T) {
	isolate(t)
	_, out, _ := run(t, "doctor", "nftables", "--clusters", "100000", "-o", "json")
	var fs []struct{ Check, Level, Detail, Fix string }
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	found := false
	for _, f := range fs {
		if f.Check == "inotify" {
			t.Errorf("the old per-cluster inotify advice is still given: %+v", f)
		}
		if f.Check == "capacity" {
			found = true
			if f.Level != "fail" || !strings.Contains(f.Detail, "room for") || !strings.Contains(f.Detail, "a cluster of 3 node(s) needs about") {
				t.Errorf("capacity finding %+v", f)
			}
		}
	}
	if !found {
		t.Errorf("no capacity finding in %s", out)
	}
	if code, _, errOut := run(t, "doctor", "--clusters", "0"); code != cli.ExitUsage {
		t.Errorf("--clusters 0: exit %d: %s", code, errOut)
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

// An engine endpoint that accepts connections and never answers (a wrong
// DOCKER_HOST port, a hung daemon) ends every verb that needs the engine
// with exit 4 and one line naming it, instead of holding it: the ping's
// 20 s, doctor's 30 s. The 3-minute bound only tells a hang from an answer.
func TestTarpitEngineIsReported(t *testing.T) {
	dir := isolate(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn // accepted, never read or answered
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Setenv("DOCKER_HOST", "tcp://"+l.Addr().String())
	kit := filepath.Join(dir, "kit.tar")
	cases := [][]string{
		{"registry", "up"},
		{"kit", "save", "nftables", "-o", kit},
		{"doctor"},
		{"up", "nftables"},
	}
	type result struct {
		code   int
		errOut string
		hung   bool
	}
	results := make([]result, len(cases))
	var wg sync.WaitGroup
	for i, args := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan result, 1)
			go func() {
				code, _, errOut := run(t, args...)
				done <- result{code: code, errOut: errOut}
			}()
			select {
			case results[i] = <-done:
			case <-time.After(3 * time.Minute):
				results[i] = result{hung: true}
			}
		}()
	}
	wg.Wait()
	for i, r := range results {
		switch {
		case r.hung:
			t.Errorf("%v: still waiting on the engine after 3 minutes", cases[i])
		case r.code != cli.ExitNoDocker || !strings.Contains(r.errOut, l.Addr().String()) && cases[i][0] != "doctor":
			t.Errorf("%v: exit %d, %q; want exit %d naming %s", cases[i], r.code, r.errOut, cli.ExitNoDocker, l.Addr())
		case cases[i][0] != "doctor" && strings.Count(strings.TrimSpace(r.errOut), "\n") != 0:
			t.Errorf("%v: more than one line: %q", cases[i], r.errOut)
		}
	}
	if _, err := os.Stat(kit); err == nil {
		t.Error("kit save wrote a kit without an engine")
	}
}

// A mistyped verb is a usage error, like a mistyped flag.
func TestUnknownVerbExitsTwo(t *testing.T) {
	isolate(t)
	code, _, errOut := run(t, "versoin")
	if code != cli.ExitUsage || !strings.Contains(errOut, `unknown command "versoin"`) {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}

// A KINDLAB_STATE_DIR that cannot be a directory is bad input: one line
// naming the variable and its value, exit 2, before anything is done.
func TestBadStateDirIsNamed(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{file, dangling, filepath.Join(file, "state")} {
		t.Setenv("KINDLAB_STATE_DIR", bad)
		t.Setenv("KUBECONFIG", filepath.Join(dir, "kubeconfig"))
		code, _, errOut := run(t, "render", "nftables")
		if code != 2 || !strings.Contains(errOut, "KINDLAB_STATE_DIR="+bad) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("KINDLAB_STATE_DIR=%s: exit %d, %q; want exit 2 and one line naming the variable", bad, code, errOut)
		}
	}
}

// TestOtherProviderRefused: a lab kindlab brought up on podman is not
// taken down, checked, reset or re-upped through Docker (which would not
// find its nodes, forget the lab and release Docker's registry): exit 2,
// one line naming the recorded provider and the flag, the record kept.
// down and reset of a name that cannot be a cluster are bad input (exit 2,
// one line naming --name), and of a cluster that never existed they leave
// nothing: no lock or progress file for a mistyped name.
func TestDownResetOfNoClusterLeaveNothing(t *testing.T) {
	if exec.Command("docker", "version").Run() != nil {
		if os.Getenv("KINDLAB_REQUIRE_DOCKER") == "1" {
			t.Fatal("no Docker engine answers (and KINDLAB_REQUIRE_DOCKER=1 forbids skipping)")
		}
		t.Skip("no Docker engine answers")
	}
	dir := isolate(t)
	for _, args := range [][]string{{"down", "../x"}, {"down", "--name", "A_B"}, {"reset", "--name", "../x"}, {"reset", "--name", "a\x1b[31mred"}} {
		code, _, errOut := run(t, args...)
		if code != cli.ExitUsage || !strings.HasPrefix(errOut, "ERROR: --name: ") || strings.Count(errOut, "\n") != 1 {
			t.Errorf("kindlab %v: exit %d, stderr %q; want exit 2 and one --name line", args, code, errOut)
		}
	}
	code, _, errOut := run(t, "down", "kindlab-never-was")
	if code != 0 || !strings.Contains(errOut, `Nothing to remove: no cluster "kindlab-never-was"`) {
		t.Errorf("down of no cluster: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "reset", "--name", "kindlab-never-was"); code != cli.ExitUsage || !strings.Contains(errOut, "no record") {
		t.Errorf("reset of no cluster: exit %d, %q", code, errOut)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "state", "locks")); len(entries) != 0 {
		t.Errorf("lock files left for clusters that never were: %v", entries)
	}
}

func TestOtherProviderRefused(t *testing.T) {
	if exec.Command("docker", "version").Run() != nil {
		if os.Getenv("KINDLAB_REQUIRE_DOCKER") == "1" {
			t.Fatal("no Docker engine answers (and KINDLAB_REQUIRE_DOCKER=1 forbids skipping)")
		}
		t.Skip("no Docker engine answers")
	}
	dir := isolate(t)
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "")
	name := "kindlab-clitest-on-podman"
	store := state.Store{Root: filepath.Join(dir, "state")}
	if err := store.Save(state.Record{Cluster: name, Lab: "nftables", Registry: true, RegistryPort: 5001, Provider: "podman"}); err != nil {
		t.Fatal(err)
	}
	want := "ERROR: cluster " + name + " runs on podman (kindlab up recorded it), not docker: run this with --provider podman (or KIND_EXPERIMENTAL_PROVIDER=podman); nothing was changed\n"
	for _, args := range [][]string{{"down", "--name", name}, {"--provider", "docker", "check", "nftables", "--name", name},
		{"reset", "nftables", "--name", name}, {"up", "nftables", "--name", name}} {
		code, _, errOut := run(t, args...)
		if code != cli.ExitUsage || errOut != want {
			t.Errorf("kindlab %v: exit %d, stderr %q; want exit 2 and %q", args, code, errOut, want)
		}
	}
	if rec, err := store.Load(name); err != nil || rec.Provider != "podman" {
		t.Errorf("record after the refusals: %+v, %v", rec, err)
	}
}

// status --fleet takes a fleet's name, a DNS label: anything else is a usage
// error, not an empty fleet with a suggestion to up an invalid name.
func TestStatusFleetNameIsChecked(t *testing.T) {
	isolate(t)
	code, out, errOut := run(t, "status", "--fleet", "../x")
	if code != cli.ExitUsage || out != "" || !strings.HasPrefix(errOut, `ERROR: --fleet: "../x" is not valid`) || strings.Count(errOut, "\n") != 1 {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// A mistyped verb gets cobra's suggestion as cobra writes it, on lines of
// its own (the error line escapes a terminal's escapes, not newlines or
// tabs: found by the fresh-user review, session 12).
func TestUnknownVerbSuggests(t *testing.T) {
	isolate(t)
	code, _, errOut := run(t, "stauts")
	if code != cli.ExitUsage || !strings.Contains(errOut, "ERROR: unknown command \"stauts\" for \"kindlab\"\n\nDid you mean this?\n\tstatus\n") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// render -o json's keys are camelCase throughout, the instructions' too
// (they were "Lab" and "Text": fresh-user review, session 12).
func TestRenderJSONInstructions(t *testing.T) {
	isolate(t)
	code, out, errOut := run(t, "render", "nftables", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var plan struct {
		Instructions []map[string]any `json:"instructions"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Instructions) == 0 || plan.Instructions[0]["lab"] != "nftables" || plan.Instructions[0]["text"] == nil {
		t.Errorf("instructions %v, want lab and text keys", plan.Instructions)
	}
}
