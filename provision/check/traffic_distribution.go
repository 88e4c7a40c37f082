package check

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func init() {
	register(definition{
		name: "traffic-distribution", feature: "Service trafficDistribution PreferClose (beta)", position: 80,
		// It needs the Service's pods scheduled and ready in their zones (a
		// pending pod would stay off a tainted node, and a zone may have one
		// node), and it counts the zones with schedulable nodes, which a
		// tainted node would take away: NodeTaints. It binds a client pod to
		// a node of each zone picked from the API's Node list, where a
		// throw-away Node (node-bound-token) has no kubelet: NodeObjects. Its
		// client pods live in its own namespace and are deleted after, so it
		// changes no shared state.
		needs: []Resource{NodeTaints, NodeObjects},
		run:   checkTrafficDistribution,
	})
}

const (
	tdNamespace = "kindlab-traffic-distribution"
	tdService   = "echo"
	// tdClientLabel marks the check's client pods, so a run that was
	// killed before its cleanup has its pods removed by the next one.
	tdClientLabel = "kindlab.dev/traffic-distribution-client"
	// tdInARow is how many answers in a row, the latest ones, must come
	// from the right endpoints (upstream's test: 10).
	tdInARow = 10
	// tdFailed starts the line a client prints for a request that failed.
	tdFailed = "request failed:"
)

// tdClientScript is upstream's client loop (test/e2e/network/
// traffic_distribution.go createClientPod) against netexec's /hostname,
// faster (0.3 s apart, not 1 s) and printing failed requests instead of
// an empty line, so that a client whose requests fail says so.
const tdClientScript = `for i in $(seq 1 600); do echo "Date: $(date) Try: ${i}"; ` +
	`curl -q -s --connect-timeout 2 --max-time 3 http://` + tdService + `:80/hostname || echo "` + tdFailed + ` curl exit $?"; echo; sleep 0.3; done`

