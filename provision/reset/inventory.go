package reset

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"

	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/workload"
)

// controlPlaneManagers write to the lab's objects as part of running them
// (status, allocated fields, owned children); any other field manager
// besides kindlab's own means someone changed the object.
var controlPlaneManagers = map[string]bool{
	workload.FieldManager:     true,
	"kube-controller-manager": true,
	"kube-scheduler":          true,
	"kubelet":                 true,
	"kube-apiserver":          true,
}

// inventory is the lab as the manifests want it next to what runs.
type inventory struct {
	desired map[key]*unstructured.Unstructured
	// labNamespaces are the namespaces the lab's manifests create: whatever
	// is in them belongs to the lab.
	labNamespaces map[string]bool
	live          map[key]*object
	byUID         map[types.UID]*object
	// namespaced says, per group/kind, whether its objects live in namespaces.
	namespaced map[schema.GroupKind]bool
}

// inventory loads the manifests and lists what runs in the lab's
// namespaces, plus the lab's objects elsewhere.
func (c *client) inventory(ctx context.Context, l *lab.Resolved) (*inventory, error) {
	inv := &inventory{
		desired:       map[key]*unstructured.Unstructured{},
		labNamespaces: map[string]bool{},
		live:          map[key]*object{},
		byUID:         map[types.UID]*object{},
		namespaced:    map[schema.GroupKind]bool{},
	}
	var order []*unstructured.Unstructured
	for _, w := range l.Workloads {
		objs, err := workload.Load(w)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			if err := workload.ResolveImages(o, l.Images); err != nil {
				return nil, fmt.Errorf("workload %s: %s: %w", w.Name, describe(o), err)
			}
			_, namespaced, err := c.resourceFor(o)
			if err != nil {
				return nil, fmt.Errorf("workload %s: %w", w.Name, err)
			}
			if namespaced && o.GetNamespace() == "" {
				o.SetNamespace(metav1.NamespaceDefault) // as the apply does
			}
			inv.desired[keyOf(o)] = o
			order = append(order, o)
			if o.GetKind() == "Namespace" && o.GroupVersionKind().Group == "" {
				inv.labNamespaces[o.GetName()] = true
			}
		}
	}

	// Every namespaced type that can be listed and deleted, listed across
	// the cluster at once (a few dozen requests, in parallel), kept where
	// it is in a lab namespace.
	lists, err := c.disc.ServerPreferredNamespacedResources()
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		return nil, fmt.Errorf("discover the cluster's resource types: %w", err)
	}
	type target struct {
		gvr  schema.GroupVersionResource
		kind string
	}
	var targets []target
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range list.APIResources {
			if strings.Contains(r.Name, "/") || !hasVerbs(r.Verbs, "list", "delete") {
				continue
			}
			// Events are a record of what happened, not the lab's state.
			if r.Kind == "Event" {
				continue
			}
			inv.namespaced[schema.GroupKind{Group: gv.Group, Kind: r.Kind}] = true
			targets = append(targets, target{gv.WithResource(r.Name), r.Kind})
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	sem := make(chan struct{}, 16)
	for _, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			list, err := c.dyn.Resource(t.gvr).List(ctx, metav1.ListOptions{})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				// A type that is served but cannot be listed here (an
				// aggregated API that is down) holds nothing of the lab's.
				if !apierrors.IsNotFound(err) && !apierrors.IsMethodNotSupported(err) && !apierrors.IsServiceUnavailable(err) && firstErr == nil {
					firstErr = fmt.Errorf("list %s: %w", t.gvr.Resource, err)
				}
				return
			}
			for i := range list.Items {
				u := &list.Items[i]
				if !inv.labNamespaces[u.GetNamespace()] {
					continue
				}
				// Lists leave kind and apiVersion out of their items.
				u.SetGroupVersionKind(t.gvr.GroupVersion().WithKind(t.kind))
				inv.add(&object{u: u, res: c.dyn.Resource(t.gvr).Namespace(u.GetNamespace())})
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}

	// The lab's objects outside its namespaces (its namespaces themselves,
	// cluster-wide objects such as a PersistentVolume, objects put in a
	// shared namespace) are looked at one by one.
	for _, d := range order {
		k := keyOf(d)
		if _, ok := inv.live[k]; ok {
			continue
		}
		if inv.labNamespaces[d.GetNamespace()] {
			continue // listed above: not there
		}
		r, _, err := c.resourceFor(d)
		if err != nil {
			return nil, err
		}
		cur, err := r.Get(ctx, d.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", describe(d), err)
		}
		cur.SetGroupVersionKind(d.GroupVersionKind())
		inv.add(&object{u: cur, res: r})
	}
	for k, o := range inv.live {
		if d, ok := inv.desired[k]; ok {
			o.desired, o.want = true, d
		}
	}
	return inv, nil
}

