// Package lab reads, validates and composes kindlab lab files.
//
// A lab file is a Kubernetes-style object (apiVersion kindlab.dev/v1alpha1,
// kind Lab). Labs compose: spec.include names other labs whose specs are
// merged under this one, so all-features is the union of the per-feature
// labs rather than a copy of them.
package lab

import "io/fs"

// APIVersion and Kind are the only values a lab file may carry in its header.
const (
	APIVersion = "kindlab.dev/v1alpha1"
	Kind       = "Lab"
)

// Lab is one lab file as written.
type Lab struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`
	Spec       Spec     `yaml:"spec" json:"spec"`

	// Origin is where the lab was read from; never serialised.
	Origin Origin `yaml:"-" json:"-"`
}

// Origin records the file a lab came from so that relative paths in it
// (authentication config, artifact sources, workloads) resolve beside it,
// whether the lab is embedded in the binary or on disk.
type Origin struct {
	// FS holds the lab file and everything it refers to.
	FS fs.FS
	// Path is the lab file's path inside FS (slash-separated, unrooted).
	Path string
	// Display is how errors name the file: a disk path, or "builtin:labs/x.yaml".
	Display string
	// Root is, for a lab on disk, the directory FS is confined to (an
	// os.Root: no path, `..` or symlink reaches out of it); "" for a lab
	// embedded in the binary. See Catalog.AddFile for how it is chosen.
	Root string
}

// Metadata names the lab. The name must be a DNS label: it becomes part of
// the kind cluster name, container names and the kubeconfig context.
type Metadata struct {
	Name string `yaml:"name" json:"name"`
}

// Spec is what a lab asks for. Every field is optional in a file that is
// included by another; the resolved lab must have a pinned node image and
// at least one control-plane node.
type Spec struct {
	Description   string            `yaml:"description,omitempty" json:"description,omitempty"`
	Include       []string          `yaml:"include,omitempty" json:"include,omitempty"`
	NodeImage     string            `yaml:"nodeImage,omitempty" json:"nodeImage,omitempty"`
	Nodes         []Node            `yaml:"nodes,omitempty" json:"nodes,omitempty"`
	FeatureGates  map[string]bool   `yaml:"featureGates,omitempty" json:"featureGates,omitempty"`
	RuntimeConfig map[string]string `yaml:"runtimeConfig,omitempty" json:"runtimeConfig,omitempty"`
	Networking    Networking        `yaml:"networking,omitempty" json:"networking,omitempty"`
	APIServer     APIServer         `yaml:"apiServer,omitempty" json:"apiServer,omitempty"`
	// ContainerRuntime shapes how the nodes' kubelets reach containerd.
	ContainerRuntime ContainerRuntime `yaml:"containerRuntime,omitempty" json:"containerRuntime,omitempty"`
	Registry         *Registry        `yaml:"registry,omitempty" json:"registry,omitempty"`
	Images           []Image          `yaml:"images,omitempty" json:"images,omitempty"`
	Artifacts        []Artifact       `yaml:"artifacts,omitempty" json:"artifacts,omitempty"`
	Workloads        []Workload       `yaml:"workloads,omitempty" json:"workloads,omitempty"`
	Checks           []string         `yaml:"checks,omitempty" json:"checks,omitempty"`
	Instructions     string           `yaml:"instructions,omitempty" json:"instructions,omitempty"`
}

// Node roles, as kind names them.
const (
	RoleControlPlane = "control-plane"
	RoleWorker       = "worker"
)

// Node is one kind node.
type Node struct {
	Role string `yaml:"role" json:"role"`
	// Image is this node's own node image, pinned by digest like
	// spec.nodeImage, which it replaces for this node only (kind's v1alpha4
	// Node.image). Empty means spec.nodeImage.
	Image  string            `yaml:"image,omitempty" json:"image,omitempty"`
	Labels map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	// Schedulable, on a control-plane node, registers it without kubeadm's
	// node-role.kubernetes.io/control-plane:NoSchedule taint (kubeadm
	// nodeRegistration.taints: []), so workload pods run there: a zone
	// gets a schedulable node without one more container. Workers are
	// always schedulable; the field is refused on them.
	Schedulable bool `yaml:"schedulable,omitempty" json:"schedulable,omitempty"`
}

// Networking holds the cluster's network settings.
type Networking struct {
	// KubeProxyMode is iptables, nftables, ipvs or none.
	KubeProxyMode string `yaml:"kubeProxyMode,omitempty" json:"kubeProxyMode,omitempty"`
	PodSubnet     string `yaml:"podSubnet,omitempty" json:"podSubnet,omitempty"`
	ServiceSubnet string `yaml:"serviceSubnet,omitempty" json:"serviceSubnet,omitempty"`
}

// APIServer holds files the kube-apiserver is started with.
type APIServer struct {
	// AuthenticationConfig is a path, relative to the lab file, of an
	// apiserver.config.k8s.io AuthenticationConfiguration passed with
	// --authentication-config.
	AuthenticationConfig string `yaml:"authenticationConfig,omitempty" json:"authenticationConfig,omitempty"`
}

// ContainerRuntime is what sits between each node's kubelet and its
// container runtime (containerd, in kind's node images).
type ContainerRuntime struct {
	// ImageVolumeReadOnlyShim, when true, runs kindlab's CRI shim in every
	// node between the kubelet and containerd: a CRI proxy that forwards
	// every call unchanged except that it marks image-volume mounts
	// read-only. Without it no image volume mounts on Kubernetes 1.31 with
	// containerd 2.1+: the 1.31 kubelet never sets the CRI mount's readonly
	// (pkg/kubelet/kubelet_pods.go makeMounts) and containerd refuses a
	// writable image mount ("readonly must be true while mount image").
	// Kubernetes 1.32+ (kubernetes PR #126806) and CRI-O need no shim.
	//
	// A pointer so that a lab including one that turns it on can turn it
	// off again (false), as with any other single-valued field. It takes
	// spec.featureGates.ImageVolume: true, the only thing it changes.
	ImageVolumeReadOnlyShim *bool `yaml:"imageVolumeReadOnlyShim,omitempty" json:"imageVolumeReadOnlyShim,omitempty"`
}

// Registry asks for the shared local registry to be wired to the nodes.
type Registry struct {
	Enabled bool `yaml:"enabled" json:"enabled"`
}

// Image is a workload image the lab's manifests use, pinned by digest, so an
// offline kit knows what to carry.
type Image struct {
	Name      string `yaml:"name" json:"name"`
	Reference string `yaml:"reference" json:"reference"`
}

// Artifact is an OCI artifact built from files and pushed to the local registry.
type Artifact struct {
	Name string `yaml:"name" json:"name"`
	// Source is a directory, relative to the lab file.
	Source string `yaml:"source" json:"source"`
	// Reference is where it is pushed, e.g. localhost:5001/kindlab/model:v1.
	Reference string `yaml:"reference" json:"reference"`
	// ArtifactType is recorded as an annotation only: containerd mounts
	// image-shaped objects, so the manifest stays a plain image.
	ArtifactType string            `yaml:"artifactType,omitempty" json:"artifactType,omitempty"`
	Annotations  map[string]string `yaml:"annotations,omitempty" json:"annotations,omitempty"`
}

// Workload is a directory of manifests, relative to the lab file, applied
// with server-side apply.
type Workload struct {
	Name string `yaml:"name" json:"name"`
	Path string `yaml:"path" json:"path"`
}
