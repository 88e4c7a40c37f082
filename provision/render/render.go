// Package render turns a resolved lab into what kind is given: its own
// v1alpha4.Cluster value (never a YAML template), the files the nodes mount,
// and the plan of what `kindlab up` will do.
package render

import (
	"fmt"
	"maps"
	"net"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"

	"github.com/kindlab/kindlab/provision/crishim"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
)

// Where the control-plane node sees kindlab's apiserver files; kubeadm
// mounts the same directory into the kube-apiserver static pod.
const (
	NodeConfigDir            = "/etc/kubernetes/kindlab"
	AuthenticationConfigFile = "authentication-config.yaml"
	// DefaultRegistryPort is where the shared local registry listens on the host.
	DefaultRegistryPort = registry.DefaultHostPort
)

// Options shape a render beyond what the lab says.
type Options struct {
	// Name is the kind cluster name; default: the lab name.
	Name string
	// StateDir is the cluster's own directory on the host: files the nodes
	// mount are written there before the cluster is created.
	StateDir string
	// NodeImage overrides the lab's node image on every node, spec.nodes[].image
	// included, as kind create cluster --image does (e.g. an image built
	// offline).
	NodeImage string
	// LocalImage answers what the engine has for a node image the lab pins
	// (kit.LocalImage: after `kit load`, a tag, since a load records no
	// digest). The kind config's node images are its answers, so the plan
	// is final: nothing rewrites it before kind creates the nodes. Nil
	// keeps every reference as pinned.
	LocalImage func(ref string) string
	// RegistryPort is the host port of the local registry.
	RegistryPort int
	// RegistryImage is the image the registry runs from when it has to be
	// started ("" = registry.DefaultImage); LocalImage resolves it too.
	RegistryImage string
	// ImageOverrides point lab images (by name) at other pinned references.
	ImageOverrides map[string]string
	// APIServerAddress is kind's networking.apiServerAddress: the IP on
	// the Docker engine's host where the API server is published and
	// which the kubeconfig names. "" keeps kind's 127.0.0.1, which only
	// works when the engine is this machine's.
	APIServerAddress string
	// CRIShimBinary is the kindlab executable a lab with the CRI shim
	// puts in its nodes; "" means crishim.DefaultBinary() ($KINDLAB_CRI_SHIM_BINARY,
	// else the running kindlab).
	CRIShimBinary string
}

// File is a file written on the host and mounted into nodes.
type File struct {
	HostPath      string `json:"hostPath"`
	ContainerPath string `json:"containerPath"`
	Content       string `json:"content"`
	// Source is the lab-relative path it came from.
	Source string `json:"source"`
}

// Plan is everything `kindlab up` will create for a lab.
type Plan struct {
	ClusterName string   `json:"clusterName"`
	Context     string   `json:"kubeconfigContext"`
	Lab         string   `json:"lab"`
	Labs        []string `json:"labs"`
	NodeImage   string   `json:"nodeImage"`
	// PinnedNodeImages is each node's image as the lab pins it (or as
	// --image names it), in Config.Nodes order; Config.Nodes[i].Image is
	// what the engine has for it (Options.LocalImage), which kind is given.
	PinnedNodeImages []string          `json:"pinnedNodeImages,omitempty"`
	Config           *v1alpha4.Cluster `json:"kindConfig"`
	Files            []File            `json:"files,omitempty"`
	Registry         *RegistryPlan     `json:"registry,omitempty"`
	CRIShim          *CRIShimPlan      `json:"criShim,omitempty"`
	Artifacts        []ArtifactPlan    `json:"artifacts,omitempty"`
	Images           []lab.Image       `json:"images,omitempty"`
	Workloads        []string          `json:"workloads,omitempty"`
	Checks           []string          `json:"checks,omitempty"`
	Instructions     []lab.Instruction `json:"instructions,omitempty"`
	// ImageOverrides are the overrides applied to Images.
	ImageOverrides map[string]string `json:"imageOverrides,omitempty"`
	// NodeFilesDir is the host directory (Options.StateDir) under which
	// every File.HostPath and CRIShim.HostBinary lie, and every kind mount
	// of them: plain kind (render -o kind) mounts them from there; `up`
	// copies them into a volume on the engine and points the mounts there
	// (package nodefiles).
	NodeFilesDir string `json:"nodeFilesDir,omitempty"`
	// Resolved is the lab the plan was made from.
	Resolved *lab.Resolved `json:"-"`
}

