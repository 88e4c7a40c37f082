package bundle

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/workload"
)

// Review is what replaying a bundle would run on this machine. A bundle
// comes from someone else, so replaying it is running their code: Replay
// hands this to ReplayOptions.Confirm before anything is created.
type Review struct {
	Lab       string `json:"lab"`
	NodeImage string `json:"nodeImage"`
	// NodeImages are every image the nodes run (render.Plan.NodeImages):
	// more than NodeImage when the lab gives a node its own.
	NodeImages []string `json:"nodeImages"`
	// Nodes counts the kind node containers, each privileged (as kind's are).
	Nodes int `json:"nodes"`
	// Images are the container images the lab's workloads run.
	Images []string `json:"images"`
	// Artifacts are "name -> reference" for what is pushed to the registry.
	Artifacts []string `json:"artifacts,omitempty"`
	// Privileged lists containers that ask for privileged mode or added
	// capabilities, as "kind/namespace/name container".
	Privileged []string `json:"privileged,omitempty"`
	// HostAccess lists pods that reach the node: hostPath volumes,
	// hostNetwork, hostPID, hostIPC; and PersistentVolumes that are a
	// node's directory (hostPath, local), which any pod claiming them
	// mounts.
	HostAccess []string `json:"hostAccess,omitempty"`
	// Bindings lists every RoleBinding and ClusterRoleBinding, as
	// "kind/namespace/name: role to subjects": what it grants, and to whom
	// (a binding of cluster-admin to system:unauthenticated opens the API
	// to anyone).
	Bindings []string `json:"bindings,omitempty"`
	// ServiceAccounts lists pods that run as a service account the bundle
	// does not define, as "kind/namespace/name: namespace/account": one of
	// the cluster's own (kube-system's job-controller may create any pod),
	// whose rights the bundle's bindings do not show.
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	// SystemObjects lists the objects put in kube-system, the cluster's own
	// namespace, as "kind/kube-system/name".
	SystemObjects []string `json:"systemObjects,omitempty"`
	// Admission lists webhooks and admission policies, as "kind//name":
	// they see or change every object the cluster admits afterwards,
	// kindlab's own check pods included.
	Admission []string `json:"admission,omitempty"`
	// FeatureGates and APIServerFlags are what the control plane runs with.
	FeatureGates []string `json:"featureGates,omitempty"`

	// accounts are the bundle's ServiceAccounts ("namespace/name") and
	// runAs the pods that name one, both filled by reviewObject and read
	// by finish.
	accounts map[string]bool
	runAs    []accountUse
}

// accountUse is a pod spec naming a service account.
type accountUse struct{ id, account string }

// Lines renders the review for a terminal, one finding a line. Every name
// in it comes from the bundle, so control characters are shown escaped: a
// pod name must not move the cursor over the lines the user approves.
func (r *Review) Lines() []string {
	out := r.lines()
	for i, l := range out {
		out[i] = Printable(l)
	}
	return out
}

// Printable escapes what a terminal would act on (control characters,
// escape sequences, invisible format runes) and keeps the rest as it is.
func Printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

func (r *Review) lines() []string {
	out := []string{
		fmt.Sprintf("lab %s: %d kind node(s) from %s (node containers are privileged, as kind's always are)", r.Lab, r.Nodes, strings.Join(r.NodeImages, ", ")),
	}
	add := func(title string, items []string) {
		if len(items) == 0 {
			return
		}
		out = append(out, title+":")
		for _, i := range items {
			out = append(out, "  "+i)
		}
	}
	add("images its workloads run", r.Images)
	add("artifacts pushed to the local registry", r.Artifacts)
	add("privileged containers or added capabilities", r.Privileged)
	add("pods and volumes with access to the node", r.HostAccess)
	add("roles granted (RoleBindings, ClusterRoleBindings)", r.Bindings)
	add("pods running as a service account the bundle does not define (its rights are the cluster's)", r.ServiceAccounts)
	add("objects in kube-system, the cluster's own namespace", r.SystemObjects)
	add("admission webhooks and policies (they see or change every object admitted after them)", r.Admission)
	add("feature gates", r.FeatureGates)
	return out
}

// ReviewPlan lists what a rendered plan runs: its nodes, images, artifacts,
// and every container or pod whose spec reaches past its sandbox.
func ReviewPlan(plan *render.Plan) (*Review, error) {
	r := &Review{Lab: plan.Lab, NodeImage: plan.NodeImage, NodeImages: plan.NodeImages(), Nodes: len(plan.Resolved.Nodes)}
	refs, err := workloadImages(plan)
	if err != nil {
		return nil, err
	}
	for _, ref := range refs {
		r.Images = append(r.Images, ref.ref)
	}
	for _, a := range plan.Resolved.Artifacts {
		r.Artifacts = append(r.Artifacts, fmt.Sprintf("%s -> %s", a.Name, a.Reference))
	}
	for g, on := range plan.Resolved.FeatureGates {
		r.FeatureGates = append(r.FeatureGates, fmt.Sprintf("%s=%t", g, on))
	}
	sort.Strings(r.FeatureGates)
	for _, w := range plan.Resolved.Workloads {
		objs, err := workload.Load(w)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			reviewObject(r, o)
		}
	}
	r.finish()
	return r, nil
}

