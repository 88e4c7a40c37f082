// Package workload applies a lab's example manifests to a cluster with
// server-side apply and waits until what they create is really ready.
package workload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/kindlab/kindlab/provision/lab"
)

// FieldManager owns every field kindlab applies, so a re-run updates its
// own fields and never fights kubectl edits of other fields.
const FieldManager = "kindlab"

// WaitAnnotation set to "false" on an object tells Apply not to wait for it:
// its check judges it instead (e.g. a pod the kubelet may legitimately
// reject because the host cannot enforce AppArmor).
const WaitAnnotation = "kindlab.dev/wait"

// DefaultTimeout bounds the readiness wait of one Apply call.
const DefaultTimeout = 5 * time.Minute

// ImagePrefix marks an image a manifest takes from the lab's images: list
// (`image: "@image/agnhost"`), so every workload image is pinned once, in
// the lab. It cannot be mistaken for a pullable reference.
const ImagePrefix = "@image/"

// Options tune ApplyWith.
type Options struct {
	// Images resolve the manifests' "@image/NAME" references; ApplyLab
	// passes the lab's.
	Images []lab.Image
	// NoWait applies without waiting for readiness: an apiserver without
	// nodes (tests) never runs the pods.
	NoWait bool
	// Timeout bounds the readiness wait; zero means DefaultTimeout.
	Timeout time.Duration
	// Progress receives one line per step, one call at a time; nil
	// discards them.
	Progress func(string)
	// Ready, when set, is called once for each workload when every
	// workload's objects were applied (never after a failed apply), as soon
	// as the wait for it ends (err nil: ready;
	// with NoWait, at once), from the goroutine that waited. Workloads are
	// waited for concurrently, so a quick one is reported before a slow
	// one that comes earlier in the lab (up and reset start its check then).
	Ready func(workload string, err error)
}

// Apply server-side-applies every workload's manifests and waits until the
// objects are ready. Manifests that take images from the lab ("@image/NAME")
// need ApplyLab (or Options.Images) instead.
func Apply(ctx context.Context, cfg *rest.Config, ws []lab.ResolvedWorkload, progress func(string)) error {
	return ApplyWith(ctx, cfg, ws, Options{Progress: progress})
}

// ApplyLab applies every workload of a resolved lab, with the lab's images.
func ApplyLab(ctx context.Context, cfg *rest.Config, r *lab.Resolved, opts Options) error {
	opts.Images = r.Images
	return ApplyWith(ctx, cfg, r.Workloads, opts)
}