func (inv *inventory) add(o *object) {
	inv.live[keyOf(o.u)] = o
	inv.byUID[o.u.GetUID()] = o
}

func hasVerbs(verbs metav1.Verbs, want ...string) bool {
	for _, w := range want {
		found := false
		for _, v := range verbs {
			if v == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// plan is what reset will do.
type plan struct {
	// deletes are deleted and waited for; desired ones are applied again.
	deletes []*object
	// await are already being deleted: waited for (pods are hurried).
	await []*object
	// missing are desired objects that do not exist.
	missing []*unstructured.Unstructured
	// relabel are namespaces whose labels and annotations are put back.
	relabel []*object
}

// plan decides, object by object, what differs from a fresh apply.
func (inv *inventory) plan(full bool) *plan {
	p := &plan{}
	verdicts := map[types.UID]string{} // "" = keep, otherwise why it goes
	decided := map[types.UID]bool{}
	var decide func(o *object) string
	decide = func(o *object) string {
		uid := o.u.GetUID()
		if decided[uid] {
			return verdicts[uid]
		}
		decided[uid] = true // owner cycles cannot recurse forever
		why := inv.verdict(o, full, decide)
		verdicts[uid] = why
		return why
	}
	// A claim and the volume it is bound to go together: a claim created
	// again cannot bind a volume that remembers the old one, and a claim
	// whose volume is recreated is lost.
	for _, o := range sortedObjects(inv.live) {
		decide(o)
	}
	for _, o := range sortedObjects(inv.live) {
		if o.u.GetKind() != "PersistentVolumeClaim" || !o.desired {
			continue
		}
		pvName, _, _ := unstructured.NestedString(o.u.Object, "spec", "volumeName")
		pv := inv.live[key{Kind: "PersistentVolume", Name: pvName}]
		if pv == nil || !pv.desired {
			continue
		}
		switch {
		case verdicts[o.u.GetUID()] != "" && verdicts[pv.u.GetUID()] == "":
			verdicts[pv.u.GetUID()] = "its claim " + describe(o.u) + " is recreated"
		case verdicts[pv.u.GetUID()] != "" && verdicts[o.u.GetUID()] == "":
			verdicts[o.u.GetUID()] = "its volume " + describe(pv.u) + " is recreated"
		}
	}
	for _, d := range sortedDesired(inv.desired) {
		k := keyOf(d)
		o := inv.live[k]
		if o == nil {
			p.missing = append(p.missing, d)
			if d.GetKind() == "PersistentVolumeClaim" {
				// Its volume still names the claim that went.
				pvName, _, _ := unstructured.NestedString(d.Object, "spec", "volumeName")
				if pv := inv.live[key{Kind: "PersistentVolume", Name: pvName}]; pv != nil && pv.desired && verdicts[pv.u.GetUID()] == "" {
					verdicts[pv.u.GetUID()] = "its claim " + describe(d) + " is missing"
				}
			}
		}
	}
	// The namespace controller empties a namespace being deleted gracefully,
	// pod by pod; forcing its pods out makes the namespace go sooner.
	dying := map[string]bool{}
	for _, o := range inv.live {
		if isNamespace(o.u) && o.u.GetDeletionTimestamp() != nil {
			dying[o.u.GetName()] = true
		}
	}
	for _, o := range sortedObjects(inv.live) {
		why := verdicts[o.u.GetUID()]
		switch {
		case o.u.GetKind() == "Pod" && dying[o.u.GetNamespace()]:
			o.why = "its namespace is being deleted"
			p.await = append(p.await, o)
		case o.u.GetDeletionTimestamp() != nil:
			if o.desired || o.u.GetKind() == "Pod" {
				o.why = "was being deleted"
				p.await = append(p.await, o)
			}
		case why == "":
		case isNamespace(o.u):
			o.why = why
			p.relabel = append(p.relabel, o)
		default:
			o.why = why
			p.deletes = append(p.deletes, o)
		}
	}
	return p
}

// verdict says why an object must go ("" to keep it).
func (inv *inventory) verdict(o *object, full bool, decide func(*object) string) string {
	u := o.u
	if u.GetDeletionTimestamp() != nil {
		return "being deleted"
	}
	if isNamespace(u) {
		// By content: a namespace applied with nothing but its name has no
		// managed fields, and the apiserver then tracks no later update
		// (it attributes them to "before-first-apply" at the next apply).
		if !sameMetadata(u, o.want) {
			return "labels or annotations changed"
		}
		return ""
	}
	if full && !keptByControlPlane(u) {
		if o.desired {
			return "reset --full"
		}
		if len(u.GetOwnerReferences()) == 0 {
			return "not in the lab (reset --full)"
		}
	}
	if m := foreignManager(u); m != "" {
		return "changed by " + m
	}
	if o.desired && len(u.GetManagedFields()) == 0 && !untrackedSame(u, o.want) {
		return "changed (outside field tracking)"
	}
	// Managers miss a change that leaves no field behind: scaling to 0
	// through the scale subresource records no owner of replicas (0 is
	// omitted), and kindlab still "owns" the 2 it applied.
	if o.desired {
		if path := differs(o.want.Object, u.Object, ""); path != "" {
			return "changed: " + path + " is not as applied"
		}
	}
	if why := unhealthy(u); why != "" {
		return why
	}
	if o.desired || keptByControlPlane(u) {
		return ""
	}
	refs := u.GetOwnerReferences()
	if len(refs) == 0 {
		return "not in the lab"
	}
	for _, ref := range refs {
		owner := inv.byUID[ref.UID]
		if owner == nil {
			gv, _ := schema.ParseGroupVersion(ref.APIVersion)
			if inv.namespaced[schema.GroupKind{Group: gv.Group, Kind: ref.Kind}] {
				return fmt.Sprintf("its owner %s %s is gone", ref.Kind, ref.Name)
			}
			continue // a cluster-wide owner is not reset's to judge
		}
		if decide(owner) != "" {
			return fmt.Sprintf("its owner %s is deleted", describe(owner.u))
		}
	}
	return ""
}

// foreignManager names a field manager that is neither kindlab nor the
// control plane, if one wrote to the object.
func foreignManager(u *unstructured.Unstructured) string {
	for _, f := range u.GetManagedFields() {
		if !controlPlaneManagers[f.Manager] {
			return f.Manager
		}
	}
	return ""
}

// sameMetadata says whether a namespace's labels and annotations are the
// manifest's (plus the name label the apiserver adds).
func sameMetadata(live, want *unstructured.Unstructured) bool {
	labels := map[string]string{"kubernetes.io/metadata.name": live.GetName()}
	annotations := map[string]string{}
	if want != nil {
		maps.Copy(labels, want.GetLabels())
		maps.Copy(annotations, want.GetAnnotations())
	}
	return maps.Equal(labels, live.GetLabels()) && maps.Equal(annotations, nonNil(live.GetAnnotations()))
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// untrackedSame compares an object the apiserver tracks no field manager
// for with its manifest. That happens when the manifest sets nothing but
// the object's name (a ServiceAccount): the apiserver keeps no managed
// fields for it, and then records no later update either, so a change can
// only be seen in the content.
func untrackedSame(live, want *unstructured.Unstructured) bool {
	if want == nil {
		return true
	}
	return equality.Semantic.DeepEqual(comparable(live), comparable(want))
}

// comparable is an object without what the apiserver sets on it.
func comparable(u *unstructured.Unstructured) map[string]any {
	c := u.DeepCopy().Object
	delete(c, "status")
	delete(c, "apiVersion") // the list's version may differ from the manifest's
	md, _ := c["metadata"].(map[string]any)
	for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink", "namespace"} {
		delete(md, f)
	}
	for _, f := range []string{"labels", "annotations"} {
		if m, ok := md[f].(map[string]any); ok && len(m) == 0 {
			delete(md, f)
		}
	}
	return c
}

// differs returns the first field path where live lacks or has another
// value than the manifest (""if live has everything the manifest says).
// Fields the manifest does not set are not compared: defaults and what
// controllers add are the cluster's, and other managers' additions are
// found by their field manager.
func differs(want, live any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			if len(w) == 0 && live == nil {
				return ""
			}
			return orRoot(path)
		}
		for k, wv := range w {
			if path == "" && (k == "status" || k == "apiVersion") {
				continue
			}
			if path == ".metadata" && k != "labels" && k != "annotations" {
				continue
			}
			if d := differs(wv, l[k], path+"."+k); d != "" {
				return d
			}
		}
		return ""
	case []any:
		// The manifest's items must lead the live list: admission appends to
		// some lists (a pod's service account token volume and mount,
		// default tolerations), and an attendee's additions are found by
		// their field manager.
		l, ok := live.([]any)
		if !ok || len(l) < len(w) {
			if len(w) == 0 && live == nil {
				return ""
			}
			return orRoot(path)
		}
		for i := range w {
			if d := differs(w[i], l[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
		return ""
	}
	if sameScalar(want, live) {
		return ""
	}
	return orRoot(path)
}

func orRoot(path string) string {
	if path == "" {
		return "."
	}
	return strings.TrimPrefix(path, ".")
}

// sameScalar compares manifest and live values the way the apiserver
// stores them: numbers whatever their Go type (YAML decodes to float64,
// the API to int64), quantities by amount ("1000m" is stored as "1").
func sameScalar(want, live any) bool {
	if wn, ok := number(want); ok {
		if ln, ok := number(live); ok {
			return wn == ln
		}
		// A quantity written as a number (devices: 2) is stored as "2".
		if ls, ok := live.(string); ok {
			q, err := resource.ParseQuantity(ls)
			return err == nil && q.AsApproximateFloat64() == wn
		}
		return false
	}
	ws, wok := want.(string)
	ls, lok := live.(string)
	if wok && lok {
		if ws == ls {
			return true
		}
		wq, err1 := resource.ParseQuantity(ws)
		lq, err2 := resource.ParseQuantity(ls)
		return err1 == nil && err2 == nil && wq.Cmp(lq) == 0
	}
	return equality.Semantic.DeepEqual(want, live)
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

// keptByControlPlane are objects the control plane puts in every
// namespace, or keeps for a Service, by itself.
func keptByControlPlane(u *unstructured.Unstructured) bool {
	gvk := u.GroupVersionKind()
	if gvk.Group != "" {
		return false
	}
	switch gvk.Kind {
	case "ServiceAccount":
		return u.GetName() == "default"
	case "ConfigMap":
		return u.GetName() == "kube-root-ca.crt"
	case "Endpoints":
		return foreignManager(u) == ""
	}
	return false
}

// unhealthy says why an object is not as a fresh apply leaves it, for the
// kinds whose state matters to the lab: a pod must not have restarted and
// must be ready (or done), a pre-bound claim bound, a volume not released.
func unhealthy(u *unstructured.Unstructured) string {
	if u.GroupVersionKind().Group != "" {
		return ""
	}
	phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
	switch u.GetKind() {
	case "Pod":
		restarts := int64(0)
		for _, field := range []string{"initContainerStatuses", "containerStatuses"} {
			sts, _, _ := unstructured.NestedSlice(u.Object, "status", field)
			for _, s := range sts {
				if m, ok := s.(map[string]any); ok {
					n, _, _ := unstructured.NestedInt64(m, "restartCount")
					restarts += n
				}
			}
		}
		if restarts > 0 {
			return fmt.Sprintf("restarted %d time(s)", restarts)
		}
		// Pods the lab does not wait for are judged by their checks: one the
		// host cannot run (AppArmor, image volumes) is as up left it.
		if phase == "Succeeded" || strings.EqualFold(u.GetAnnotations()[workload.WaitAnnotation], "false") {
			return ""
		}
		if ready, _, _ := workload.Ready(u); !ready {
			if phase == "" {
				phase = "Pending"
			}
			return "not ready (" + phase + ")"
		}
	case "PersistentVolumeClaim":
		if name, _, _ := unstructured.NestedString(u.Object, "spec", "volumeName"); name != "" && phase != "Bound" {
			return "not bound (" + phase + ")"
		}
	case "PersistentVolume":
		if phase == "Released" || phase == "Failed" {
			return "volume " + strings.ToLower(phase)
		}
	}
	return ""
}

func isNamespace(u *unstructured.Unstructured) bool {
	return u.GetKind() == "Namespace" && u.GroupVersionKind().Group == ""
}

func sortedObjects(m map[key]*object) []*object {
	out := make([]*object, 0, len(m))
	for _, o := range m {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return less(keyOf(out[i].u), keyOf(out[j].u)) })
	return out
}

func sortedDesired(m map[key]*unstructured.Unstructured) []*unstructured.Unstructured {
	keys := make([]key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return less(keys[i], keys[j]) })
	out := make([]*unstructured.Unstructured, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}

func less(a, b key) bool {
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	if a.Group != b.Group {
		return a.Group < b.Group
	}
	return a.Name < b.Name
}

// delete removes the plan's objects (controllers first, so they make no
// replacement pods; pods last, forced where safe) and waits until they are
// gone, then forces out pods a deleted controller made meanwhile.
func (c *client) delete(ctx context.Context, p *plan) error {
	var objs []*object
	objs = append(objs, p.deletes...)
	sort.SliceStable(objs, func(i, j int) bool { return deleteRank(objs[i].u) < deleteRank(objs[j].u) })
	background := metav1.DeletePropagationBackground
	gone := map[types.UID]bool{}
	for _, o := range objs {
		uid := o.u.GetUID()
		opts := metav1.DeleteOptions{PropagationPolicy: &background, Preconditions: &metav1.Preconditions{UID: &uid}}
		if o.u.GetKind() == "Pod" {
			grace := podGrace(o.u)
			opts.GracePeriodSeconds = &grace
		}
		if err := o.res.Delete(ctx, o.u.GetName(), opts); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete %s: %w", describe(o.u), err)
		}
		gone[uid] = true
	}
	for _, o := range p.await {
		if o.u.GetKind() == "Pod" {
			uid := o.u.GetUID()
			grace := podGrace(o.u)
			err := o.res.Delete(ctx, o.u.GetName(), metav1.DeleteOptions{GracePeriodSeconds: &grace, Preconditions: &metav1.Preconditions{UID: &uid}})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return fmt.Errorf("delete %s: %w", describe(o.u), err)
			}
		}
	}
	if err := c.wait(ctx, append(objs, p.await...)); err != nil {
		return err
	}
	return c.sweep(ctx, objs, gone)
}

// sweep forces out pods that a controller being deleted created after its
// pods were deleted: the garbage collector would remove them too, but only
// after their grace period, and meanwhile they would serve the lab's Services.
func (c *client) sweep(ctx context.Context, deleted []*object, gone map[types.UID]bool) error {
	namespaces := map[string]bool{}
	for _, o := range deleted {
		if owns := deleteRank(o.u) == 0; owns && o.u.GetNamespace() != "" {
			namespaces[o.u.GetNamespace()] = true
		}
	}
	pods := c.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "pods"})
	for _, ns := range sortedKeys(namespaces) {
		list, err := pods.Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list pods in %s: %w", ns, err)
		}
		for i := range list.Items {
			pod := &list.Items[i]
			for _, ref := range pod.GetOwnerReferences() {
				if !gone[ref.UID] {
					continue
				}
				grace := podGrace(pod)
				if err := pods.Namespace(ns).Delete(ctx, pod.GetName(), metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil && !apierrors.IsNotFound(err) {
					return fmt.Errorf("delete pod %s/%s: %w", ns, pod.GetName(), err)
				}
				break
			}
		}
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range maps.Keys(m) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// deleteRank orders deletions: what makes pods, then everything else, then pods.
func deleteRank(u *unstructured.Unstructured) int {
	switch u.GetKind() {
	case "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController":
		return 0
	case "Pod":
		return 2
	}
	return 1
}

// podGrace is 0 (the pod leaves the API at once, the kubelet stops it
// afterwards) unless the pod's successor must wait for it to have stopped:
// it holds a claim (the volume must be released), devices (the kubelet
// frees them when the container ends) or a StatefulSet identity. Those get
// a second, and are gone only once the kubelet says so.
func podGrace(u *unstructured.Unstructured) int64 {
	for _, ref := range u.GetOwnerReferences() {
		if ref.Kind == "StatefulSet" {
			return 1
		}
	}
	vols, _, _ := unstructured.NestedSlice(u.Object, "spec", "volumes")
	for _, v := range vols {
		if m, ok := v.(map[string]any); ok && m["persistentVolumeClaim"] != nil {
			return 1
		}
	}
	for _, field := range []string{"initContainers", "containers"} {
		cs, _, _ := unstructured.NestedSlice(u.Object, "spec", field)
		for _, c := range cs {
			m, _ := c.(map[string]any)
			for _, kind := range []string{"limits", "requests"} {
				res, _, _ := unstructured.NestedMap(m, "resources", kind)
				for name := range res {
					// Extended resources (devices) are domain-qualified
					// names outside kubernetes.io.
					if strings.Contains(name, "/") && !strings.HasSuffix(strings.SplitN(name, "/", 2)[0], "kubernetes.io") {
						return 1
					}
				}
			}
		}
	}
	return 0
}

// restoreMetadata puts a namespace's labels and annotations back to the
// manifest's (plus the name label the apiserver sets), dropping what
// another manager added.
func (c *client) restoreMetadata(ctx context.Context, o *object) error {
	cur, err := o.res.Get(ctx, o.u.GetName(), metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get %s: %w", describe(o.u), err)
	}
	labels := map[string]string{"kubernetes.io/metadata.name": cur.GetName()}
	annotations := map[string]string{}
	if o.want != nil {
		maps.Copy(labels, o.want.GetLabels())
		maps.Copy(annotations, o.want.GetAnnotations())
	}
	cur.SetLabels(labels)
	cur.SetAnnotations(annotations)
	if _, err := o.res.Update(ctx, cur, metav1.UpdateOptions{FieldManager: workload.FieldManager}); err != nil {
		return fmt.Errorf("restore labels and annotations of %s: %w", describe(o.u), err)
	}
	return nil
}
