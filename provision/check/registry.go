package check

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Resource names a piece of cluster-wide state that a check changes for a
// moment, or needs left undisturbed while it runs. The runner never runs a
// check that changes a resource at the same time as another check that
// changes or needs it; checks that only need the same resource run together,
// since neither disturbs it.
type Resource string

const (
	// NodeTaints is the schedulability of the lab's real nodes. A taint
	// (even NoSchedule only) keeps a pod that is still pending off that
	// node, so a check that waits for workload pods to be scheduled and run
	// needs it; a check that puts a NoSchedule or NoExecute taint on a node
	// changes it (kube-proxy-health's PreferNoSchedule taint does not).
	NodeTaints Resource = "node-taints"
	// NodeObjects is the set of Node objects in the API. A check that
	// creates a throw-away Node changes it, labelled probeLabel; a check
	// that picks a node from the API's list leaves such Nodes out (no
	// kubelet or kube-proxy runs them) instead of needing NodeObjects, so
	// that it runs beside the one that creates them.
	NodeObjects Resource = "node-objects"
	// KubeProxyHealth is kube-proxy's /healthz answer on a node, which a
	// node being deleted (the autoscaler's taint) turns to 503.
	KubeProxyHealth Resource = "kube-proxy-health"
	// ServiceRange is Service ClusterIP allocation: the primary range and
	// the ServiceCIDR objects. A check that adds a ServiceCIDR for a moment
	// changes where other Services may get their ClusterIPs.
	ServiceRange Resource = "service-range"
	// PersistentVolumes is the cluster-scoped PersistentVolume set and the
	// in-tree hostPath deleter of kube-controller-manager.
	PersistentVolumes Resource = "persistent-volumes"
	// DeviceHealth is the health of the kindlab.dev/device devices the
	// health-device-plugin reports to the kubelet.
	DeviceHealth Resource = "device-health"
	// AnonymousRBAC is what RBAC grants system:anonymous and
	// system:unauthenticated.
	AnonymousRBAC Resource = "anonymous-rbac"
)

// probeLabel marks the objects a check creates for a moment (a throw-away
// Node, a Service and a ServiceCIDR, a PersistentVolume); its value is
// the check's name.
const probeLabel = "kindlab.dev/probe"

// notProbe is a label selector that leaves out probeLabel's objects.
const notProbe = "!" + probeLabel

// isProbeNode reports whether n is a check's throw-away Node.
func isProbeNode(n *corev1.Node) bool {
	_, ok := n.Labels[probeLabel]
	return ok
}

// definition is one check. Each check's file registers its own.
type definition struct {
	name    string
	feature string
	// position is the check's place in the labs' order (all-features lists
	// the checks in it); Names is sorted by it. Gaps leave room for a new
	// feature between two others.
	position int
	// changes is the cluster-wide state the check changes for a moment;
	// needs is what it needs left undisturbed. Each check's file says why.
	changes []Resource
	needs   []Resource
	run     func(ctx context.Context, c *run) error
}

// definitions are the registered checks, in position order.
var definitions []definition

// register adds a check; it panics on a duplicate name or position, which
// every test of this package catches at start-up.
func register(d definition) {
	for _, o := range definitions {
		if o.name == d.name || o.position == d.position {
			panic(fmt.Sprintf("check %s (position %d) collides with check %s (position %d)", d.name, d.position, o.name, o.position))
		}
	}
	definitions = append(definitions, d)
	slices.SortFunc(definitions, func(a, b definition) int { return a.position - b.position })
}

func lookup(name string) *definition {
	for k := range definitions {
		if definitions[k].name == name {
			return &definitions[k]
		}
	}
	return nil
}

// conflicts reports whether a and b must not run at the same time: one
// changes what the other changes or needs.
func (a *definition) conflicts(b *definition) bool {
	for _, r := range a.changes {
		if slices.Contains(b.changes, r) || slices.Contains(b.needs, r) {
			return true
		}
	}
	for _, r := range b.changes {
		if slices.Contains(a.needs, r) {
			return true
		}
	}
	return false
}

// Names lists every check in the labs' order, for
// lab.ResolveOptions.KnownChecks.
func Names() []string {
	out := make([]string, len(definitions))
	for i, d := range definitions {
		out[i] = d.name
	}
	return out
}

func unknown(name string) Result {
	return Result{Name: name, Status: Fail, Reason: fmt.Sprintf("unknown check %q (known: %s)", name, strings.Join(Names(), ", "))}
}