// ApplyWith is Apply with options.
func ApplyWith(ctx context.Context, cfg *rest.Config, ws []lab.ResolvedWorkload, opts Options) error {
	if err := CheckSize(ws); err != nil {
		return err
	}
	progress := func(string) {}
	if opts.Progress != nil {
		// The waits' goroutines report too: one line at a time.
		var mu sync.Mutex
		progress = func(msg string) {
			mu.Lock()
			defer mu.Unlock()
			opts.Progress(msg)
		}
	}
	a, err := newApplier(cfg)
	if err != nil {
		return err
	}
	loaded := make([][]*unstructured.Unstructured, len(ws))
	for i, w := range ws {
		if loaded[i], err = Load(w); err != nil {
			return err
		}
		for _, o := range loaded[i] {
			if err := ResolveImages(o, opts.Images); err != nil {
				return fmt.Errorf("workload %s: %s: %w", w.Name, describe(o), err)
			}
		}
	}
	// Every workload's namespaces first, as Helm orders an install: a pod
	// in a new namespace is refused until the serviceaccount controller has
	// made its "default" account (apply retries, see saWait), and with the
	// namespaces made together those accounts are made together too,
	// instead of one wait per workload in turn (2–6 s each on a loaded
	// 2-CPU machine while the nodes were joining). They do not depend on
	// one another: all at once.
	g, gctx := errgroup.WithContext(ctx)
	for i, w := range ws {
		for _, o := range loaded[i] {
			if rank(o) == rankNamespace {
				g.Go(func() error {
					if _, err := a.apply(gctx, o); err != nil {
						return fmt.Errorf("workload %s: %w", w.Name, err)
					}
					return nil
				})
			}
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Then what any workload's objects may need from another's (a CRD, a
	// StorageClass), in the lab's order, as one after another would have
	// had it.
	prerequisites := make([][]applied, len(ws))
	for i, w := range ws {
		for _, o := range loaded[i] {
			if rank(o) == rankClusterPrerequisite {
				res, err := a.apply(ctx, o)
				if err != nil {
					return fmt.Errorf("workload %s: %w", w.Name, err)
				}
				prerequisites[i] = append(prerequisites[i], res)
			}
		}
	}
	for i, w := range ws {
		noun := "objects"
		if len(loaded[i]) == 1 {
			noun = "object"
		}
		progress(fmt.Sprintf("applying workload %s (%d %s)", w.Name, len(loaded[i]), noun))
	}
	ready := opts.Ready
	if ready == nil {
		ready = func(string, error) {}
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	// The waits end at the first failed apply: up fails then anyway, and
	// must say why without waiting minutes for the others.
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Each workload's other objects in its own order, the workloads at
	// once, and each workload waited for as soon as its own objects are
	// applied. One after another, ~25 applies on a 2-CPU machine whose
	// nodes were still joining took 8–11 s (0.2–1 s each), and the last
	// workloads' pods, the checks' critical path, started that much later.
	// The error returned names every failed workload, in the lab's order:
	// a pod that failed behind a workload that merely timed out is known
	// and must not be dropped (with no check of its name, up
	// --skip-checks, nothing else reports it).
	applyErrs := make([]error, len(ws))
	waitErrs := make([]error, len(ws))
	var wg, applies sync.WaitGroup
	// A workload is reported ready only once every workload's objects
	// are applied: after a failed apply no check starts (the caller
	// reports the apply), as when the applies came one after another.
	allApplied := make(chan struct{})
	ended := func(name string, err error) {
		<-allApplied
		if joinErrors(applyErrs) == nil {
			ready(name, err)
		}
	}
	began := time.Now()
	applies.Add(len(ws))
	go func() { applies.Wait(); close(allApplied) }()
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			appliedOwn := sync.OnceFunc(applies.Done)
			defer appliedOwn()
			objs := prerequisites[i]
			for _, o := range loaded[i] {
				if r := rank(o); r == rankNamespace || r == rankClusterPrerequisite {
					continue
				}
				if !opts.NoWait {
					a.awaitVolume(ctx, o)
				}
				res, err := a.apply(ctx, o)
				if err != nil {
					applyErrs[i] = fmt.Errorf("workload %s: %w", w.Name, err)
					cancel()
					return
				}
				objs = append(objs, res)
			}
			appliedOwn()
			if opts.NoWait {
				ended(w.Name, nil)
				return
			}
			var waits []applied
			for _, o := range objs {
				if needsWait(o.obj) {
					progress(fmt.Sprintf("waiting for %s", describe(o.obj)))
					waits = append(waits, o)
				}
			}
			for _, o := range waits {
				if err := a.wait(wctx, o); err != nil {
					waitErrs[i] = err
					break
				}
			}
			// Says which workload held the step up, and for how long.
			if len(waits) > 0 && waitErrs[i] == nil {
				progress(fmt.Sprintf("ready: workload %s after %s", w.Name, time.Since(began).Round(100*time.Millisecond)))
			}
			ended(w.Name, waitErrs[i])
		}()
	}
	wg.Wait()
	if err := joinErrors(applyErrs); err != nil {
		return err
	}
	return joinErrors(waitErrs)
}

// joinErrors is errs' non-nil errors as one line, in order; nil when there
// are none. %w on each keeps errors.Is working.
func joinErrors(errs []error) error {
	var joined error
	for _, err := range errs {
		switch {
		case err == nil:
		case joined == nil:
			joined = err
		default:
			joined = fmt.Errorf("%w; %w", joined, err)
		}
	}
	return joined
}

// MaxManifestSize bounds one manifest file of a workload, in bytes (the
// labs' largest is a few KiB).
const MaxManifestSize = 4 << 20

// MaxLabManifestsSize bounds all the manifest files of a lab's workloads
// together, in bytes (all-features' are about 40 KiB): decoding YAML costs
// about a hundred times its size in memory, and a lab or bundle from
// someone else may hold many files of MaxManifestSize.
const MaxLabManifestsSize = 16 << 20

// CheckSize refuses workloads whose manifest files together exceed
// MaxLabManifestsSize, or one of which is not a regular file of at most
// MaxManifestSize, before any is decoded.
func CheckSize(ws []lab.ResolvedWorkload) error {
	var total int64
	for _, w := range ws {
		_, files, err := manifests(w)
		if err != nil {
			return err
		}
		for _, f := range files {
			if total += f.Size(); total > MaxLabManifestsSize {
				return fmt.Errorf("workload %s: %s/%s: the lab's manifests pass %d MiB together (at most %d MiB; each file at most %d MiB)",
					w.Name, w.Dir.Display, f.Name(), MaxLabManifestsSize>>20, MaxLabManifestsSize>>20, MaxManifestSize>>20)
			}
		}
	}
	return nil
}

// manifests lists the manifest files of a workload Load reads: *.yaml,
// *.yml and *.json directly in its directory, in name order, each a
// regular file of at most MaxManifestSize.
func manifests(w lab.ResolvedWorkload) (fs.FS, []fs.FileInfo, error) {
	dir, err := w.Dir.Sub()
	if err != nil {
		return nil, nil, fmt.Errorf("workload %s: %w", w.Name, err)
	}
	entries, err := fs.ReadDir(dir, ".")
	if err != nil {
		return nil, nil, fmt.Errorf("workload %s: read %s: %w", w.Name, w.Dir.Display, err)
	}
	var files []fs.FileInfo
	for _, e := range entries {
		ext := path.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		info, err := fs.Stat(dir, e.Name())
		if err != nil {
			return nil, nil, fmt.Errorf("workload %s: %w", w.Name, err)
		}
		// A lab may come from someone else: decoding YAML costs about a
		// hundred times its size in memory, so a manifest is bounded.
		if !info.Mode().IsRegular() || info.Size() > MaxManifestSize {
			return nil, nil, fmt.Errorf("workload %s: %s/%s: want a regular file of at most %d MiB", w.Name, w.Dir.Display, e.Name(), MaxManifestSize>>20)
		}
		files = append(files, info)
	}
	return dir, files, nil
}

// Load reads every *.yaml, *.yml and *.json file directly in a workload's
// directory, in name order, and returns the objects in apply order
// (namespaces and cluster-wide prerequisites first, file order otherwise).
func Load(w lab.ResolvedWorkload) ([]*unstructured.Unstructured, error) {
	dir, files, err := manifests(w)
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for _, e := range files {
		data, err := fs.ReadFile(dir, e.Name())
		if err != nil {
			return nil, fmt.Errorf("workload %s: %w", w.Name, err)
		}
		docs, err := Decode(data)
		if err != nil {
			return nil, fmt.Errorf("workload %s: %s/%s: %w", w.Name, w.Dir.Display, e.Name(), err)
		}
		objs = append(objs, docs...)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("workload %s: no manifests in %s", w.Name, w.Dir.Display)
	}
	sort.SliceStable(objs, func(i, j int) bool { return rank(objs[i]) < rank(objs[j]) })
	return objs, nil
}

// Decode splits multi-document YAML (or JSON) into objects, skipping empty
// documents; each object must name its apiVersion, kind and name.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("document %d: apiVersion, kind and metadata.name are required", i+1)
		}
		out = append(out, u)
	}
}