// RegistryPlan says how the nodes reach the shared local registry.
type RegistryPlan struct {
	Container string `json:"container"`
	HostPort  int    `json:"hostPort"`
	// PinnedImage is the registry's image as pinned (Options.RegistryImage,
	// else registry.DefaultImage); Image is what the engine has for it
	// (Options.LocalImage), which the registry is started from.
	PinnedImage string `json:"pinnedImage"`
	Image       string `json:"image"`
	// HostsToml is written on every node at CertsDPath.
	CertsDPath string `json:"certsDPath"`
	HostsToml  string `json:"hostsToml"`
	// ConfigMap is the KEP-1755 local-registry-hosting document.
	ConfigMap string `json:"localRegistryHosting"`
}

// CRIShimPlan is kindlab's CRI shim in every node, for a lab with
// spec.containerRuntime.imageVolumeReadOnlyShim: the kubelet talks CRI to
// Endpoint, the shim forwards to RuntimeEndpoint, making image-volume
// mounts read-only on the way (package crishim says why).
type CRIShimPlan struct {
	// Unit is the systemd unit running it in each node.
	Unit            string `json:"unit"`
	Endpoint        string `json:"endpoint"`
	RuntimeEndpoint string `json:"runtimeEndpoint"`
	// Binary is the kindlab executable `up` copies to HostBinary (in the
	// cluster's state directory), which every node mounts read-only at
	// NodeBinary. It must be a static Linux build for the nodes'
	// architecture; up checks that before creating anything.
	Binary     string `json:"binary"`
	HostBinary string `json:"hostBinary"`
	NodeBinary string `json:"nodeBinary"`
}

// ArtifactPlan is one artifact to build and push.
type ArtifactPlan struct {
	Name      string `json:"name"`
	Source    string `json:"source"`
	Reference string `json:"reference"`
}

