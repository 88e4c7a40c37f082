package check

import (
	"context"
	"time"

	"k8s.io/client-go/kubernetes"
)

// FakeCheck is a check definition for the runner's own tests: it proves the
// scheduler (order, collisions, cancellation), not a feature.
type FakeCheck struct {
	Name           string
	Changes, Needs []Resource
	Run            func(ctx context.Context) error
}

// RunFakes schedules fakes exactly as Run schedules registered checks.
func RunFakes(ctx context.Context, env Env, fakes []FakeCheck) []Result {
	names := make([]string, len(fakes))
	defs := make([]*definition, len(fakes))
	for i, f := range fakes {
		names[i] = f.Name
		defs[i] = &definition{name: f.Name, feature: "test", changes: f.Changes, needs: f.Needs,
			run: func(ctx context.Context, _ *run) error { return f.Run(ctx) }}
	}
	return schedule(ctx, env, names, defs)
}

// Collide reports whether two registered checks may never run together.
func Collide(a, b string) bool { return lookup(a).conflicts(lookup(b)) }

// NodePicks is what the checks that pick nodes from the API's list would
// pick: kube-proxy-health's node, and traffic-distribution's node per zone.
func NodePicks(ctx context.Context, cs kubernetes.Interface) (string, map[string]string, error) {
	c := &run{env: Env{Client: cs}}
	node, err := kubeProxyNode(ctx, c)
	if err != nil {
		return "", nil, err
	}
	zones, err := schedulableZones(ctx, c)
	return node, zones, err
}

// ProbeLabel is the label of the objects checks create for a moment.
const ProbeLabel = probeLabel

// WaitReadyEndpoints is waitReadyEndpoints for a client.
func WaitReadyEndpoints(ctx context.Context, cs kubernetes.Interface, ns, service string, timeout time.Duration) error {
	return waitReadyEndpoints(ctx, &run{env: Env{Client: cs}}, ns, service, timeout)
}