// checkTrafficDistribution does what upstream's [Feature:Traffic
// Distribution] e2e test does (k8s.io/kubernetes v1.31
// test/e2e/network/traffic_distribution.go): with the Service's endpoints in
// two zones and a third zone without one, the EndpointSlice controller hints
// every endpoint to its own zone, a client pod in each endpoint's zone is
// answered, request after request, by that zone's endpoint only, and a
// client in the zone without one is answered by the endpoints elsewhere.
func checkTrafficDistribution(ctx context.Context, c *run) (err error) {
	cs := c.client()
	svc, err := cs.CoreV1().Services(tdNamespace).Get(ctx, tdService, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("Service %s/%s not found (apply the traffic-distribution workload first)", tdNamespace, tdService)
	}
	if err != nil {
		return fmt.Errorf("get Service %s/%s: %w", tdNamespace, tdService, err)
	}
	if svc.Spec.TrafficDistribution == nil || *svc.Spec.TrafficDistribution != corev1.ServiceTrafficDistributionPreferClose {
		return fmt.Errorf("Service %s/%s has no trafficDistribution: PreferClose: the apiserver dropped the field (ServiceTrafficDistribution gate off)", tdNamespace, tdService)
	}
	c.detail("apiserver kept spec.trafficDistribution: PreferClose")
	if err := c.needNodes("endpoints exist once pods run on nodes in each zone"); err != nil {
		return err
	}

	nodeForZone, err := schedulableZones(ctx, c)
	if err != nil {
		return err
	}
	if len(nodeForZone) < 3 {
		return fmt.Errorf("%d zone(s) with ready schedulable nodes (%s), want 3: an endpoint in two zones and a third zone without one to fall back from (the lab's nodes: one per zone-a, zone-b, zone-c)",
			len(nodeForZone), zoneList(nodeForZone))
	}
	c.detail("zones with ready schedulable nodes: %s", zoneList(nodeForZone))

	// Ready endpoints, each hinted to its own zone, in at least two zones,
	// and a zone with nodes but no endpoint.
	zoneOfPod := map[string]string{}
	endpointZones := map[string][]string{}
	err = poll(ctx, 500*time.Millisecond, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(tdNamespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + tdService})
		if err != nil {
			return false, "", fmt.Errorf("list EndpointSlices: %w", err)
		}
		clear(zoneOfPod)
		clear(endpointZones)
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready == nil || !*e.Conditions.Ready || len(e.Addresses) == 0 {
					continue
				}
				if e.Zone == nil {
					return false, fmt.Sprintf("endpoint %s has no zone", e.Addresses[0]), nil
				}
				var hints []string
				if e.Hints != nil {
					for _, z := range e.Hints.ForZones {
						hints = append(hints, z.Name)
					}
				}
				if len(hints) != 1 || hints[0] != *e.Zone {
					return false, fmt.Sprintf("endpoint %s in zone %s has hints for zones %v, want [%s]", e.Addresses[0], *e.Zone, hints, *e.Zone), nil
				}
				if e.TargetRef == nil || e.TargetRef.Kind != "Pod" {
					return false, fmt.Sprintf("endpoint %s names no pod", e.Addresses[0]), nil
				}
				zoneOfPod[e.TargetRef.Name] = *e.Zone
				endpointZones[*e.Zone] = append(endpointZones[*e.Zone], e.TargetRef.Name)
			}
		}
		if len(endpointZones) < 2 {
			pods, err := servicePodStates(ctx, c, svc)
			if err != nil {
				return false, "", err
			}
			return false, fmt.Sprintf("ready endpoints of %s/%s in %d zone(s) (%s), want one in each of two zones (pods: %s)",
				tdNamespace, tdService, len(endpointZones), endpointList(endpointZones), pods), nil
		}
		return true, "", nil
	})
	if err != nil {
		return err
	}
	c.detail("every ready endpoint is hinted to its own zone (%s)", endpointList(endpointZones))
	var fallbackZones []string
	for z := range nodeForZone {
		if len(endpointZones[z]) == 0 {
			fallbackZones = append(fallbackZones, z)
		}
	}
	if len(fallbackZones) == 0 {
		return fmt.Errorf("every zone with schedulable nodes has an endpoint (%s): no zone left to show the fallback from (the lab runs the Service's pods in zone-a and zone-b only)", endpointList(endpointZones))
	}

	// One client pod per zone, bound to that zone's node, running
	// upstream's request loop; the same image as the Service's pods.
	dep, err := cs.AppsV1().Deployments(tdNamespace).Get(ctx, tdService, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get Deployment %s/%s (its image runs the clients): %w", tdNamespace, tdService, err)
	}
	image := dep.Spec.Template.Spec.Containers[0].Image
	pods := cs.CoreV1().Pods(tdNamespace)
	sel := metav1.ListOptions{LabelSelector: tdClientLabel}
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, sel); err != nil {
		return fmt.Errorf("delete earlier client pods in %s: %w", tdNamespace, err)
	}
	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if derr := pods.DeleteCollection(cctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, sel); derr != nil {
			joinCleanup(&err, fmt.Errorf("delete client pods in %s: %w", tdNamespace, derr))
		}
	}()
	zones := sortedZones(nodeForZone)
	clients := map[string]string{}
	for _, z := range zones {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "client-in-" + z + "-", Labels: map[string]string{tdClientLabel: z}},
			Spec: corev1.PodSpec{
				NodeName:                      nodeForZone[z],
				RestartPolicy:                 corev1.RestartPolicyNever,
				TerminationGracePeriodSeconds: new(int64),
				Containers: []corev1.Container{{
					Name: "client", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
					Command: []string{"/bin/sh", "-c", tdClientScript},
				}},
			},
		}
		created, err := pods.Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create a client pod on node %s (zone %s): %w", nodeForZone[z], z, err)
		}
		clients[z] = created.Name
	}
	for _, z := range zones {
		name, node := clients[z], nodeForZone[z]
		sameZone := len(endpointZones[z]) > 0
		var got string
		err := poll(ctx, 500*time.Millisecond, time.Minute, func(ctx context.Context) (bool, string, error) {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, "", fmt.Errorf("get client pod %s/%s: %w", tdNamespace, name, err)
			}
			if p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodSucceeded {
				return false, fmt.Sprintf("client pod %s on %s is %s", name, node, clientState(p)), nil
			}
			logs, err := podLogs(ctx, c, tdNamespace, name, "client")
			if err != nil {
				return false, err.Error(), nil
			}
			ok, why := routeVerdict(logs, z, zoneOfPod, sameZone)
			if ok {
				got = why
				return true, "", nil
			}
			return false, fmt.Sprintf("client pod %s in zone %s (node %s): %s", name, z, node, why), nil
		})
		if err != nil {
			return err
		}
		if sameZone {
			c.detail("client in %s (node %s) stays in its zone: %s", z, node, got)
		} else {
			c.detail("client in %s (node %s), no endpoint in its zone, falls back: %s", z, node, got)
		}
	}
	return nil
}

