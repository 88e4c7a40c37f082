package lab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/testenv"
)

// upstreamOf is what the refusing component prints for a case: its rule's
// Upstream, or for the authentication config cases (no rule: k8s.io/apiserver
// validates them) the message kube-apiserver prints.
func upstreamOf(t *testing.T, tc componentCase) string {
	t.Helper()
	if tc.rule == "" {
		return authnUpstream[tc.name]
	}
	for _, r := range lab.Rules131() {
		if r.ID == tc.rule {
			return r.Upstream
		}
	}
	t.Fatalf("case %q: no rule %q", tc.name, tc.rule)
	return ""
}

var authnUpstream = map[string]string{
	"anonymous section with its gate off":         "anonymous is not supported when AnonymousAuthConfigurableEnpoints feature gate is disabled",
	"anonymous disabled with conditions":          "enabled should be set to true when conditions are defined",
	"authentication config with an unknown field": `strict decoding error: unknown field "anonymus"`,
}

// apiserverWait bounds one kube-apiserver start: the good ones are ready in
// about 5 seconds on a 2-core machine, the slowest refusal (the repair
// controllers' one-minute wait) comes after about 65.
const apiserverWait = 100 * time.Second

// stage is one component reading what the lab renders to.
type stage struct {
	component string
	refused   bool
	output    string
}

// TestComponentRulesAgainstBinaries proves the rule table (and the
// authentication config validation) against the real components: for each
// case, the lab is rendered exactly as `kindlab up` renders it, kind's own
// code loads that kind config and writes the kubeadm config of the control
// plane, `kubeadm config validate` reads it, kube-proxy v1.31.14 reads the
// KubeProxyConfiguration kubeadm would deploy, and kube-apiserver v1.31.14
// starts with the flags kind passes it. The bad value must be refused by the
// component the case names, with the upstream message the table quotes; the
// good value must pass every one of them.
func TestComponentRulesAgainstBinaries(t *testing.T) {
	kubeadm := testenv.Binary(t, "kubeadm")
	proxy := testenv.Binary(t, "kube-proxy")
	testenv.Require(t, testenv.Options{})
	probe := buildKindProbe(t)
	for _, tc := range componentCases {
		t.Run(tc.name, func(t *testing.T) {
			// Two "never ready" cases wait over a minute each: let them
			// overlap with the others (-parallel defaults to GOMAXPROCS).
			t.Parallel()
			want := upstreamOf(t, tc)
			for _, bad := range []bool{true, false} {
				stages := runComponents(t, tc, bad, probe, kubeadm, proxy)
				last := stages[len(stages)-1]
				switch {
				case bad && !last.refused:
					t.Errorf("bad value: every component accepted it; %s should refuse with %q", tc.component, want)
				case bad && last.component != tc.component:
					t.Errorf("bad value: %s refused it, not %s: %s", last.component, tc.component, last.output)
				case bad && !strings.Contains(last.output, want):
					t.Errorf("bad value: %s refused it without %q (the table drifted from it?):\n%s", last.component, want, last.output)
				case !bad && last.refused:
					t.Errorf("good value: %s refused it:\n%s", last.component, last.output)
				}
			}
		})
	}
}

// runComponents feeds one case's lab to the components in the order a
// cluster meets them, stopping at the first that refuses.
func runComponents(t *testing.T, tc componentCase, bad bool, probe, kubeadm, proxy string) []stage {
	t.Helper()
	r, err := tc.resolveUnchecked(t, bad)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	dir := t.TempDir()
	plan, err := render.Render(r, render.Options{StateDir: dir})
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	kindCfg, err := plan.KindConfigYAML()
	if err != nil {
		t.Fatal(err)
	}
	kindFile := write(t, dir, "kind.yaml", kindCfg)

	var stages []stage
	add := func(s stage) bool {
		// klog quotes an error as a structured value (err="…\"x\"…"):
		// unquote, so the message reads as the component wrote it.
		s.output = strings.ReplaceAll(s.output, `\"`, `"`)
		stages = append(stages, s)
		return !s.refused
	}
	out, err := run(probe, kindFile)
	if !add(stage{"kind", err != nil, out}) {
		return stages
	}
	kubeadmFile := write(t, dir, "kubeadm.conf", []byte(out))
	vout, err := run(kubeadm, "config", "validate", "--config", kubeadmFile)
	if !add(stage{"kubeadm", err != nil, vout}) {
		return stages
	}
	docs := splitDocs(t, out)
	proxyCfg := kubeProxyConfig(t, docs)
	if proxyCfg != nil {
		proxyFile := write(t, dir, "kube-proxy.yaml", proxyCfg)
		// --write-config-to makes kube-proxy load, default and validate
		// its configuration, write it back and exit: its validation
		// without touching this machine's network.
		pout, err := run(proxy, "--config", proxyFile, "--write-config-to", filepath.Join(dir, "kube-proxy.out.yaml"))
		if !add(stage{"kube-proxy", err != nil, pout}) {
			return stages
		}
	}
	if tc.component != "kube-apiserver" {
		return stages
	}
	opts := apiserverOptions(t, docs, plan)
	// A refused apiserver exits at once, or after a minute for
	// MultiCIDRServiceAllocator without its API; a good one is ready in
	// seconds here. Longer than that is "never ready".
	ctx, cancel := context.WithTimeout(context.Background(), apiserverWait)
	defer cancel()
	env, err := testenv.Start(ctx, opts)
	if err == nil {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
		add(stage{"kube-apiserver", false, ""})
		return stages
	}
	msg := err.Error()
	if errors.Is(err, context.DeadlineExceeded) && strings.Count(msg, "failed: reason withheld") != 1 {
		// Never ready counts only when every other readiness check
		// passed and one is left failing: a slow start is not a refusal.
		t.Fatalf("kube-apiserver neither got ready, exited, nor failed on one check within %s: %v", apiserverWait, err)
	}
	add(stage{"kube-apiserver", true, msg})
	return stages
}