// finish lists the pods whose service account is not one the bundle
// defines, once every object has been read.
func (r *Review) finish() {
	for _, u := range r.runAs {
		if !r.accounts[u.account] {
			r.ServiceAccounts = append(r.ServiceAccounts, fmt.Sprintf("%s: %s", u.id, u.account))
		}
	}
}

// reviewObject finds every pod spec in an object (a Pod, or the template of
// a Deployment, Job, CronJob, …: any map with a containers list).
func reviewObject(r *Review, o *unstructured.Unstructured) {
	id := fmt.Sprintf("%s/%s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
	if o.GetNamespace() == "kube-system" {
		r.SystemObjects = append(r.SystemObjects, id)
	}
	switch o.GetKind() {
	case "ServiceAccount":
		if r.accounts == nil {
			r.accounts = map[string]bool{}
		}
		r.accounts[namespaceOf(o)+"/"+o.GetName()] = true
	case "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding":
		r.Admission = append(r.Admission, id)
	case "PersistentVolume":
		for _, src := range []string{"hostPath", "local"} {
			if p, ok, _ := unstructured.NestedString(o.Object, "spec", src, "path"); ok {
				r.HostAccess = append(r.HostAccess, fmt.Sprintf("%s: %s %s (any pod that claims it mounts it)", id, src, p))
			}
		}
	case "RoleBinding", "ClusterRoleBinding":
		kind, _, _ := unstructured.NestedString(o.Object, "roleRef", "kind")
		role, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
		subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
		var to []string
		for _, sub := range subjects {
			m, _ := sub.(map[string]any)
			who := fmt.Sprintf("%v %v", m["kind"], m["name"])
			if ns, _ := m["namespace"].(string); ns != "" {
				who += " (namespace " + ns + ")"
			}
			to = append(to, who)
		}
		r.Bindings = append(r.Bindings, fmt.Sprintf("%s: %s %s to %s", id, kind, role, strings.Join(to, ", ")))
	}
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if _, ok := t["containers"].([]any); ok {
				reviewPodSpec(r, id, t)
				// serviceAccount is the deprecated name of the field.
				sa, _ := t["serviceAccountName"].(string)
				if old, _ := t["serviceAccount"].(string); sa == "" {
					sa = old
				}
				if sa != "" && sa != "default" {
					r.runAs = append(r.runAs, accountUse{id: id, account: namespaceOf(o) + "/" + sa})
				}
			}
			for _, x := range t {
				walk(x)
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		}
	}
	walk(o.Object)
}

// namespaceOf is where an object lands: its namespace, or default, where
// a manifest without one is applied.
func namespaceOf(o *unstructured.Unstructured) string {
	if ns := o.GetNamespace(); ns != "" {
		return ns
	}
	return "default"
}

func reviewPodSpec(r *Review, id string, spec map[string]any) {
	var host []string
	for _, k := range []string{"hostNetwork", "hostPID", "hostIPC"} {
		if on, _ := spec[k].(bool); on {
			host = append(host, k)
		}
	}
	vols, _ := spec["volumes"].([]any)
	for _, v := range vols {
		m, _ := v.(map[string]any)
		if hp, ok := m["hostPath"].(map[string]any); ok {
			host = append(host, fmt.Sprintf("hostPath %v", hp["path"]))
		}
	}
	if len(host) > 0 {
		r.HostAccess = append(r.HostAccess, fmt.Sprintf("%s: %s", id, strings.Join(host, ", ")))
	}
	for _, key := range []string{"initContainers", "containers", "ephemeralContainers"} {
		list, _ := spec[key].([]any)
		for _, c := range list {
			m, _ := c.(map[string]any)
			sc, _ := m["securityContext"].(map[string]any)
			var what []string
			if p, _ := sc["privileged"].(bool); p {
				what = append(what, "privileged")
			}
			if caps, _ := sc["capabilities"].(map[string]any); caps != nil {
				if add, _ := caps["add"].([]any); len(add) > 0 {
					what = append(what, fmt.Sprintf("adds %v", add))
				}
			}
			if len(what) > 0 {
				r.Privileged = append(r.Privileged, fmt.Sprintf("%s container %v: %s", id, m["name"], strings.Join(what, ", ")))
			}
		}
	}
}