// routeVerdict reads a client's log (upstream's loop: "Date: …" lines,
// then the answer: a pod name, or a tdFailed line) from the latest answer
// back. It passes once the latest tdInARow answers all came from an
// endpoint of the client's zone (sameZone) or from any endpoint (the
// fallback, a zone without one); earlier answers may predate kube-proxy's
// update and are not held against it. zoneOf maps the endpoints' pod names
// to their zones. On a pass, why sums up who answered; otherwise it names
// the latest answer that broke the run, or how many answers there are yet.
func routeVerdict(log, clientZone string, zoneOf map[string]string, sameZone bool) (ok bool, why string) {
	lines := strings.Split(log, "\n")
	counts := map[string]int{}
	good := 0
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "Date:") {
			continue
		}
		zone, known := zoneOf[l]
		var bad string
		switch {
		case strings.HasPrefix(l, tdFailed):
			bad = fmt.Sprintf("a request failed (%s): the Service must answer clients in every zone", l)
		case !known:
			bad = fmt.Sprintf("answered %q, not by one of the Service's ready pods (%s)", firstLine(l), podList(zoneOf))
		case sameZone && zone != clientZone:
			bad = fmt.Sprintf("answered by %s in %s, not by %s's endpoint (%s): PreferClose did not keep the traffic in the client's zone",
				l, zone, clientZone, podsIn(zoneOf, clientZone))
		}
		if bad != "" {
			return false, fmt.Sprintf("%s (then %d right answer(s), want %d in a row)", bad, good, tdInARow)
		}
		good++
		counts[fmt.Sprintf("%s (%s)", l, zone)]++
		if good == tdInARow {
			var parts []string
			for k, n := range counts {
				parts = append(parts, fmt.Sprintf("%s ×%d", k, n))
			}
			sort.Strings(parts)
			return true, fmt.Sprintf("the latest %d answers from %s", good, strings.Join(parts, ", "))
		}
	}
	return false, fmt.Sprintf("%d answer(s) so far, waiting for %d in a row", good, tdInARow)
}

// schedulableZones maps each zone to the first (by name) ready node in it
// that a pod without tolerations may run on, as upstream's
// e2enode.GetReadySchedulableNodes picks them.
func schedulableZones(ctx context.Context, c *run) (map[string]string, error) {
	nodes, err := c.client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	sort.Slice(nodes.Items, func(i, j int) bool { return nodes.Items[i].Name < nodes.Items[j].Name })
	out := map[string]string{}
	for _, n := range nodes.Items {
		zone := n.Labels[corev1.LabelTopologyZone]
		if zone == "" || out[zone] != "" || n.Spec.Unschedulable {
			continue
		}
		ready, tainted := false, false
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		for _, t := range n.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				tainted = true
			}
		}
		if ready && !tainted {
			out[zone] = n.Name
		}
	}
	return out, nil
}

// servicePodStates says what each of the Service's pods is doing, for a
// zone without a ready endpoint.
func servicePodStates(ctx context.Context, c *run, svc *corev1.Service) (string, error) {
	pods, err := c.client().CoreV1().Pods(svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labelsString(svc.Spec.Selector)})
	if err != nil {
		return "", fmt.Errorf("list pods of %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	var states []string
	for i := range pods.Items {
		p := &pods.Items[i]
		where := p.Spec.NodeName
		if where == "" {
			where = "no node"
		}
		states = append(states, fmt.Sprintf("%s on %s: %s", p.Name, where, podState(p)))
	}
	if len(states) == 0 {
		return "none", nil
	}
	sort.Strings(states)
	return strings.Join(states, "; "), nil
}

// clientState is podState plus how a terminated client ended (an image
// without /bin/sh or curl ends it at once).
func clientState(p *corev1.Pod) string {
	for _, st := range p.Status.ContainerStatuses {
		if t := st.State.Terminated; t != nil {
			return fmt.Sprintf("%s: container %s exited %d (%s) %s", p.Status.Phase, st.Name, t.ExitCode, t.Reason, firstLine(strings.TrimSpace(t.Message)))
		}
	}
	return podState(p)
}

func sortedZones(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for z := range m {
		out = append(out, z)
	}
	sort.Strings(out)
	return out
}

func zoneList(nodeForZone map[string]string) string {
	if len(nodeForZone) == 0 {
		return "none"
	}
	var parts []string
	for _, z := range sortedZones(nodeForZone) {
		parts = append(parts, z+": "+nodeForZone[z])
	}
	return strings.Join(parts, ", ")
}

func endpointList(endpointZones map[string][]string) string {
	if len(endpointZones) == 0 {
		return "none"
	}
	var parts []string
	for z, pods := range endpointZones {
		parts = append(parts, z+": "+strings.Join(pods, ","))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

func podList(zoneOf map[string]string) string {
	var parts []string
	for p, z := range zoneOf {
		parts = append(parts, p+" in "+z)
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func podsIn(zoneOf map[string]string, zone string) string {
	var out []string
	for p, z := range zoneOf {
		if z == zone {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