// Render builds the plan for a resolved lab.
func Render(r *lab.Resolved, opts Options) (*Plan, error) {
	name := opts.Name
	if name == "" {
		name = r.Name
	}
	if err := lab.ValidateName(name); err != nil {
		return nil, fmt.Errorf("--name: %w", err)
	}
	image := r.NodeImage
	if opts.NodeImage != "" {
		if err := lab.ParseImageReference(opts.NodeImage); err != nil {
			return nil, fmt.Errorf("--image: %q is not an image reference: %w", opts.NodeImage, err)
		}
		image = opts.NodeImage
	}
	if len(opts.ImageOverrides) > 0 {
		copied := *r // the caller's lab stays as it was
		copied.Images = append([]lab.Image(nil), r.Images...)
		r = &copied
		if err := r.OverrideImages(opts.ImageOverrides); err != nil {
			return nil, err
		}
	}
	if ri := opts.RegistryImage; ri != "" {
		// A flag: refused whether or not this lab has a registry (kit save
		// carries the registry image either way).
		if err := lab.ParseImageReference(ri); err != nil {
			return nil, fmt.Errorf("--registry-image: %q is not an image reference: %w", ri, err)
		}
	}
	if a := opts.APIServerAddress; a != "" && net.ParseIP(a) == nil {
		// Docker publishes ports on an IP only, and kind puts it in the
		// API server's certificate as an IP SAN.
		return nil, fmt.Errorf("--api-server-address: %q is not an IP address", a)
	}
	port := opts.RegistryPort
	if port == 0 {
		port = DefaultRegistryPort
	}
	cfg := &v1alpha4.Cluster{
		TypeMeta:      v1alpha4.TypeMeta{Kind: "Cluster", APIVersion: "kind.x-k8s.io/v1alpha4"},
		Name:          name,
		FeatureGates:  copyMap(r.FeatureGates),
		RuntimeConfig: copyMap(r.RuntimeConfig),
		Networking: v1alpha4.Networking{
			KubeProxyMode: v1alpha4.ProxyMode(r.Networking.KubeProxyMode),
			PodSubnet:     r.Networking.PodSubnet,
			ServiceSubnet: r.Networking.ServiceSubnet,
			// Before SetDefaultsCluster, which fills in 127.0.0.1 when empty.
			APIServerAddress: opts.APIServerAddress,
		},
	}
	if opts.APIServerAddress != "" {
		// The engine picks the published port on its host (kind's -1). With
		// 0 kind picks it by listening on this machine at that address
		// (v0.31 providers/common GetFreePort), which fails for an address
		// of a remote engine's host: "bind: cannot assign requested
		// address". kind reads the port back from the node for the kubeconfig.
		cfg.Networking.APIServerPort = -1
	}
	plan := &Plan{
		ClusterName:    name,
		Context:        "kind-" + name,
		Lab:            r.Name,
		Labs:           r.Labs,
		NodeImage:      image,
		Config:         cfg,
		Images:         r.Images,
		Checks:         r.Checks,
		Instructions:   r.Instructions,
		ImageOverrides: opts.ImageOverrides,
		Resolved:       r,
	}
	var cpMounts []v1alpha4.Mount
	if r.AuthenticationConfig != nil {
		content, err := r.AuthenticationConfig.Read()
		if err != nil {
			return nil, err
		}
		hostDir := filepath.Join(opts.StateDir, "apiserver")
		plan.Files = append(plan.Files, File{
			HostPath:      filepath.Join(hostDir, AuthenticationConfigFile),
			ContainerPath: path.Join(NodeConfigDir, AuthenticationConfigFile),
			Content:       string(content),
			Source:        r.AuthenticationConfig.Display,
		})
		// The directory, not the file: an editor's rename-on-save would leave
		// a file mount pointing at the old inode.
		cpMounts = append(cpMounts, v1alpha4.Mount{HostPath: hostDir, ContainerPath: NodeConfigDir, Readonly: true})
		patch, err := apiServerPatch(path.Join(NodeConfigDir, AuthenticationConfigFile))
		if err != nil {
			return nil, err
		}
		cfg.KubeadmConfigPatches = append(cfg.KubeadmConfigPatches, patch)
	}
	var allMounts []v1alpha4.Mount
	if r.ImageVolumeReadOnlyShim {
		mounts, err := renderCRIShim(plan, opts)
		if err != nil {
			return nil, err
		}
		allMounts = append(allMounts, mounts...)
	}
	for _, n := range r.Nodes {
		// --image replaces every node's image, as kind create cluster's
		// --image does (kind pkg/cluster/internal/create fixupOptions).
		nodeImage := image
		if n.Image != "" && opts.NodeImage == "" {
			nodeImage = n.Image
		}
		plan.PinnedNodeImages = append(plan.PinnedNodeImages, nodeImage)
		if opts.LocalImage != nil {
			nodeImage = opts.LocalImage(nodeImage)
		}
		node := v1alpha4.Node{Role: v1alpha4.NodeRole(n.Role), Image: nodeImage, Labels: copyMap(n.Labels)}
		if n.Role == lab.RoleControlPlane {
			node.ExtraMounts = append(node.ExtraMounts, cpMounts...)
		}
		// kind itself untaints the node of a one-node cluster, with
		// `kubectl taint nodes --all node-role.kubernetes.io/control-plane-`,
		// which fails when the taint is not there (kind v0.31
		// pkg/cluster/internal/create/actions/kubeadminit: "failed to
		// remove control plane taint"): there, schedulable is kind's
		// default and the patch would break up.
		if n.Schedulable && len(r.Nodes) > 1 {
			node.KubeadmConfigPatches = append(node.KubeadmConfigPatches, SchedulablePatches...)
		}
		node.ExtraMounts = append(node.ExtraMounts, allMounts...)
		cfg.Nodes = append(cfg.Nodes, node)
	}
	if r.Registry {
		var certsD []string
		for _, h := range registry.RegistryHosts(port) {
			certsD = append(certsD, path.Join(registry.CertsDir, h, "hosts.toml"))
		}
		pinned := opts.RegistryImage
		if pinned == "" {
			pinned = registry.DefaultImage
		}
		local := pinned
		if opts.LocalImage != nil {
			local = opts.LocalImage(pinned)
		}
		plan.Registry = &RegistryPlan{
			Container:   registry.ContainerName,
			HostPort:    port,
			PinnedImage: pinned,
			Image:       local,
			CertsDPath:  strings.Join(certsD, ", "),
			HostsToml:   registry.HostsTOML(fmt.Sprintf("%s:%d", registry.ContainerName, registry.ContainerPort)),
			ConfigMap:   registry.HostingYAML(port),
		}
	}
	for _, a := range r.Artifacts {
		plan.Artifacts = append(plan.Artifacts, ArtifactPlan{Name: a.Name, Source: a.Dir.Display, Reference: a.Reference})
	}
	for _, w := range r.Workloads {
		plan.Workloads = append(plan.Workloads, w.Name)
	}
	if len(plan.Files) > 0 || plan.CRIShim != nil {
		plan.NodeFilesDir = opts.StateDir
	}
	cfg.KubeadmConfigPatches = append(cfg.KubeadmConfigPatches, KubeletPatch)
	v1alpha4.SetDefaultsCluster(cfg)
	return plan, nil
}

