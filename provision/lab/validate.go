package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/apimachinery/pkg/util/validation"
	kubeletapis "k8s.io/kubelet/pkg/apis"
)

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	digestPinned = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
	// runtimeConfigKeyChars is what a --runtime-config key may be made of:
	// kind joins the keys as k=v,k=v into one flag, so a "," or "=" in
	// one would add keys. What kube-apiserver makes of the key is the
	// runtime-config-* rules' business (rules_1_31.go).
	runtimeConfigKeyChars = regexp.MustCompile(`^[A-Za-z0-9.-]+(/[A-Za-z0-9.-]+){0,2}$`)
	kubeProxyMode         = []string{"iptables", "nftables", "ipvs", "none"}
)

// ValidateNodeLabel refuses a node label the kubelet would refuse in
// --node-labels, where kind puts a node's labels (joined as k=v,k=v into
// kubeadm's kubeletExtraArgs, so a comma in a value would add labels):
// a key that is not a qualified name or a value that is not a label value
// (apimachinery's IsQualifiedName and IsValidLabelValue, as the kubelet
// checks them), and a key in the kubernetes.io or k8s.io namespaces that
// kubelets may not set on their own Node (k8s.io/kubelet/pkg/apis
// IsKubeletLabel; the namespace test is the kubelet's isKubernetesLabel,
// kubernetes cmd/kubelet/app/options, which is not importable), such as
// node-role.kubernetes.io/control-plane: the kubelet would not start.
func ValidateNodeLabel(key, value string) error {
	if errs := validation.IsQualifiedName(key); len(errs) > 0 {
		return fmt.Errorf("%q is not a label key: %s", key, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(value); len(errs) > 0 {
		return fmt.Errorf("%q is not a label value: %s", value, strings.Join(errs, "; "))
	}
	if ns, _, ok := strings.Cut(key, "/"); ok && isKubernetesNamespace(ns) && !kubeletapis.IsKubeletLabel(key) {
		return fmt.Errorf("%q is in a namespace kubelets may not label their own node with (valid there: %s, or a key under %s)",
			key, strings.Join(kubeletapis.KubeletLabels(), ", "), strings.Join(kubeletapis.KubeletLabelNamespaces(), ", "))
	}
	return nil
}

// isKubernetesNamespace is the kubelet's isKubernetesLabel test of a
// label's prefix: kubernetes.io, k8s.io and their subdomains.
func isKubernetesNamespace(ns string) bool {
	return ns == "kubernetes.io" || strings.HasSuffix(ns, ".kubernetes.io") || ns == "k8s.io" || strings.HasSuffix(ns, ".k8s.io")
}

// validateFile checks what one file can say about itself. What only makes
// sense once includes are merged (a control plane exists, the image is
// pinned) is checked by Resolve.
func validateFile(d *document) error {
	l := d.lab
	e := func(field, format string, args ...any) error {
		return &Error{File: l.Origin.Display, Line: d.line(field), Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if l.APIVersion != APIVersion {
		return e("apiVersion", "%q is not supported (valid: %s)", l.APIVersion, APIVersion)
	}
	if l.Kind != Kind {
		return e("kind", "%q is not supported (valid: %s)", l.Kind, Kind)
	}
	if err := ValidateName(l.Metadata.Name); err != nil {
		return e("metadata.name", "%v", err)
	}
	s := &l.Spec
	for i, inc := range s.Include {
		if !dnsLabel.MatchString(inc) {
			return e(fmt.Sprintf("spec.include[%d]", i), "%q is not a lab name (a lab name is a DNS label)", inc)
		}
		if inc == l.Metadata.Name {
			return e(fmt.Sprintf("spec.include[%d]", i), "a lab cannot include itself")
		}
	}
	if s.NodeImage != "" {
		if err := ValidateNodeImage(s.NodeImage); err != nil {
			return e("spec.nodeImage", "%v", err)
		}
	}
	for i, n := range s.Nodes {
		if n.Role != RoleControlPlane && n.Role != RoleWorker {
			return e(fmt.Sprintf("spec.nodes[%d].role", i), "%q is not a node role (valid: %s, %s)", n.Role, RoleControlPlane, RoleWorker)
		}
		if n.Image != "" {
			if err := ValidateNodeImage(n.Image); err != nil {
				return e(fmt.Sprintf("spec.nodes[%d].image", i), "%v", err)
			}
		}
		for _, k := range sortedKeys(n.Labels) {
			if err := ValidateNodeLabel(k, n.Labels[k]); err != nil {
				return e(fmt.Sprintf("spec.nodes[%d].labels[%q]", i, k), "%v", err)
			}
		}
		if n.Schedulable && n.Role != RoleControlPlane {
			return e(fmt.Sprintf("spec.nodes[%d].schedulable", i), "only a %s node can be made schedulable (a %s always is): remove the field", RoleControlPlane, n.Role)
		}
	}
	if len(s.Nodes) > 0 && countRole(s.Nodes, RoleControlPlane) == 0 {
		return e("spec.nodes", "no node has role %s: a cluster needs at least one", RoleControlPlane)
	}
	if n := len(s.Nodes); n > MaxNodes {
		return e("spec.nodes", "%d nodes: a lab has at most %d (each is a privileged container running a kubelet and its pods on this host)", n, MaxNodes)
	}
	if n := countRole(s.Nodes, RoleControlPlane); n > MaxControlPlanes {
		return e("spec.nodes", "%d %s nodes: a lab has at most %d (each runs an etcd member; etcd recommends at most 7)", n, RoleControlPlane, MaxControlPlanes)
	}
	for _, g := range sortedKeys(s.FeatureGates) {
		if err := ValidateGate(g, s.FeatureGates[g]); err != nil {
			return e(join("spec.featureGates", g), "%v", err)
		}
	}
	core := "" // the first key naming the core API (v1 or api/v1)
	for _, k := range sortedKeys(s.RuntimeConfig) {
		field := fmt.Sprintf("spec.runtimeConfig[%q]", k)
		if !runtimeConfigKeyChars.MatchString(k) {
			return e(field, "%q is not an API group/version (e.g. networking.k8s.io/v1beta1, api/all)", k)
		}
		if v := s.RuntimeConfig[k]; v != "true" && v != "false" {
			return e(field, "%q is not valid (valid: \"true\", \"false\")", v)
		}
		// kube-apiserver 1.31 reads v1/pods as v1: a resource of the core
		// API cannot be turned off alone, and "false" would turn off the
		// whole core API (hostile review, session 13).
		if strings.HasPrefix(k, "v1/") || strings.HasPrefix(k, "api/v1/") {
			return e(field, "kube-apiserver 1.31 reads %s as v1, the whole core API, dropping the resource (k8s.io/kubernetes v1.31.14 pkg/controlplane/apiserver/options/options.go Complete): write v1 to turn the core API on or off; one core resource cannot be turned off alone", k)
		}
		if coreAlias(k) {
			if core != "" && s.RuntimeConfig[core] != s.RuntimeConfig[k] {
				return e(field, "%s and %s both name the core API (kube-apiserver 1.31 reads both as v1) with different values, and which wins changes from one start to the next: keep one", core, k)
			}
			core = k
		}
	}
	if m := s.Networking.KubeProxyMode; m != "" && !slices.Contains(kubeProxyMode, m) {
		return e("spec.networking.kubeProxyMode", "%q is not a kube-proxy mode (valid: %s)", m, strings.Join(kubeProxyMode, ", "))
	}
	if p := s.APIServer.AuthenticationConfig; p != "" {
		if err := checkRef(l.Origin, p, false); err != nil {
			return e("spec.apiServer.authenticationConfig", "%v", err)
		}
	}
	seen := map[string]bool{}
	for i, img := range s.Images {
		field := fmt.Sprintf("spec.images[%d]", i)
		if img.Name == "" {
			return e(field+".name", "missing: every image needs a name")
		}
		if seen["image/"+img.Name] {
			return e(field+".name", "%q is listed twice", img.Name)
		}
		seen["image/"+img.Name] = true
		if err := ValidatePinnedImage(img.Reference); err != nil {
			return e(field+".reference", "%v", err)
		}
	}
	for i, a := range s.Artifacts {
		field := fmt.Sprintf("spec.artifacts[%d]", i)
		if !dnsLabel.MatchString(a.Name) {
			return e(field+".name", "%q is not valid (a DNS label: lower-case letters, digits and -)", a.Name)
		}
		if seen["artifact/"+a.Name] {
			return e(field+".name", "%q is listed twice", a.Name)
		}
		seen["artifact/"+a.Name] = true
		if a.Source == "" {
			return e(field+".source", "missing: a directory, relative to the lab file, whose files become the artifact")
		}
		if err := checkOwnDir(l.Origin, a.Source); err != nil {
			return e(field+".source", "%v", err)
		}
		ref, err := name.ParseReference(a.Reference, name.StrictValidation)
		if err != nil {
			return e(field+".reference", "%q is not an image reference: %v (e.g. %s/kindlab/model:v1)", a.Reference, err, LocalRegistry)
		}
		// A lab file from a stranger must not send files off this machine.
		if r := ref.Context().RegistryStr(); r != LocalRegistry {
			return e(field+".reference", "%q is in registry %s: a lab pushes its artifacts only to the local registry (valid: %s/NAME:TAG, e.g. %s/kindlab/model:v1)", a.Reference, r, LocalRegistry, LocalRegistry)
		}
	}
	paths := map[string]string{}
	for i, w := range s.Workloads {
		field := fmt.Sprintf("spec.workloads[%d]", i)
		if !dnsLabel.MatchString(w.Name) {
			return e(field+".name", "%q is not valid (a DNS label: lower-case letters, digits and -)", w.Name)
		}
		if seen["workload/"+w.Name] {
			return e(field+".name", "%q is listed twice", w.Name)
		}
		seen["workload/"+w.Name] = true
		if w.Path == "" {
			return e(field+".path", "missing: a folder of manifests, relative to the lab file")
		}
		if err := checkOwnDir(l.Origin, w.Path); err != nil {
			return e(field+".path", "%v", err)
		}
		// Each workload's folder is read and decoded on its own (a bundle's
		// review decodes them all before it asks): one folder named a
		// thousand times would be read a thousand times.
		p, _ := l.Origin.Resolve(w.Path)
		if prev, ok := paths[p]; ok {
			return e(field+".path", "%q is also workload %s's folder: give each workload its own", w.Path, prev)
		}
		paths[p] = w.Name
	}
	for i, c := range s.Checks {
		if !dnsLabel.MatchString(c) {
			return e(fmt.Sprintf("spec.checks[%d]", i), "%q is not a check name", c)
		}
	}
	return nil
}

// ValidateName says whether a lab or cluster name can be used: it ends up in
// container names, a docker network label and the kubeconfig context.
func ValidateName(n string) error {
	if n == "" {
		return fmt.Errorf("missing: a lab needs a name")
	}
	if len(n) > 40 || !dnsLabel.MatchString(n) {
		return fmt.Errorf("%q is not valid: use a DNS label of at most 40 characters (lower-case letters, digits and -, starting and ending alphanumeric)", n)
	}
	return nil
}

// ValidateNodeImage accepts only a node image pinned by digest, so that a
// lab means the same cluster next year.
func ValidateNodeImage(ref string) error {
	return ValidatePinnedImage(ref)
}

// ValidatePinnedImage accepts name[:tag]@sha256:<64 hex>.
func ValidatePinnedImage(ref string) error {
	if ref == "" {
		return fmt.Errorf("missing: an image reference pinned by digest (name:tag@sha256:…)")
	}
	if err := ParseImageReference(ref); err != nil {
		return fmt.Errorf("%q is not an image reference: %v", ref, err)
	}
	if !digestPinned.MatchString(ref) {
		return fmt.Errorf("%q is not pinned: add its digest (name:tag@sha256:<64 hex digits>)", ref)
	}
	return nil
}

// ParseImageReference accepts what Docker and kind accept, including the
// name:tag@digest form that go-containerregistry's parser refuses. The
// grammar is distribution/reference's (ParseDockerRef, what Docker and
// containerd parse with): among others it refuses a reference starting
// with "-", which a docker or kind command line would take for a flag.
// go-containerregistry must accept it too, since kindlab pulls and pushes
// with it.
func ParseImageReference(ref string) error {
	if _, err := reference.ParseDockerRef(ref); err != nil {
		return err
	}
	repoTag, digest, pinned := strings.Cut(ref, "@")
	if _, err := name.ParseReference(repoTag); err != nil {
		return err
	}
	if !pinned {
		return nil
	}
	t, err := name.NewTag(repoTag)
	if err != nil {
		return err
	}
	_, err = name.NewDigest(t.Context().Name() + "@" + digest)
	return err
}

// ValidateGate checks a gate against Kubernetes 1.31's own list.
func ValidateGate(gate string, value bool) error {
	if gate == "AllAlpha" || gate == "AllBeta" {
		return nil
	}
	spec, ok := gates131[gate]
	if !ok {
		msg := fmt.Sprintf("Kubernetes %s has no feature gate %q", KubernetesMinor, gate)
		if s := suggest(gate); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		return fmt.Errorf("%s", msg)
	}
	if spec.Locked && value != spec.Default {
		return fmt.Errorf("is %s in %s and locked to %t; remove it from the lab", spec.Stage, KubernetesMinor, spec.Default)
	}
	return nil
}

// GateStage tells a gate's stage in 1.31 (Alpha, Beta, GA, Deprecated), or "".
func GateStage(gate string) string { return gates131[gate].Stage }

func suggest(gate string) string {
	return closest(gate, slices.Collect(maps.Keys(gates131)))
}

// closest is the name in names nearest to s (case aside), within three
// edits, or "" (ties go to the name first in sort order).
func closest(s string, names []string) string {
	lower := strings.ToLower(s)
	best, bestD := "", 4
	for _, n := range names {
		if d := levenshtein(lower, strings.ToLower(n)); d < bestD || (d == bestD && n < best) {
			best, bestD = n, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// checkRef checks that a path a lab refers to exists beside it and stays
// inside the tree the lab came from.
func checkRef(o Origin, rel string, wantDir bool) error {
	p, err := o.Resolve(rel)
	if err != nil {
		return err
	}
	info, err := fs.Stat(o.FS, p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%q does not exist (paths are relative to the lab file)", rel)
	case err != nil:
		// os.Root refuses a symlink that leads out of the tree.
		return fmt.Errorf("%q cannot be read inside %s: %v", rel, o.tree(), unwrapPathError(err))
	}
	if wantDir && !info.IsDir() {
		return fmt.Errorf("%q is not a directory", rel)
	}
	if !wantDir && info.IsDir() {
		return fmt.Errorf("%q is a directory, not a file", rel)
	}
	// A FIFO or device would block or never end when read.
	if !wantDir && (!info.Mode().IsRegular() || info.Size() > MaxFileSize) {
		return fmt.Errorf("%q must be a regular file of at most %d KiB", rel, MaxFileSize>>10)
	}
	return nil
}

// checkOwnDir is checkRef for a directory whose files a lab pushes or
// applies (and a bundle carries): it must not hold the lab file itself, as
// "." or ".." from labs/ would, which would take the whole folder the lab
// was saved in (a home folder, say) with it.
func checkOwnDir(o Origin, rel string) error {
	if err := checkRef(o, rel, true); err != nil {
		return err
	}
	p, _ := o.Resolve(rel)
	if dir := path.Dir(o.Path); p == "." || strings.HasPrefix(dir+"/", p+"/") {
		return fmt.Errorf("%q holds the lab file itself: name a folder of its own files, beside or below the lab file (e.g. ../fixtures/model)", rel)
	}
	return nil
}

// MaxNodes and MaxControlPlanes bound a lab's nodes: a lab file from a
// stranger must not start thousands of privileged containers.
const (
	MaxNodes         = 32
	MaxControlPlanes = 7
)

// LocalRegistry is the registry host lab files name for the shared local
// registry (registry.DefaultHostPort on localhost; registry.PushReference
// moves it to the port up was given). Artifacts are pushed nowhere else.
const LocalRegistry = "localhost:5001"

// Resolve turns a path relative to the lab file into a path inside Origin.FS.
func (o Origin) Resolve(rel string) (string, error) {
	if path.IsAbs(rel) {
		return "", fmt.Errorf("%q is absolute; write it relative to the lab file", rel)
	}
	for _, c := range strings.Split(rel, "/") {
		// A lab saved in a home folder must not reach ~/.ssh or ~/.kube:
		// labs refer to their own files, which are never hidden.
		if strings.HasPrefix(c, ".") && c != "." && c != ".." {
			return "", fmt.Errorf("%q names the hidden %q: a lab refers only to its own files, not to dotfiles such as .ssh", rel, c)
		}
	}
	p := path.Join(path.Dir(o.Path), rel)
	if !fs.ValidPath(p) {
		return "", fmt.Errorf("%q leaves %s", rel, o.tree())
	}
	return p, nil
}

// tree names, for messages, the directory a lab's paths must stay in.
func (o Origin) tree() string {
	if o.Root == "" {
		return "the directory tree the lab file is in"
	}
	return fmt.Sprintf("the lab's tree %s (a lab reads files only under its folder, or under the folder above labs/)", o.Root)
}

func countRole(nodes []Node, role string) int {
	n := 0
	for _, node := range nodes {
		if node.Role == role {
			n++
		}
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