func (tc componentCase) resolveUnchecked(t *testing.T, bad bool) (*lab.Resolved, error) {
	t.Helper()
	spec, authn := tc.good, tc.authn
	if bad {
		spec = tc.bad
		if tc.badAuthn != "" {
			authn = tc.badAuthn
		}
	}
	return caseCatalog(t, spec, authn).Resolve("x", lab.ResolveOptions{SkipComponentRules: true})
}

// apiserverOptions are the flags kind's kubeadm config gives kube-apiserver
// (apiServer.extraArgs, networking.serviceSubnet), with the files render
// mounts in place of their paths on the node.
func apiserverOptions(t *testing.T, docs []map[string]any, plan *render.Plan) testenv.Options {
	t.Helper()
	var cc struct {
		APIServer struct {
			ExtraArgs map[string]string `json:"extraArgs"`
		} `json:"apiServer"`
		Networking struct {
			ServiceSubnet string `json:"serviceSubnet"`
		} `json:"networking"`
	}
	found := false
	for _, d := range docs {
		if d["kind"] == "ClusterConfiguration" {
			b, _ := yaml.Marshal(d)
			if err := yaml.Unmarshal(b, &cc); err != nil {
				t.Fatal(err)
			}
			found = true
		}
	}
	if !found {
		t.Fatal("kind's kubeadm config has no ClusterConfiguration")
	}
	opts := testenv.Options{ServiceCIDR: cc.Networking.ServiceSubnet, Unchecked: true}
	for k, v := range cc.APIServer.ExtraArgs {
		switch k {
		case "feature-gates":
			opts.FeatureGates = map[string]bool{}
			for k, v := range pairs(v) {
				opts.FeatureGates[k] = v == "true"
			}
		case "runtime-config":
			opts.RuntimeConfig = pairs(v)
		case "authentication-config":
			for _, f := range plan.Files {
				if f.ContainerPath == v {
					opts.AuthenticationConfig = []byte(f.Content)
				}
			}
			if opts.AuthenticationConfig == nil {
				t.Fatalf("--authentication-config=%s is not a file render mounts", v)
			}
		default:
			t.Fatalf("kind passes kube-apiserver --%s=%s, which this test does not forward", k, v)
		}
	}
	return opts
}

// kubeProxyConfig is the KubeProxyConfiguration kind writes, with the
// fields kubeadm fills in before it stores it in the kube-proxy ConfigMap
// (k8s.io/kubernetes v1.31.14 cmd/kubeadm/app/componentconfigs/kubeproxy.go
// Default: bindAddress, clusterCIDR from networking.podSubnet, the
// kubeconfig path); nil when kind deploys no kube-proxy (mode none).
func kubeProxyConfig(t *testing.T, docs []map[string]any) []byte {
	t.Helper()
	var kp map[string]any
	podSubnet := ""
	for _, d := range docs {
		switch d["kind"] {
		case "KubeProxyConfiguration":
			kp = d
		case "ClusterConfiguration":
			if n, ok := d["networking"].(map[string]any); ok {
				podSubnet, _ = n["podSubnet"].(string)
			}
		}
	}
	if kp == nil {
		return nil
	}
	if _, ok := kp["bindAddress"]; !ok {
		kp["bindAddress"] = "0.0.0.0"
	}
	if _, ok := kp["clusterCIDR"]; !ok && podSubnet != "" {
		kp["clusterCIDR"] = podSubnet
	}
	cc, _ := kp["clientConnection"].(map[string]any)
	if cc == nil {
		cc = map[string]any{}
	}
	if _, ok := cc["kubeconfig"]; !ok {
		cc["kubeconfig"] = "/var/lib/kube-proxy/kubeconfig.conf"
	}
	kp["clientConnection"] = cc
	b, err := yaml.Marshal(kp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func splitDocs(t *testing.T, s string) []map[string]any {
	t.Helper()
	var docs []map[string]any
	for _, part := range strings.Split(s, "\n---\n") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		var d map[string]any
		if err := yaml.Unmarshal([]byte(part), &d); err != nil {
			t.Fatalf("kind's kubeadm config: %v\n%s", err, part)
		}
		docs = append(docs, d)
	}
	return docs
}

// pairs splits k1=v1,k2=v2.
func pairs(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func run(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func write(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// buildKindProbe builds testdata/kindprobe inside a scratch copy of the
// kind module kindlab pins, where Go lets it import kind's internal
// packages (see its doc comment).
func buildKindProbe(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the kind probe is built with the go command: %v", err)
	}
	// The version go.mod pins, downloaded if this machine has not yet.
	modDir, err := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/kind").Output()
	if err != nil {
		t.Fatalf("download the sigs.k8s.io/kind module: %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(modDir, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("locate the sigs.k8s.io/kind module: %v (%s)", err, modDir)
	}
	src := mod.Dir
	dst := filepath.Join(t.TempDir(), "kind")
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	main, err := os.ReadFile(filepath.Join("testdata", "kindprobe", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dst, "pkg", "cluster", "kindprobe"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dst, "pkg", "cluster", "kindprobe"), "main.go", main)
	bin := filepath.Join(t.TempDir(), "kindprobe")
	cmd := exec.Command("go", "build", "-o", bin, "./pkg/cluster/kindprobe")
	cmd.Dir = dst
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the kind probe: %v\n%s", err, out)
	}
	return bin
}
