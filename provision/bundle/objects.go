package bundle

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/workload"
)

// namespaceResources are listed in every namespace the lab's workloads use:
// what a reader of a bug report looks at next to the workload's objects.
// Secrets are among them on purpose: their shape (type, keys, owner) helps,
// and their values are replaced.
var namespaceResources = []schema.GroupVersionResource{
	{Version: "v1", Resource: "pods"},
	{Version: "v1", Resource: "events"},
	{Version: "v1", Resource: "services"},
	{Version: "v1", Resource: "configmaps"},
	{Version: "v1", Resource: "secrets"},
	{Version: "v1", Resource: "serviceaccounts"},
	{Version: "v1", Resource: "persistentvolumeclaims"},
	{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"},
}

var clusterResources = []schema.GroupVersionResource{
	{Version: "v1", Resource: "nodes"},
	{Version: "v1", Resource: "persistentvolumes"},
}

// collectObjects writes the live state of every object the lab's workloads
// created (objects/workloads/<workload>.yaml), what lives in their
// namespaces (objects/namespaces/<ns>/<resource>.yaml) and the nodes and
// volumes (objects/cluster/…). Objects pass through Object before they are
// written, and the files through the text rules when the stage writes them.
func collectObjects(ctx context.Context, cfg *rest.Config, r *lab.Resolved, st *stage) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("discovery client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	namespaces := map[string]bool{}
	for _, w := range r.Workloads {
		objs, err := workload.Load(w)
		if err != nil {
			st.problem("objects of workload %s: %v", w.Name, err)
			continue
		}
		var doc bytes.Buffer
		found := map[string]int{}
		for _, o := range objs {
			gvk := o.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				fmt.Fprintf(&doc, "# %s %s: the cluster does not serve %s: %v\n---\n", gvk.Kind, o.GetName(), gvk.GroupVersion(), err)
				continue
			}
			var res dynamic.ResourceInterface = dyn.Resource(m.Resource)
			ns := ""
			if m.Scope.Name() == meta.RESTScopeNameNamespace {
				ns = o.GetNamespace()
				if ns == "" {
					ns = metav1.NamespaceDefault
				}
				res = dyn.Resource(m.Resource).Namespace(ns)
				namespaces[ns] = true
			}
			if gvk.Kind == "Namespace" && gvk.Group == "" {
				namespaces[o.GetName()] = true
			}
			live, err := res.Get(ctx, o.GetName(), metav1.GetOptions{})
			if err != nil {
				what := "error"
				if apierrors.IsNotFound(err) {
					what = "not found"
				}
				fmt.Fprintf(&doc, "# %s %s: %s: %v\n---\n", gvk.Kind, path.Join(ns, o.GetName()), what, err)
				continue
			}
			if err := writeDoc(&doc, live, found); err != nil {
				return err
			}
		}
		name := path.Join(ObjectsDir, "workloads", w.Name+".yaml")
		if err := st.write(name, doc.Bytes()); err != nil {
			return err
		}
		st.note(name, found)
	}
	nsList := make([]string, 0, len(namespaces))
	for ns := range namespaces {
		nsList = append(nsList, ns)
	}
	sort.Strings(nsList)
	for _, ns := range nsList {
		for _, gvr := range namespaceResources {
			if err := writeList(ctx, dyn.Resource(gvr).Namespace(ns), path.Join(ObjectsDir, "namespaces", ns, gvr.Resource+".yaml"), st); err != nil {
				st.problem("list %s in namespace %s: %v", gvr.Resource, ns, err)
			}
		}
	}
	for _, gvr := range clusterResources {
		if err := writeList(ctx, dyn.Resource(gvr), path.Join(ObjectsDir, "cluster", gvr.Resource+".yaml"), st); err != nil {
			st.problem("list %s: %v", gvr.Resource, err)
		}
	}
	return nil
}

func writeList(ctx context.Context, res dynamic.ResourceInterface, name string, st *stage) error {
	list, err := res.List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var doc bytes.Buffer
	found := map[string]int{}
	for i := range list.Items {
		if err := writeDoc(&doc, &list.Items[i], found); err != nil {
			return err
		}
	}
	if doc.Len() == 0 {
		return nil
	}
	if err := st.write(name, doc.Bytes()); err != nil {
		return err
	}
	st.note(name, found)
	return nil
}

// writeDoc appends one object as a YAML document and adds what Object
// replaced in it to found.
func writeDoc(doc *bytes.Buffer, u *unstructured.Unstructured, found map[string]int) error {
	merge(found, Object(u))
	y, err := yaml.Marshal(u.Object)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	doc.Write(y)
	doc.WriteString("---\n")
	return nil
}
