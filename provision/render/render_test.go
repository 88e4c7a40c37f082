package render_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"

	"github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/render"
)

// kindDecode reads a config the way kind's own loader does
// (pkg/internal/apis/config/encoding: yaml.v3 with known fields only).
func kindDecode(t *testing.T, raw []byte) *v1alpha4.Cluster {
	t.Helper()
	d := yaml.NewDecoder(bytes.NewReader(raw))
	d.KnownFields(true)
	cfg := &v1alpha4.Cluster{}
	if err := d.Decode(cfg); err != nil {
		t.Fatalf("kind would refuse the config: %v\n%s", err, raw)
	}
	if cfg.APIVersion != "kind.x-k8s.io/v1alpha4" || cfg.Kind != "Cluster" {
		t.Fatalf("type meta %q %q", cfg.APIVersion, cfg.Kind)
	}
	return cfg
}

func renderLab(t *testing.T, name string, opts render.Options) *render.Plan {
	t.Helper()
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve(name, lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if opts.StateDir == "" {
		opts.StateDir = "/state/" + name
	}
	p, err := render.Render(r, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRenderEveryBuiltinLab(t *testing.T) {
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	for _, name := range c.Names() {
		p := renderLab(t, name, render.Options{})
		raw, err := p.KindConfigYAML()
		if err != nil {
			t.Fatal(err)
		}
		cfg := kindDecode(t, raw)
		if cfg.Name != name || len(cfg.Nodes) != 3 {
			t.Errorf("%s: name %q, %d nodes", name, cfg.Name, len(cfg.Nodes))
		}
		for _, n := range cfg.Nodes {
			if n.Image != p.Resolved.NodeImage || !strings.Contains(n.Image, "@sha256:") {
				t.Errorf("%s: node image %q not the lab's pinned one", name, n.Image)
			}
		}
	}
}

func TestRenderAllFeatures(t *testing.T) {
	p := renderLab(t, "all-features", render.Options{StateDir: "/var/lib/kindlab/all-features"})
	raw, err := p.KindConfigYAML()
	if err != nil {
		t.Fatal(err)
	}
	cfg := kindDecode(t, raw)
	for _, g := range []string{"ImageVolume", "AnonymousAuthConfigurableEndpoints", "MultiCIDRServiceAllocator"} {
		if !cfg.FeatureGates[g] {
			t.Errorf("gate %s not on in %v", g, cfg.FeatureGates)
		}
	}
	if cfg.RuntimeConfig["networking.k8s.io/v1beta1"] != "true" {
		t.Errorf("runtimeConfig %v", cfg.RuntimeConfig)
	}
	if cfg.Networking.KubeProxyMode != v1alpha4.NFTablesProxyMode {
		t.Errorf("kubeProxyMode %q", cfg.Networking.KubeProxyMode)
	}
	roles := map[v1alpha4.NodeRole]int{}
	for _, n := range cfg.Nodes {
		roles[n.Role]++
		// traffic-distribution's third zone: the control plane, untainted.
		wantPatches := 0
		if n.Role == v1alpha4.ControlPlaneRole {
			wantPatches = 2
			if n.Labels["topology.kubernetes.io/zone"] != "zone-c" {
				t.Errorf("control plane labels %v, want zone-c", n.Labels)
			}
		}
		if len(n.KubeadmConfigPatches) != wantPatches || (wantPatches > 0 && !strings.Contains(strings.Join(n.KubeadmConfigPatches, ""), "taints: []")) {
			t.Errorf("%s: kubeadm patches %q", n.Role, n.KubeadmConfigPatches)
		}
		// Every node mounts the CRI shim (binary, unit, kubelet drop-in);
		// the control plane also the apiserver's directory, first.
		mounts := n.ExtraMounts
		switch n.Role {
		case v1alpha4.ControlPlaneRole:
			if len(mounts) != 4 || mounts[0].ContainerPath != render.NodeConfigDir ||
				mounts[0].HostPath != "/var/lib/kindlab/all-features/apiserver" || !mounts[0].Readonly {
				t.Errorf("control plane mounts %+v", mounts)
			}
			mounts = mounts[1:]
		default:
			if len(mounts) != 3 {
				t.Errorf("worker mounts %+v", mounts)
			}
		}
		if len(mounts) == 3 && (mounts[0].ContainerPath != "/opt/kindlab/bin" || mounts[0].HostPath != "/var/lib/kindlab/all-features/cri-shim/bin" ||
			mounts[1].ContainerPath != "/etc/systemd/system/kindlab-cri-shim.service" ||
			mounts[2].ContainerPath != "/etc/systemd/system/kubelet.service.d/11-kindlab-cri-shim.conf" ||
			!mounts[0].Readonly || !mounts[1].Readonly || !mounts[2].Readonly) {
			t.Errorf("%s: CRI shim mounts %+v", n.Role, mounts)
		}
	}
	if roles[v1alpha4.ControlPlaneRole] != 1 || roles[v1alpha4.WorkerRole] != 2 {
		t.Errorf("roles %v", roles)
	}
	// The kubeadm patch must be v1beta3-shaped: extraArgs a map, the file in
	// a mounted volume. Then the CRI shim's two (TestRenderCRIShim), then
	// every lab's kubelet patch last.
	if n := len(cfg.KubeadmConfigPatches); n != 4 || cfg.KubeadmConfigPatches[n-1] != render.KubeletPatch {
		t.Fatalf("patches %v", cfg.KubeadmConfigPatches)
	}
	var patch struct {
		Kind      string `yaml:"kind"`
		APIServer struct {
			ExtraArgs    map[string]string `yaml:"extraArgs"`
			ExtraVolumes []struct {
				Name      string `yaml:"name"`
				HostPath  string `yaml:"hostPath"`
				MountPath string `yaml:"mountPath"`
				PathType  string `yaml:"pathType"`
				ReadOnly  bool   `yaml:"readOnly"`
			} `yaml:"extraVolumes"`
		} `yaml:"apiServer"`
	}
	if err := yaml.Unmarshal([]byte(cfg.KubeadmConfigPatches[0]), &patch); err != nil {
		t.Fatal(err)
	}
	want := render.NodeConfigDir + "/" + render.AuthenticationConfigFile
	if patch.Kind != "ClusterConfiguration" || patch.APIServer.ExtraArgs["authentication-config"] != want {
		t.Errorf("patch %+v", patch)
	}
	if _, ok := patch.APIServer.ExtraArgs["anonymous-auth"]; ok {
		t.Error("--anonymous-auth must not be passed with an authentication config: the apiserver refuses both")
	}
	if v := patch.APIServer.ExtraVolumes; len(v) != 1 || v[0].MountPath != render.NodeConfigDir ||
		v[0].HostPath != render.NodeConfigDir || !v[0].ReadOnly {
		t.Errorf("patch volumes %+v", patch.APIServer.ExtraVolumes)
	}
	// The authentication config file the control plane mounts.
	if len(p.Files) != 3 || p.Files[0].HostPath != "/var/lib/kindlab/all-features/apiserver/authentication-config.yaml" {
		t.Fatalf("files %+v", p.Files)
	}
	for _, s := range []string{"apiserver.config.k8s.io/v1alpha1", "AuthenticationConfiguration", "/livez", "/readyz", "/healthz",
		"/api/v1/namespaces/kube-public/configmaps/cluster-info"} {
		if !strings.Contains(p.Files[0].Content, s) {
			t.Errorf("authentication config lacks %q", s)
		}
	}
	if p.Registry == nil || p.Registry.CertsDPath != "/etc/containerd/certs.d/localhost:5001/hosts.toml" ||
		!strings.Contains(p.Registry.HostsToml, `[host."http://kind-registry:5000"]`) {
		t.Errorf("registry plan %+v", p.Registry)
	}
	if len(p.Artifacts) != 1 || p.Artifacts[0].Reference != "localhost:5001/kindlab/model:v1" {
		t.Errorf("artifacts %+v", p.Artifacts)
	}
}

func TestRenderOptions(t *testing.T) {
	p := renderLab(t, "image-volume", render.Options{Name: "sandbox-2", RegistryPort: 5002,
		NodeImage: "kindlab.local/node:v1.31.14"})
	if p.ClusterName != "sandbox-2" || p.Context != "kind-sandbox-2" || p.Config.Name != "sandbox-2" {
		t.Errorf("name %s context %s", p.ClusterName, p.Context)
	}
	if p.Config.Nodes[0].Image != "kindlab.local/node:v1.31.14" {
		t.Errorf("image override not applied: %s", p.Config.Nodes[0].Image)
	}
	if p.Registry.HostPort != 5002 || !strings.Contains(p.Registry.CertsDPath, "localhost:5002") {
		t.Errorf("registry port %+v", p.Registry)
	}
	// The registry image is final in the plan: the pin, and what the engine
	// has for it (LocalImage, e.g. a kit's alias).
	p = renderLab(t, "image-volume", render.Options{RegistryImage: "kindlab.local/registry:2.8-debian",
		LocalImage: func(ref string) string { return ref + "-local" }})
	if p.Registry.PinnedImage != "kindlab.local/registry:2.8-debian" || p.Registry.Image != "kindlab.local/registry:2.8-debian-local" {
		t.Errorf("registry image %q, pinned %q", p.Registry.Image, p.Registry.PinnedImage)
	}
	c := lab.NewCatalog()
	_ = c.AddBuiltin(kindlab.Files, kindlab.LabsDir)
	r, _ := c.Resolve("base", lab.ResolveOptions{})
	// --registry-image is refused whatever the lab.
	for _, bad := range []render.Options{{Name: "Bad_Name"}, {NodeImage: "not a ref"}, {RegistryImage: "BAD::REF"}} {
		if _, err := render.Render(r, bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	// A lab without an authentication config mounts nothing and has only
	// the kubelet patch every lab gets; every lab has the registry (base
	// turns it on, for the mirrors offline).
	if p := renderLab(t, "nftables", render.Options{}); len(p.Files) != 0 || p.Registry == nil ||
		!slices.Equal(p.Config.KubeadmConfigPatches, []string{render.KubeletPatch}) {
		t.Errorf("nftables lab renders extras or no registry: %+v", p)
	}
}

// TestRenderCRIShim: a lab with spec.containerRuntime.imageVolumeReadOnlyShim
// gets the shim's plan (the binary to deliver, where), its unit and kubelet
// drop-in as files in the cluster's state directory, and kubeadm patches
// pointing init and join at its socket; a lab without it gets none of it.
func TestRenderCRIShim(t *testing.T) {
	p := renderLab(t, "image-volume", render.Options{StateDir: "/st/iv", CRIShimBinary: "/usr/local/bin/kindlab"})
	s := p.CRIShim
	if s == nil {
		t.Fatal("image-volume renders no CRI shim")
	}
	if s.Binary != "/usr/local/bin/kindlab" || s.HostBinary != "/st/iv/cri-shim/bin/kindlab" || s.NodeBinary != "/opt/kindlab/bin/kindlab" ||
		s.Endpoint != "unix:///run/kindlab-cri/cri.sock" || s.RuntimeEndpoint != "unix:///run/containerd/containerd.sock" || s.Unit != "kindlab-cri-shim.service" {
		t.Errorf("shim plan %+v", s)
	}
	files := map[string]render.File{}
	for _, f := range p.Files {
		files[f.ContainerPath] = f
	}
	unit, dropIn := files["/etc/systemd/system/kindlab-cri-shim.service"], files["/etc/systemd/system/kubelet.service.d/11-kindlab-cri-shim.conf"]
	if unit.HostPath != "/st/iv/cri-shim/kindlab-cri-shim.service" || !strings.Contains(unit.Content, "ExecStart=/opt/kindlab/bin/kindlab cri-shim") {
		t.Errorf("unit file %+v", unit)
	}
	if dropIn.HostPath != "/st/iv/cri-shim/11-kindlab-cri-shim.conf" || !strings.Contains(dropIn.Content, "After=kindlab-cri-shim.service") {
		t.Errorf("kubelet drop-in %+v", dropIn)
	}
	raw, err := p.KindConfigYAML()
	if err != nil {
		t.Fatal(err)
	}
	cfg := kindDecode(t, raw)
	kinds := map[string]string{}
	for _, patch := range cfg.KubeadmConfigPatches {
		var doc struct {
			Kind             string `yaml:"kind"`
			NodeRegistration struct {
				CRISocket string `yaml:"criSocket"`
			} `yaml:"nodeRegistration"`
		}
		if err := yaml.Unmarshal([]byte(patch), &doc); err != nil {
			t.Fatal(err)
		}
		kinds[doc.Kind] = doc.NodeRegistration.CRISocket
	}
	if kinds["InitConfiguration"] != "unix:///run/kindlab-cri/cri.sock" || kinds["JoinConfiguration"] != "unix:///run/kindlab-cri/cri.sock" {
		t.Errorf("kubeadm patches %v", cfg.KubeadmConfigPatches)
	}
	for _, n := range cfg.Nodes {
		if len(n.ExtraMounts) != 3 {
			t.Errorf("%s mounts %+v", n.Role, n.ExtraMounts)
		}
	}
	// Without an explicit binary: $KINDLAB_CRI_SHIM_BINARY, else this executable.
	t.Setenv("KINDLAB_CRI_SHIM_BINARY", "/opt/static/kindlab")
	if p := renderLab(t, "all-features", render.Options{}); p.CRIShim == nil || p.CRIShim.Binary != "/opt/static/kindlab" {
		t.Errorf("shim binary from the environment: %+v", p.CRIShim)
	}
	if p := renderLab(t, "nftables", render.Options{}); p.CRIShim != nil {
		t.Errorf("nftables renders a CRI shim: %+v", p.CRIShim)
	}
}

func TestRenderImageOverrides(t *testing.T) {
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("nftables", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := r.Image("agnhost")
	local := "localhost:5001/kindlab/agnhost:2.52@sha256:" + strings.Repeat("cd", 32)
	p, err := render.Render(r, render.Options{ImageOverrides: map[string]string{"agnhost": local}})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := p.Resolved.Image("agnhost"); got != local || p.ImageOverrides["agnhost"] != local {
		t.Errorf("plan image %s, overrides %v", got, p.ImageOverrides)
	}
	if got, _ := r.Image("agnhost"); got != orig {
		t.Errorf("render changed the caller's lab: %s", got)
	}
	if _, err := render.Render(r, render.Options{ImageOverrides: map[string]string{"nope": local}}); err == nil ||
		!strings.Contains(err.Error(), `no image "nope"`) {
		t.Errorf("unknown image: %v", err)
	}
}

// A remote engine publishes the API server on its own address, which kind
// takes as networking.apiServerAddress; the kind config must carry it.
func TestRenderAPIServerAddress(t *testing.T) {
	if p := renderLab(t, "nftables", render.Options{}); p.Config.Networking.APIServerAddress != "127.0.0.1" {
		t.Errorf("default apiServerAddress %q, want kind's 127.0.0.1", p.Config.Networking.APIServerAddress)
	}
	p := renderLab(t, "nftables", render.Options{APIServerAddress: "192.0.2.10"})
	raw, err := p.KindConfigYAML()
	if err != nil {
		t.Fatal(err)
	}
	if cfg := kindDecode(t, raw); cfg.Networking.APIServerAddress != "192.0.2.10" {
		t.Errorf("apiServerAddress %q in\n%s", cfg.Networking.APIServerAddress, raw)
	}
	c := lab.NewCatalog()
	_ = c.AddBuiltin(kindlab.Files, kindlab.LabsDir)
	r, _ := c.Resolve("base", lab.ResolveOptions{})
	_, err = render.Render(r, render.Options{APIServerAddress: "docker.example.com"})
	if err == nil || !strings.Contains(err.Error(), "--api-server-address") {
		t.Errorf("a host name was accepted as apiServerAddress: %v", err)
	}
}

// A node may run its own image (kind's v1alpha4 nodes[].image): render
// keeps it on that node only, NodeImages lists each image once in node
// order, and --image replaces every node's image as kind's --image does.
func TestRenderPerNodeImage(t *testing.T) {
	dir := t.TempDir()
	own := "localhost:5001/kindlab/node-b:v1.31.14@sha256:" + strings.Repeat("ab", 32)
	file := filepath.Join(dir, "two-images.yaml")
	src := `apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: two-images
spec:
  nodeImage: kindest/node:v1.31.14@sha256:` + strings.Repeat("01", 32) + `
  nodes:
  - role: control-plane
  - role: worker
    image: ` + own + `
  - role: worker
`
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	c := lab.NewCatalog()
	l, err := c.AddFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve(l.Metadata.Name, lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := render.Render(r, render.Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := p.KindConfigYAML()
	if err != nil {
		t.Fatal(err)
	}
	cfg := kindDecode(t, raw)
	var got []string
	for _, n := range cfg.Nodes {
		got = append(got, n.Image)
	}
	want := []string{r.NodeImage, own, r.NodeImage}
	if !slices.Equal(got, want) {
		t.Errorf("node images %v, want %v", got, want)
	}
	if ni := p.NodeImages(); !slices.Equal(ni, []string{r.NodeImage, own}) {
		t.Errorf("NodeImages() = %v", ni)
	}

	// After a kit load the engine has B under a tag: the kind config gets
	// the tag, the plan keeps the pins (the record, kit and bundle use them).
	loaded := "kindlab.kit.local/node-b:v1.31.14"
	p, err = render.Render(r, render.Options{StateDir: dir, LocalImage: func(ref string) string {
		if ref == own {
			return loaded
		}
		return ref
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Config.Nodes[1].Image; got != loaded {
		t.Errorf("node 1 is given %s, want the engine's %s", got, loaded)
	}
	if ni := p.NodeImages(); !slices.Equal(ni, []string{r.NodeImage, own}) {
		t.Errorf("NodeImages() after LocalImage = %v, want the pins", ni)
	}
	// A record keeps Plan.NodeImage: the lab's own means no --image.
	if o := render.ImageOverride(p.NodeImage, r); o != "" {
		t.Errorf("ImageOverride of the lab's own image = %q, want none", o)
	}

	offline := "kindlab.local/node:v1.31.14"
	if o := render.ImageOverride(offline, r); o != offline {
		t.Errorf("ImageOverride(%s) = %q", offline, o)
	}
	p, err = render.Render(r, render.Options{StateDir: dir, NodeImage: offline})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range p.Config.Nodes {
		if n.Image != offline {
			t.Errorf("--image: node %d runs %s, want %s on every node", i, n.Image, offline)
		}
	}
	if ni := p.NodeImages(); !slices.Equal(ni, []string{offline}) {
		t.Errorf("--image: NodeImages() = %v", ni)
	}
}

// schedulable: true on a control plane gets kubeadm's empty taints patch,
// except on a one-node cluster: kind removes the taint of a lone node
// itself and fails when it is not there (kind v0.31 kubeadminit), so there
// the patch would make every up fail.
func TestRenderSchedulableControlPlane(t *testing.T) {
	for _, tc := range []struct {
		nodes     string
		wantPatch bool
	}{
		{"  - role: control-plane\n    schedulable: true\n", false},
		{"  - role: control-plane\n    schedulable: true\n  - role: worker\n", true},
		{"  - role: control-plane\n  - role: worker\n", false},
	} {
		dir := t.TempDir()
		file := filepath.Join(dir, "sched.yaml")
		src := "apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: sched\nspec:\n  nodeImage: kindest/node:v1.31.14@sha256:" +
			strings.Repeat("01", 32) + "\n  nodes:\n" + tc.nodes
		if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		c := lab.NewCatalog()
		l, err := c.AddFile(file)
		if err != nil {
			t.Fatalf("%s: %v", tc.nodes, err)
		}
		r, err := c.Resolve(l.Metadata.Name, lab.ResolveOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tc.nodes, err)
		}
		p, err := render.Render(r, render.Options{StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := p.KindConfigYAML()
		if err != nil {
			t.Fatal(err)
		}
		cfg := kindDecode(t, raw)
		got := strings.Contains(strings.Join(cfg.Nodes[0].KubeadmConfigPatches, "\n"), "taints: []")
		if got != tc.wantPatch {
			t.Errorf("nodes\n%s: control plane's taints patch %v, want %v\n%s", tc.nodes, got, tc.wantPatch, raw)
		}
	}
}