// KubeletPatch is every lab's KubeletConfiguration patch
// (k8s.io/kubelet/config/v1beta1), two changes for a lab's first minutes:
//
//   - serializeImagePulls false: the kubelet pulls a node's images at once
//     instead of one after another (maxParallelImagePulls unset meaning no
//     limit). A lab's images come from its local registry, next to the
//     node, and when the labs' workloads land on a node its small images
//     (the device plugin, an image volume's artifact) queued 5 to 6 s
//     behind agnhost's 83 MB pull, which the checks then waited for.
//   - nodeStatusUpdateFrequency 2s (default 10s): a device plugin's
//     resources reach the Node's capacity at the kubelet's next status
//     sync (kubelet_node_status.go's setters; no sync on registration), so
//     a pod asking for them stayed Pending up to 10 s after its plugin
//     registered. nodeStatusReportFrequency is set to its default, 5m,
//     because left unset it would follow nodeStatusUpdateFrequency (the
//     field's documented backward compatibility) and post the status every
//     2 s; set, the kubelet posts only a changed status (its lease still
//     renews every 10 s).
//
// kubeadm writes it into the cluster's kubelet-config ConfigMap at init,
// which the joining nodes read.
const KubeletPatch = "kind: KubeletConfiguration\nserializeImagePulls: false\nnodeStatusUpdateFrequency: 2s\nnodeStatusReportFrequency: 5m\n"

// SchedulablePatches are a schedulable control-plane node's kubeadm
// patches, in a cluster of more than one node (kind untaints a lone node
// itself): kubeadm v1beta3 (what kind renders for 1.31) taints a control
// plane whose nodeRegistration.taints is unset, and none when it is an
// empty list; kind leaves it unset. Init for the first control plane, Join
// for the others.
var SchedulablePatches = []string{
	"kind: InitConfiguration\nnodeRegistration:\n  taints: []\n",
	"kind: JoinConfiguration\nnodeRegistration:\n  taints: []\n",
}

