package lab_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"

	"github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/lab"
)

const pinned = "kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b"

func builtin(t *testing.T) *lab.Catalog {
	t.Helper()
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBuiltinLabsResolve(t *testing.T) {
	c := builtin(t)
	features := []string{"apparmor", "kube-proxy-health", "pv-last-transition-time", "nftables", "pv-reclaim-policy",
		"node-bound-token", "multi-service-cidr", "traffic-distribution", "image-volume", "allocated-resources-status", "anonymous-auth"}
	for _, name := range append(features, "base", "all-features") {
		r, err := c.Resolve(name, lab.ResolveOptions{})
		if err != nil {
			t.Fatalf("resolve %s: %v", name, err)
		}
		if got := len(r.Nodes); got != 3 {
			t.Errorf("%s: %d nodes, want 1 control plane and 2 workers", name, got)
		}
		// Upstream's traffic-distribution test needs three zones with
		// schedulable nodes; the lab gets them from its control plane, and
		// all-features from the lab, while the other labs keep base's.
		zones, schedulable := map[string]bool{}, 0
		for _, n := range r.Nodes {
			if n.Role == lab.RoleWorker || n.Schedulable {
				zones[n.Labels["topology.kubernetes.io/zone"]] = true
				schedulable++
			}
		}
		want := 2
		if name == "traffic-distribution" || name == "all-features" {
			want = 3
		}
		if len(zones) != want || schedulable != want {
			t.Errorf("%s: schedulable nodes in zones %v (%d nodes), want %d zones", name, zones, schedulable, want)
		}
		if err := lab.ValidateNodeImage(r.NodeImage); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	all, err := c.Resolve("all-features", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// all-features is the union of the feature labs, not a copy of them.
	for _, f := range features {
		r, _ := c.Resolve(f, lab.ResolveOptions{})
		for g, v := range r.FeatureGates {
			if all.FeatureGates[g] != v {
				t.Errorf("all-features lacks %s's gate %s=%t", f, g, v)
			}
		}
		for _, ch := range r.Checks {
			if !slices.Contains(all.Checks, ch) {
				t.Errorf("all-features lacks %s's check %s", f, ch)
			}
		}
		for _, w := range r.Workloads {
			found := false
			for _, aw := range all.Workloads {
				found = found || aw.Name == w.Name
			}
			if !found {
				t.Errorf("all-features lacks %s's workload %s", f, w.Name)
			}
		}
	}
	for _, g := range []string{"ImageVolume", "AnonymousAuthConfigurableEndpoints", "MultiCIDRServiceAllocator"} {
		if !all.FeatureGates[g] {
			t.Errorf("all-features: gate %s not on", g)
		}
	}
	if all.RuntimeConfig["networking.k8s.io/v1beta1"] != "true" {
		t.Errorf("all-features: runtime config %v lacks networking.k8s.io/v1beta1", all.RuntimeConfig)
	}
	if all.Networking.KubeProxyMode != "nftables" {
		t.Errorf("all-features: kube-proxy mode %q", all.Networking.KubeProxyMode)
	}
	if all.AuthenticationConfig == nil || !all.Registry || len(all.Artifacts) != 1 {
		t.Errorf("all-features: auth config %v, registry %t, artifacts %d", all.AuthenticationConfig, all.Registry, len(all.Artifacts))
	}
	data, err := all.AuthenticationConfig.Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/livez", "/readyz", "/healthz", "/api/v1/namespaces/kube-public/configmaps/cluster-info", "v1alpha1"} {
		if !strings.Contains(string(data), p) {
			t.Errorf("authentication config lacks %s", p)
		}
	}
}

// lab writes a lab file with the given spec body (indented under spec:).
func labFile(name, spec string) string {
	return "apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: " + name + "\nspec:\n" + spec
}

const goodNodes = "  nodeImage: " + pinned + "\n  nodes:\n  - role: control-plane\n  - role: worker\n"

func TestBadInput(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string // path -> content; the lab under test is labs/x.yaml
		lab   string            // lab to resolve (default x)
		want  []string          // substrings of the one-line error
	}{
		{"unknown field", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  nodez: 3\n")},
			"", []string{"builtin:labs/x.yaml:10:", "spec.nodez: unknown field", "valid here:", "nodes"}},
		{"unknown nested field", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"    rol: worker\n")},
			"", []string{":10:", "spec.nodes[1].rol: unknown field", "role"}},
		{"unknown top-level field", map[string]string{"labs/x.yaml": labFile("x", goodNodes) + "status: {}\n"},
			"", []string{"status: unknown field", "apiVersion, kind, metadata, spec"}},
		{"unknown feature gate", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  featureGates:\n    ImageVolumes: true\n")},
			"", []string{":11:", "spec.featureGates.ImageVolumes", `Kubernetes 1.31 has no feature gate "ImageVolumes"`, `did you mean "ImageVolume"`}},
		{"gate 1.31 does not have (added in 1.32)", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  featureGates:\n    DRAResourceClaimDeviceStatus: true\n")},
			"", []string{"spec.featureGates.DRAResourceClaimDeviceStatus", "Kubernetes 1.31 has no feature gate"}},
		{"GA gate locked", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  featureGates:\n    AppArmor: false\n")},
			"", []string{"spec.featureGates.AppArmor", "GA in 1.31 and locked to true"}},
		{"bad node role", map[string]string{"labs/x.yaml": labFile("x", "  nodeImage: "+pinned+"\n  nodes:\n  - role: control-plane\n  - role: master\n")},
			"", []string{":9:", "spec.nodes[1].role", `"master" is not a node role (valid: control-plane, worker)`}},
		{"node image not pinned", map[string]string{"labs/x.yaml": labFile("x", "  nodeImage: "+pinned+"\n  nodes:\n  - role: control-plane\n  - role: worker\n    image: kindest/node:v1.31.14\n")},
			"", []string{":10:", "spec.nodes[1].image", `"kindest/node:v1.31.14" is not pinned: add its digest`}},
		{"zero control planes", map[string]string{"labs/x.yaml": labFile("x", "  nodeImage: "+pinned+"\n  nodes:\n  - role: worker\n")},
			"", []string{"spec.nodes", "no node has role control-plane"}},
		{"no nodes at all", map[string]string{"labs/x.yaml": labFile("x", "  nodeImage: "+pinned+"\n")},
			"", []string{"spec.nodes", "missing", "control-plane"}},
		{"missing referenced file", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  apiServer:\n    authenticationConfig: ../fixtures/nope.yaml\n")},
			"", []string{":11:", "spec.apiServer.authenticationConfig", `"../fixtures/nope.yaml" does not exist`}},
		{"missing workload directory", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  workloads:\n  - name: w\n    path: ../fixtures/none\n")},
			"", []string{"spec.workloads[0].path", "does not exist"}},
		{"name not a DNS label", map[string]string{"labs/x.yaml": labFile("My_Lab", goodNodes)},
			"", []string{":4:", "metadata.name", `"My_Lab" is not valid`, "DNS label"}},
		{"two labs with the same name", map[string]string{"labs/x.yaml": labFile("x", goodNodes), "labs/y.yaml": labFile("x", goodNodes)},
			"", []string{"builtin:labs/y.yaml:4:", "metadata.name", `lab "x" is also defined in builtin:labs/x.yaml`}},
		{"unpinned node image", map[string]string{"labs/x.yaml": labFile("x", "  nodeImage: kindest/node:v1.31.14\n  nodes:\n  - role: control-plane\n")},
			"", []string{":6:", "spec.nodeImage", "is not pinned", "sha256"}},
		{"no node image after includes", map[string]string{"labs/x.yaml": labFile("x", "  nodes:\n  - role: control-plane\n")},
			"", []string{"spec.nodeImage", "missing"}},
		{"wrong apiVersion", map[string]string{"labs/x.yaml": strings.Replace(labFile("x", goodNodes), "kindlab.dev/v1alpha1", "kindlab.dev/v2", 1)},
			"", []string{":1:", "apiVersion", `"kindlab.dev/v2" is not supported (valid: kindlab.dev/v1alpha1)`}},
		{"unknown include", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  include: [nope]\n")},
			"", []string{"spec.include[0]", `unknown lab "nope"`}},
		{"mistyped include", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  include: [bse]\n"), "labs/base.yaml": labFile("base", goodNodes)},
			"", []string{"spec.include[0]", `unknown lab "bse" (did you mean "base"?) (known: base, x`}},
		{"include cycle", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  include: [y]\n"), "labs/y.yaml": labFile("y", "  include: [x]\n")},
			"", []string{"include cycle: x -> y -> x"}},
		{"conflicting gates between included labs", map[string]string{
			"labs/x.yaml": labFile("x", goodNodes+"  include: [a, b]\n"),
			"labs/a.yaml": labFile("a", "  featureGates:\n    ImageVolume: true\n"),
			"labs/b.yaml": labFile("b", "  featureGates:\n    ImageVolume: false\n")},
			"", []string{"builtin:labs/b.yaml", "spec.featureGates.ImageVolume", `conflicts with true from lab "a"`}},
		{"bad kube-proxy mode", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  networking:\n    kubeProxyMode: ebpf\n")},
			"", []string{"spec.networking.kubeProxyMode", "valid: iptables, nftables, ipvs, none"}},
		{"bad runtime config value", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  runtimeConfig:\n    networking.k8s.io/v1beta1: yes\n")},
			"", []string{`spec.runtimeConfig["networking.k8s.io/v1beta1"]`, `valid: "true", "false"`}},
		{"artifact reference does not parse", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  artifacts:\n  - name: m\n    source: ../fixtures\n    reference: 'localhost:5001/UPPER:v1'\n")},
			"", []string{"spec.artifacts[0].reference", "is not an image reference"}},
		// A stranger's lab must not push files off the machine, nor take
		// the folder it was saved in (a home folder) as an artifact or a
		// workload (hostile review, session 12).
		{"artifact pushed to another registry", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  artifacts:\n  - name: m\n    source: ../fixtures\n    reference: ttl.sh/loot:1h\n")},
			"", []string{":13:", "spec.artifacts[0].reference", `"ttl.sh/loot:1h" is in registry ttl.sh`, "valid: localhost:5001/NAME:TAG"}},
		{"artifact pushed to 127.0.0.1", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  artifacts:\n  - name: m\n    source: ../fixtures\n    reference: 127.0.0.1:5999/loot:v1\n")},
			"", []string{"spec.artifacts[0].reference", "is in registry 127.0.0.1:5999"}},
		{"artifact source is the lab's folder", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  artifacts:\n  - name: m\n    source: .\n    reference: localhost:5001/m:v1\n")},
			"", []string{":12:", "spec.artifacts[0].source", `"." holds the lab file itself`}},
		{"artifact source is the tree root", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  artifacts:\n  - name: m\n    source: ..\n    reference: localhost:5001/m:v1\n")},
			"", []string{"spec.artifacts[0].source", `".." holds the lab file itself`}},
		{"artifact source is the lab's folder, spelled long", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  artifacts:\n  - name: m\n    source: ../labs/\n    reference: localhost:5001/m:v1\n")},
			"", []string{"spec.artifacts[0].source", "holds the lab file itself"}},
		{"two workloads, one folder", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  workloads:\n  - name: a\n    path: ../fixtures\n  - name: b\n    path: ../fixtures/\n")},
			"", []string{":14:", "spec.workloads[1].path", `"../fixtures/" is also workload a's folder`}},
		{"too many nodes", map[string]string{"labs/x.yaml": labFile("x", "  nodeImage: "+pinned+"\n  nodes:\n  - role: control-plane\n"+strings.Repeat("  - role: worker\n", 32))},
			"", []string{":8:", "spec.nodes", "33 nodes: a lab has at most 32"}},
		{"too many control planes", map[string]string{"labs/x.yaml": labFile("x", "  nodeImage: "+pinned+"\n  nodes:\n"+strings.Repeat("  - role: control-plane\n", 8))},
			"", []string{"spec.nodes", "8 control-plane nodes: a lab has at most 7"}},
		{"workload path empty", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  workloads:\n  - name: w\n    path: ''\n")},
			"", []string{":12:", "spec.workloads[0].path", "missing: a folder of manifests"}},
		{"workload path is the tree root", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  workloads:\n  - name: w\n    path: ..\n")},
			"", []string{"spec.workloads[0].path", `".." holds the lab file itself`}},
		// Map keys are quoted into the field path: one bracket or quote in
		// a key once panicked the line lookup.
		{"feature gate key with a bracket", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  featureGates:\n    \"a[\": true\n")},
			"", []string{":11:", `spec.featureGates["a["]`, `no feature gate "a["`}},
		// kube-apiserver reads v1/pods as v1 (the whole core API), and
		// v1 with api/v1 is a coin toss (hostile review, session 13).
		{"an empty node", map[string]string{"labs/x.yaml": labFile("x", "  nodes:\n  - role: control-plane\n  - ~\n")},
			"", []string{":8:", "spec.nodes[1]: an empty item"}},
		{"a label key that is a list", map[string]string{"labs/x.yaml": labFile("x", "  nodes:\n  - role: control-plane\n    labels:\n      [a]: b\n")},
			"", []string{":9:", "spec.nodes[0].labels: a key here is a name, not a list"}},
		{"runtime config of a core resource", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  runtimeConfig:\n    v1/pods: \"false\"\n")},
			"", []string{":11:", `spec.runtimeConfig["v1/pods"]: kube-apiserver 1.31 reads v1/pods as v1, the whole core API`}},
		{"runtime config of the core API twice", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  runtimeConfig:\n    v1: \"true\"\n    api/v1: \"false\"\n")},
			"", []string{`spec.runtimeConfig["v1"]: api/v1 and v1 both name the core API`}},
		{"runtime config api/all off with api/legacy", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  runtimeConfig:\n    api/all: \"false\"\n    api/legacy: \"true\"\n")},
			"", []string{`spec.runtimeConfig["api/all"]`, "invalid key with only api/all=false"}},
		{"runtime config key with brackets and a quote", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  runtimeConfig:\n    'a\"]b[': \"true\"\n")},
			"", []string{":11:", `spec.runtimeConfig["a\"]b["]`, "is not an API group/version"}},
		{"node label key with brackets and a quote", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"    labels: {'a\"][': b}\n")},
			"", []string{":10:", `spec.nodes[1].labels["a\"]["]`, "is not a label key"}},
		{"unpinned workload image", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  images:\n  - name: agnhost\n    reference: registry.k8s.io/e2e-test-images/agnhost:2.52\n")},
			"", []string{"spec.images[0].reference", "is not pinned"}},
		{"wrong type", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  featureGates:\n    ImageVolume: maybe\n")},
			"", []string{":11:", `spec.featureGates.ImageVolume: expected true or false, not "maybe"`}},
		{"two documents", map[string]string{"labs/x.yaml": labFile("x", goodNodes) + "---\n" + labFile("y", goodNodes)},
			"", []string{"one document"}},
		{"shim without the ImageVolume gate", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  containerRuntime:\n    imageVolumeReadOnlyShim: true\n")},
			"", []string{":11:", "spec.containerRuntime.imageVolumeReadOnlyShim", "spec.featureGates.ImageVolume", "valid: turn the gate on"}},
		{"shim is a bool", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  containerRuntime:\n    imageVolumeReadOnlyShim: yes please\n")},
			"", []string{":11:", `spec.containerRuntime.imageVolumeReadOnlyShim: expected true or false, not "yes please"`}},
		// A value of the wrong shape names the field and what it takes, not
		// the Go type yaml.v3 would name ("into lab.Registry").
		{"registry is a number", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  registry: 5\n")},
			"", []string{":10:", "spec.registry: expected a mapping with the fields enabled, not the number 5"}},
		{"workloads is a string", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  workloads: foo\n")},
			"", []string{":10:", `spec.workloads: expected a list of mappings, not "foo"`}},
		{"node labels a list", map[string]string{"labs/x.yaml": labFile("x", "  nodes:\n  - role: control-plane\n    labels: [a]\n")},
			"", []string{":8:", "spec.nodes[0].labels: expected a mapping of names to strings, not a list"}},
		{"unknown containerRuntime field", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"  containerRuntime:\n    readOnlyShim: true\n")},
			"", []string{":11:", "spec.containerRuntime.readOnlyShim: unknown field", "imageVolumeReadOnlyShim"}},
		{"included labs disagree on the shim", map[string]string{
			"labs/x.yaml": labFile("x", goodNodes+"  include: [a, b]\n"),
			"labs/a.yaml": labFile("a", "  featureGates:\n    ImageVolume: true\n  containerRuntime:\n    imageVolumeReadOnlyShim: true\n"),
			"labs/b.yaml": labFile("b", "  containerRuntime:\n    imageVolumeReadOnlyShim: false\n")},
			"", []string{"builtin:labs/b.yaml:7:", "spec.containerRuntime.imageVolumeReadOnlyShim", `false conflicts with true from lab "a"`}},
		{"schedulable worker", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"    schedulable: true\n")},
			"", []string{":10:", "spec.nodes[1].schedulable", "only a control-plane node can be made schedulable (a worker always is)"}},
		// Node labels go to the kubelet's --node-labels joined with commas
		// (kind): each is checked as the kubelet checks it.
		{"node label key", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"    labels:\n      \"bad key!\": x\n")},
			"", []string{":11:", `spec.nodes[1].labels["bad key!"]`, `"bad key!" is not a label key`}},
		{"node label value with a path", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"    labels:\n      zone: ../../x\n")},
			"", []string{":11:", `spec.nodes[1].labels["zone"]`, `"../../x" is not a label value`}},
		{"node label value adding labels", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"    labels:\n      a: \"x,b=c\"\n")},
			"", []string{":11:", `spec.nodes[1].labels["a"]`, `"x,b=c" is not a label value`}},
		{"node label kubelets may not set", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"    labels:\n      node-role.kubernetes.io/control-plane: \"\"\n")},
			"", []string{":11:", `spec.nodes[1].labels["node-role.kubernetes.io/control-plane"]`, "kubelets may not label their own node with", "topology.kubernetes.io/zone"}},
		{"node label of node-restriction", map[string]string{"labs/x.yaml": labFile("x", goodNodes+"    labels:\n      node-restriction.kubernetes.io/x: y\n")},
			"", []string{":11:", "kubelets may not label their own node"}},
		// A lab overrides the labs it includes, not its siblings: b's nodes
		// replace base's, c's (which includes neither b nor a) conflict.
		{"sibling labs disagree on nodes", map[string]string{
			"labs/x.yaml":    labFile("x", "  include: [b, c]\n"),
			"labs/base.yaml": labFile("base", goodNodes),
			"labs/b.yaml":    labFile("b", "  include: [base]\n  nodes:\n  - role: control-plane\n    schedulable: true\n"),
			"labs/c.yaml":    labFile("c", "  include: [base]\n  nodes:\n  - role: control-plane\n  - role: worker\n  - role: worker\n")},
			"", []string{"builtin:labs/c.yaml", "spec.nodes", `from lab "b"`}},
		// An alias is checked where it is used (hostile review, session 12:
		// unknown fields got past through one).
		{"unknown field through an alias", map[string]string{"labs/x.yaml": labFile("x", "  nodeImage: "+pinned+"\n  nodes:\n  - role: control-plane\n    labels: &l {role: worker, imagee: foo}\n  - *l\n")},
			"", []string{":9:", "spec.nodes[1].imagee: unknown field"}},
		{"unknown field only through an alias", map[string]string{"labs/x.yaml": "apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata: &m {name: x}\nspec:\n  apiServer: *m\n" + goodNodes},
			"", []string{":3:", "spec.apiServer.name: unknown field"}},
		{"not YAML", map[string]string{"labs/x.yaml": "apiVersion: [\n"},
			"", []string{"builtin:labs/x.yaml", "not valid YAML"}},
		// The line of a syntax error is where every other error has it.
		{"a flow list left open", map[string]string{"labs/x.yaml": "apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: x\nspec:\n  include: [base\n  nodes:\n  - role: control-plane\n"},
			"", []string{"builtin:labs/x.yaml:", ": not valid YAML: did not find expected"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{"fixtures/.keep": {Data: nil}}
			for p, content := range tc.files {
				fsys[p] = &fstest.MapFile{Data: []byte(content)}
			}
			c := lab.NewCatalog()
			err := c.AddBuiltin(fsys, "labs")
			if err == nil {
				_, err = c.Resolve("x", lab.ResolveOptions{KnownChecks: []string{}})
			}
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

func TestUnknownCheck(t *testing.T) {
	c := builtin(t)
	_, err := c.Resolve("nftables", lab.ResolveOptions{KnownChecks: []string{"other"}})
	if err == nil || !strings.Contains(err.Error(), `unknown check "nftables" (valid: other)`) {
		t.Fatalf("got %v", err)
	}
}

func TestDiskLabShadowsBuiltinAndReachesFixtures(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "labs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "fixtures", "w"), 0o755); err != nil {
		t.Fatal(err)
	}
	content := labFile("nftables", "  include: [base]\n  workloads:\n  - name: w\n    path: ../fixtures/w\n")
	if err := os.WriteFile(filepath.Join(dir, "labs", "nftables.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	c := lab.NewCatalog()
	if err := c.AddDir(filepath.Join(dir, "labs")); err != nil {
		t.Fatal(err)
	}
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("nftables", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Source, dir) || len(r.Workloads) != 1 || r.Workloads[0].Name != "w" {
		t.Fatalf("disk lab did not shadow the built-in one: source %s, workloads %+v", r.Source, r.Workloads)
	}
	if r.Networking.KubeProxyMode != "" {
		t.Fatalf("shadowed lab's fields leaked: %+v", r.Networking)
	}
	if b, ok := c.Shadows("nftables"); !ok || b != "builtin:labs/nftables.yaml" {
		t.Errorf("Shadows(nftables) = %q, %v; want the built-in file", b, ok)
	}
	if b, ok := c.Shadows("base"); ok {
		t.Errorf("Shadows(base) = %q: no disk lab hides it", b)
	}
	// A byte-identical copy of a built-in lab (kindlab's own source tree)
	// is not reported.
	same, err := kindlab.Files.ReadFile(kindlab.LabsDir + "/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "labs", "base.yaml"), same, 0o644); err != nil {
		t.Fatal(err)
	}
	c3 := lab.NewCatalog()
	if err := c3.AddDir(filepath.Join(dir, "labs")); err != nil {
		t.Fatal(err)
	}
	if err := c3.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	if b, ok := c3.Shadows("base"); ok {
		t.Errorf("Shadows(base) = %q for an identical copy", b)
	}
	if _, ok := c3.Shadows("nftables"); !ok {
		t.Error("Shadows(nftables) lost beside an identical base")
	}
	// Two disk labs of one name are an error, unlike shadowing.
	if err := os.WriteFile(filepath.Join(dir, "labs", "copy.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	c2 := lab.NewCatalog()
	if err := c2.AddDir(filepath.Join(dir, "labs")); err == nil || !strings.Contains(err.Error(), "lab names must be unique") {
		t.Fatalf("duplicate disk labs: got %v", err)
	}
}

func TestTopLabOverridesIncludes(t *testing.T) {
	fsys := fstest.MapFS{
		"labs/a.yaml": {Data: []byte(labFile("a", goodNodes+"  featureGates:\n    ImageVolume: true\n"))},
		"labs/x.yaml": {Data: []byte(labFile("x", "  include: [a]\n  featureGates:\n    ImageVolume: false\n"))},
	}
	c := lab.NewCatalog()
	if err := c.AddBuiltin(fsys, "labs"); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("x", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.FeatureGates["ImageVolume"] {
		t.Fatal("the including lab should override its includes")
	}
	if strings.Join(r.Labs, ",") != "a,x" {
		t.Fatalf("merge order %v", r.Labs)
	}
}

// TestImageVolumeShimMerge: the image-volume lab (and so all-features)
// turns the shim on; a lab that includes it can turn it off again with an
// explicit false, and a lab that says nothing leaves it off.
func TestImageVolumeShimMerge(t *testing.T) {
	c := builtin(t)
	for name, want := range map[string]bool{"image-volume": true, "all-features": true, "nftables": false, "base": false} {
		r, err := c.Resolve(name, lab.ResolveOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.ImageVolumeReadOnlyShim != want {
			t.Errorf("%s: imageVolumeReadOnlyShim %t, want %t", name, r.ImageVolumeReadOnlyShim, want)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "no-shim.yaml")
	content := labFile("no-shim", "  include: [all-features]\n  containerRuntime:\n    imageVolumeReadOnlyShim: false\n")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddFile(file); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("no-shim", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.ImageVolumeReadOnlyShim || !r.FeatureGates["ImageVolume"] {
		t.Fatalf("explicit false in the including lab: shim %t, ImageVolume %t; want the shim off, the gate on", r.ImageVolumeReadOnlyShim, r.FeatureGates["ImageVolume"])
	}
}

func FuzzParse(f *testing.F) {
	entries, _ := kindlab.Files.ReadDir(kindlab.LabsDir)
	for _, e := range entries {
		b, _ := kindlab.Files.ReadFile(kindlab.LabsDir + "/" + e.Name())
		f.Add(b)
	}
	f.Add([]byte(labFile("x", goodNodes+"  runtimeConfig:\n    a: b\n")))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := lab.Parse(data, lab.Origin{FS: kindlab.Files, Path: "labs/fuzz.yaml", Display: "fuzz.yaml"})
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if l.Metadata.Name == "" {
			t.Fatal("a parsed lab has no name")
		}
	})
}

func TestOverrideImages(t *testing.T) {
	r, err := builtin(t).Resolve("all-features", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	orig, ok := r.Image("agnhost")
	if !ok {
		t.Fatal("all-features has no agnhost image")
	}
	local := "localhost:5001/offline/agnhost:2.52@sha256:" + strings.Repeat("ab", 32)
	if err := r.OverrideImages(map[string]string{"agnhost": local}); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Image("agnhost"); got != local || got == orig {
		t.Fatalf("image %s, was %s", got, orig)
	}
	for _, bad := range []struct {
		overrides map[string]string
		want      string
	}{
		{map[string]string{"nope": local}, `has no image "nope" (valid: agnhost`},
		{map[string]string{"agnhost": "localhost:5001/agnhost:2.52"}, "is not pinned"},
	} {
		if err := r.OverrideImages(bad.overrides); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: got %v, want %q", bad.overrides, err, bad.want)
		}
	}
	if _, err := lab.ParseOverrides([]string{"agnhost"}); err == nil || !strings.Contains(err.Error(), "NAME=REFERENCE") {
		t.Errorf("bad pair: %v", err)
	}
}

// A lab from someone else may read only its own tree: `..` past it, an
// absolute path, and a symlink out of it are refused with the field path,
// whatever the target (issue 12: /etc/passwd, /proc/self/environ).
func TestDiskLabStaysInsideItsTree(t *testing.T) {
	dir := t.TempDir()
	proj := filepath.Join(dir, "proj")
	for _, d := range []string{"labs", "fixtures/ok", "elsewhere"} {
		if err := os.MkdirAll(filepath.Join(proj, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(dir, "secret.yaml")
	if err := os.WriteFile(secret, []byte("stolen: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proj, "fixtures/ok/auth.yaml"), []byte("a: b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Links that leave the tree: plainly, and through a chain that looks
	// inside by its text (c -> ., d -> c/c/../../…).
	if err := os.Symlink(secret, filepath.Join(proj, "fixtures/out.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(".", filepath.Join(proj, "fixtures/c")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("c/c/../../secret.yaml", filepath.Join(proj, "fixtures/chain.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(proj, "fixtures/outdir")); err != nil {
		t.Fatal(err)
	}
	depth := strings.Repeat("../", strings.Count(proj, "/")+2)
	cases := []struct {
		name, file, spec, want string
	}{
		{"inside via labs/..", "labs/ok.yaml", "  apiServer:\n    authenticationConfig: ../fixtures/ok/auth.yaml\n", ""},
		{"dotdot to /etc/passwd", "labs/a.yaml", "  apiServer:\n    authenticationConfig: " + depth + "etc/passwd\n",
			"spec.apiServer.authenticationConfig: \"" + depth + "etc/passwd\" leaves the lab's tree " + proj},
		{"dotdot to /proc/self/environ", "labs/b.yaml", "  apiServer:\n    authenticationConfig: " + depth + "proc/self/environ\n",
			"leaves the lab's tree " + proj},
		{"absolute", "labs/c.yaml", "  apiServer:\n    authenticationConfig: /etc/passwd\n", "is absolute"},
		{"a dotfile beside the lab", "elsewhere/h.yaml", "  apiServer:\n    authenticationConfig: .ssh/id_rsa\n", `names the hidden ".ssh"`},
		{"symlink out", "labs/d.yaml", "  apiServer:\n    authenticationConfig: ../fixtures/out.yaml\n",
			"\"../fixtures/out.yaml\" cannot be read inside the lab's tree " + proj},
		{"symlink chain out", "labs/e.yaml", "  apiServer:\n    authenticationConfig: ../fixtures/chain.yaml\n", "cannot be read inside the lab's tree"},
		{"artifact dir through a link out", "labs/f.yaml", "  artifacts:\n  - name: x\n    source: ../fixtures/outdir\n    reference: localhost:5001/x:v1\n",
			"spec.artifacts[0].source: \"../fixtures/outdir\" cannot be read inside"},
		// Outside a labs/ folder the tree is the lab's own folder.
		{"no labs/ parent", "elsewhere/g.yaml", "  apiServer:\n    authenticationConfig: ../fixtures/ok/auth.yaml\n",
			"leaves the lab's tree " + filepath.Join(proj, "elsewhere")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.TrimSuffix(filepath.Base(tc.file), ".yaml")
			f := filepath.Join(proj, tc.file)
			if err := os.WriteFile(f, []byte(labFile(name, goodNodes+tc.spec)), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := lab.NewCatalog().AddFile(f)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("a lab inside its tree was refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("want one line containing %q, got %v", tc.want, err)
			}
			if !strings.HasPrefix(err.Error(), f+":") {
				t.Fatalf("the error does not name the lab file first: %v", err)
			}
		})
	}
}

// Found by the hostile review: a 20 MB lab file took 2 GB to decode, and a
// FIFO named as the authentication config hung render. Both are refused.
func TestLabFilesAreBounded(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	content := labFile("big", goodNodes) + "  description: \"" + strings.Repeat("x", lab.MaxFileSize) + "\"\n"
	if err := os.WriteFile(big, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.NewCatalog().AddFile(big); err == nil || !strings.Contains(err.Error(), "want a regular file of at most 1024 KiB") {
		t.Errorf("big lab file: %v", err)
	}
	fifo := filepath.Join(dir, "auth.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "fifo.yaml")
	os.WriteFile(f, []byte(labFile("fifo", goodNodes+"  apiServer:\n    authenticationConfig: auth.yaml\n")), 0o644)
	if _, err := lab.NewCatalog().AddFile(f); err == nil || !strings.Contains(err.Error(), `spec.apiServer.authenticationConfig: "auth.yaml" must be a regular file`) {
		t.Errorf("FIFO: %v", err)
	}
}