// rank's first two ranks, which ApplyWith applies for every workload
// before any workload's other objects: Namespaces, then the cluster-wide
// objects other workloads may use.
const (
	rankNamespace           = 0
	rankClusterPrerequisite = 1
)

// rank orders objects so that what others depend on exists first.
func rank(u *unstructured.Unstructured) int {
	switch u.GetKind() {
	case "Namespace":
		return rankNamespace
	case "CustomResourceDefinition", "StorageClass", "PriorityClass", "ServiceCIDR":
		return rankClusterPrerequisite
	case "ServiceAccount", "ClusterRole", "Role", "ConfigMap", "Secret", "PersistentVolume":
		return 2
	case "ClusterRoleBinding", "RoleBinding", "PersistentVolumeClaim":
		return 3
	default:
		return 4
	}
}

func describe(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", u.GetKind(), ns, u.GetName())
	}
	return fmt.Sprintf("%s %s", u.GetKind(), u.GetName())
}

type applied struct {
	obj *unstructured.Unstructured
	res dynamic.ResourceInterface
}

type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// Clients are what applying arbitrary manifests takes: a dynamic client,
// discovery, and a REST mapper over it (reset compares with them too).
type Clients struct {
	Dynamic   dynamic.Interface
	Discovery discovery.DiscoveryInterface
	Mapper    *restmapper.DeferredDiscoveryRESTMapper
}