// renderCRIShim adds the shim's unit, kubelet drop-in and kubeadm patches
// to the plan and returns the mounts every node gets: the binary's
// directory and the two systemd files, all read-only. Files rather than a
// changed node image, so the stock digest-pinned kindest/node runs it.
func renderCRIShim(plan *Plan, opts Options) ([]v1alpha4.Mount, error) {
	bin := opts.CRIShimBinary
	if bin == "" {
		var err error
		if bin, err = crishim.DefaultBinary(); err != nil {
			return nil, err
		}
	}
	dir := filepath.Join(opts.StateDir, "cri-shim")
	binDir := filepath.Join(dir, "bin")
	plan.CRIShim = &CRIShimPlan{
		Unit:            crishim.UnitName,
		Endpoint:        crishim.Endpoint,
		RuntimeEndpoint: crishim.ContainerdEndpoint,
		Binary:          bin,
		HostBinary:      filepath.Join(binDir, path.Base(crishim.NodeBinary)),
		NodeBinary:      crishim.NodeBinary,
	}
	const field = "spec.containerRuntime.imageVolumeReadOnlyShim"
	unit := File{HostPath: filepath.Join(dir, crishim.UnitName), ContainerPath: crishim.UnitPath, Content: crishim.UnitFile(), Source: field}
	dropIn := File{HostPath: filepath.Join(dir, path.Base(crishim.DropInPath)), ContainerPath: crishim.DropInPath, Content: crishim.KubeletDropIn(), Source: field}
	plan.Files = append(plan.Files, unit, dropIn)
	plan.Config.KubeadmConfigPatches = append(plan.Config.KubeadmConfigPatches, crishim.KubeadmPatches()...)
	return []v1alpha4.Mount{
		{HostPath: binDir, ContainerPath: crishim.NodeBinDir, Readonly: true},
		{HostPath: unit.HostPath, ContainerPath: unit.ContainerPath, Readonly: true},
		{HostPath: dropIn.HostPath, ContainerPath: dropIn.ContainerPath, Readonly: true},
	}, nil
}

// apiServerPatch is the kubeadm ClusterConfiguration patch that passes the
// authentication config to the apiserver. kind renders kubeadm v1beta3 for
// 1.31, where extraArgs is a map; it is built as data, then serialised.
func apiServerPatch(file string) (string, error) {
	patch := map[string]any{
		"kind": "ClusterConfiguration",
		"apiServer": map[string]any{
			"extraArgs": map[string]string{"authentication-config": file},
			"extraVolumes": []map[string]any{{
				"name":      "kindlab-config",
				"hostPath":  NodeConfigDir,
				"mountPath": NodeConfigDir,
				"readOnly":  true,
				"pathType":  "DirectoryOrCreate",
			}},
		},
	}
	b, err := yaml.Marshal(patch)
	if err != nil {
		return "", fmt.Errorf("render kubeadm patch: %w", err)
	}
	return string(b), nil
}

// KindConfigYAML is the kind config as kind would read it from a file.
func (p *Plan) KindConfigYAML() ([]byte, error) {
	b, err := yaml.Marshal(p.Config)
	if err != nil {
		return nil, fmt.Errorf("render kind config: %w", err)
	}
	return b, nil
}

// copyMap keeps the plan from sharing maps with the lab; empty becomes nil
// so the kind config omits the field.
func copyMap[V any](m map[string]V) map[string]V {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// NodeImages are the distinct images the plan's nodes run as the lab pins
// them, in node order: spec.nodeImage, and any spec.nodes[].image that
// differs from it. A plan without nodes has its NodeImage alone.
func (p *Plan) NodeImages() []string {
	if len(p.PinnedNodeImages) == 0 {
		if p.NodeImage == "" {
			return nil
		}
		return []string{p.NodeImage}
	}
	var out []string
	for _, ref := range p.PinnedNodeImages {
		if !slices.Contains(out, ref) {
			out = append(out, ref)
		}
	}
	return out
}

// ImageOverride is the Options.NodeImage that renders a recorded run again:
// a record (and a bundle) keeps Plan.NodeImage, which is the lab's own
// spec.nodeImage unless --image replaced it. The lab's own gives "" so that
// nodes with an image of their own keep it; anything else is the --image
// that replaced every node's.
func ImageOverride(recorded string, r *lab.Resolved) string {
	if recorded == r.NodeImage {
		return ""
	}
	return recorded
}

// OverridePairs writes image overrides as the --image-override flag takes
// them, NAME=REF, sorted and space-separated (as $KINDLAB_IMAGE_OVERRIDES).
func OverridePairs(o map[string]string) string {
	pairs := make([]string, 0, len(o))
	for name, ref := range o {
		pairs = append(pairs, name+"="+ref)
	}
	slices.Sort(pairs)
	return strings.Join(pairs, " ")
}