// NewClients connects them to a cluster.
func NewClients(cfg *rest.Config) (*Clients, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return &Clients{Dynamic: dyn, Discovery: dc, Mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

func newApplier(cfg *rest.Config) (*applier, error) {
	c, err := NewClients(cfg)
	if err != nil {
		return nil, err
	}
	return &applier{dyn: c.Dynamic, mapper: c.Mapper}, nil
}

func (a *applier) apply(ctx context.Context, u *unstructured.Unstructured) (applied, error) {
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		// A CRD applied just before, or an API enabled by runtime config,
		// is missing from the cached discovery.
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return applied{}, fmt.Errorf("%s: the cluster does not serve %s: %w", describe(u), gvk.GroupVersion(), err)
	}
	var res dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if u.GetNamespace() == "" {
			u.SetNamespace(metav1.NamespaceDefault)
		}
		res = a.dyn.Resource(m.Resource).Namespace(u.GetNamespace())
	}
	// A pod in a namespace created a moment ago is refused until the
	// serviceaccount controller has made the namespace's "default" account.
	deadline := time.Now().Add(saWait)
	for {
		out, err := res.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		if err == nil {
			return applied{obj: out, res: res}, nil
		}
		if !missingServiceAccount(err) || time.Now().After(deadline) {
			return applied{}, fmt.Errorf("apply %s: %w", describe(u), err)
		}
		select {
		case <-ctx.Done():
			return applied{}, fmt.Errorf("apply %s: %w", describe(u), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// awaitVolume holds a claim pre-bound to a volume (spec.volumeName) until
// the PV controller has taken that volume in: its phase is no longer the
// apiserver's initial Pending (Available; Bound on a re-apply). Applied
// right after the volume, the claim's binding raced the controller's first
// update of the volume (to Available), and the loser's conflict waited for
// the controller's periodic resync (--pvclaimbinder-sync-period, 15 s):
// the pv-last-transition-time workload took 2 to 26 s to bind while a lab
// came up (6 s in the first up since, most of it the controller's own
// pace on a loaded machine). A volume that is not there, or still
// Pending after volumeWait (no PV controller runs), does not hold the
// claim any longer.
func (a *applier) awaitVolume(ctx context.Context, claim *unstructured.Unstructured) {
	name, _, _ := unstructured.NestedString(claim.Object, "spec", "volumeName")
	if claim.GetKind() != "PersistentVolumeClaim" || claim.GetAPIVersion() != "v1" || name == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, volumeWait)
	defer cancel()
	pvs := a.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumes"})
	for {
		pv, err := pvs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return
		}
		if phase, _, _ := unstructured.NestedString(pv.Object, "status", "phase"); phase != "" && phase != "Pending" {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// volumeWait bounds awaitVolume.
const volumeWait = 10 * time.Second

// saWait bounds the wait for a new namespace's default service account.
const saWait = 30 * time.Second

func missingServiceAccount(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "error looking up service account")
}

func needsWait(u *unstructured.Unstructured) bool {
	if strings.EqualFold(u.GetAnnotations()[WaitAnnotation], "false") {
		return false
	}
	switch u.GetKind() {
	case "Pod", "Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet", "ServiceCIDR":
		return true
	case "PersistentVolumeClaim":
		// Only a claim pre-bound to a volume binds on its own; a claim of a
		// WaitForFirstConsumer class binds when a pod uses it.
		name, _, _ := unstructured.NestedString(u.Object, "spec", "volumeName")
		return name != ""
	}
	return false
}

// wait polls until the object is ready, and fails at once when it can no
// longer become ready (a failed pod or job).
func (a *applier) wait(ctx context.Context, o applied) error {
	var last string
	for {
		cur, err := o.res.Get(ctx, o.obj.GetName(), metav1.GetOptions{})
		switch {
		case err == nil:
			ready, why, terr := Ready(cur)
			if terr != nil {
				return fmt.Errorf("%s: %w", describe(o.obj), terr)
			}
			if ready {
				return nil
			}
			last = why
		case apierrors.IsNotFound(err):
			last = "not found"
		default:
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %s (%w)", describe(o.obj), last, context.Cause(ctx))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Ready reports whether an object is ready, why not, and a non-nil error
// when it never will be.
func Ready(u *unstructured.Unstructured) (bool, string, error) {
	obj := u.Object
	i64 := func(fields ...string) int64 {
		v, _, _ := unstructured.NestedInt64(obj, fields...)
		return v
	}
	generationSeen := func() bool { return i64("status", "observedGeneration") >= u.GetGeneration() }
	switch u.GetKind() {
	case "Pod":
		phase, _, _ := unstructured.NestedString(obj, "status", "phase")
		switch phase {
		case "Succeeded":
			return true, "", nil
		case "Failed":
			reason, _, _ := unstructured.NestedString(obj, "status", "reason")
			msg, _, _ := unstructured.NestedString(obj, "status", "message")
			return false, "", fmt.Errorf("pod failed: %s %s", reason, msg)
		}
		if condition(obj, "Ready") == "True" {
			return true, "", nil
		}
		return false, podWhy(obj, phase), nil
	case "Deployment":
		want := replicas(obj)
		ok := generationSeen() && i64("status", "updatedReplicas") == want && i64("status", "availableReplicas") == want
		return ok, fmt.Sprintf("%d/%d replicas available", i64("status", "availableReplicas"), want), nil
	case "StatefulSet", "ReplicaSet":
		want := replicas(obj)
		ok := generationSeen() && i64("status", "readyReplicas") == want
		return ok, fmt.Sprintf("%d/%d replicas ready", i64("status", "readyReplicas"), want), nil
	case "DaemonSet":
		want := i64("status", "desiredNumberScheduled")
		ok := generationSeen() && i64("status", "numberReady") == want && i64("status", "updatedNumberScheduled") == want
		return ok, fmt.Sprintf("%d/%d pods ready", i64("status", "numberReady"), want), nil
	case "Job":
		if condition(obj, "Failed") == "True" {
			return false, "", errors.New("job failed")
		}
		return condition(obj, "Complete") == "True", "not complete", nil
	case "PersistentVolumeClaim":
		phase, _, _ := unstructured.NestedString(obj, "status", "phase")
		return phase == "Bound", "phase " + phase, nil
	case "ServiceCIDR":
		return condition(obj, "Ready") == "True", "not Ready", nil
	}
	return true, "", nil
}

func replicas(obj map[string]any) int64 {
	v, found, _ := unstructured.NestedInt64(obj, "spec", "replicas")
	if !found {
		return 1
	}
	return v
}

func condition(obj map[string]any, typ string) string {
	conds, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if ok && m["type"] == typ {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

// podWhy names what a pod waits for: the first container state reason
// (ImagePullBackOff, CrashLoopBackOff, …) says more than the phase.
func podWhy(obj map[string]any, phase string) string {
	for _, key := range []string{"initContainerStatuses", "containerStatuses"} {
		sts, _, _ := unstructured.NestedSlice(obj, "status", key)
		for _, s := range sts {
			m, _ := s.(map[string]any)
			if reason, ok, _ := unstructured.NestedString(m, "state", "waiting", "reason"); ok && reason != "" {
				name, _ := m["name"].(string)
				return fmt.Sprintf("container %s: %s", name, reason)
			}
		}
	}
	if phase == "" {
		phase = "no status"
	}
	if msg := condMessage(obj, "PodScheduled"); msg != "" {
		return phase + ": " + msg
	}
	return phase
}

func condMessage(obj map[string]any, typ string) string {
	conds, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if ok && m["type"] == typ && m["status"] != "True" {
			s, _ := m["message"].(string)
			return s
		}
	}
	return ""
}

// ResolveImages replaces every "@image/NAME" value of an "image" field with
// the reference the lab declares for NAME.
func ResolveImages(u *unstructured.Unstructured, images []lab.Image) error {
	var walk func(v any) error
	walk = func(v any) error {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				if s, ok := x.(string); ok && k == "image" && strings.HasPrefix(s, ImagePrefix) {
					name := strings.TrimPrefix(s, ImagePrefix)
					ref := ""
					for _, img := range images {
						if img.Name == name {
							ref = img.Reference
						}
					}
					if len(images) == 0 {
						return fmt.Errorf("image %q comes from the lab's images, which were not given (apply with workload.ApplyLab or Options.Images)", name)
					}
					if ref == "" {
						var known []string
						for _, img := range images {
							known = append(known, img.Name)
						}
						return fmt.Errorf("image %q is not in the lab's images (declared: %v)", name, known)
					}
					t[k] = ref
					continue
				}
				if err := walk(x); err != nil {
					return err
				}
			}
		case []any:
			for _, x := range t {
				if err := walk(x); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(u.Object)
}
