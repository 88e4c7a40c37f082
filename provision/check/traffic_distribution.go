package check

import (
	"context"
	"fmt"
	"maps"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	nodeutil "k8s.io/component-helpers/node/util"
)

func init() {
	register(definition{
		name: "traffic-distribution", feature: "Service trafficDistribution PreferClose (beta)", position: 80,
		// It needs the Service's pods scheduled and ready in their zones (a
		// pending pod would stay off a tainted node, and a zone may have one
		// node), and it counts the zones with schedulable nodes, which a
		// tainted node would take away: NodeTaints. It binds a client pod to
		// a node of each zone picked from the API's Node list, leaving out
		// probe Nodes (node-bound-token's), so it runs beside that check.
		// Its clients live in its own namespace (the workload's, or pods it
		// creates and deletes), so it changes no shared state.
		needs: []Resource{NodeTaints},
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
	// tdClients is the name of the workload's DaemonSet of idle client
	// pods, one per node, and of their container.
	tdClients = "client"
)

// tdClientScript is upstream's client loop (test/e2e/network/
// traffic_distribution.go createClientPod) against netexec's /hostname,
// faster (0.1 s apart, not 1 s: the check waits for tdInARow answers in a
// row) and printing failed requests instead of an empty line, so that a
// client whose requests fail says so.
const tdClientScript = `for i in $(seq 1 1200); do echo "Date: $(date) Try: ${i}"; ` +
	`curl -q -s --connect-timeout 2 --max-time 3 http://` + tdService + `:80/hostname || echo "` + tdFailed + ` curl exit $?"; echo; sleep 0.1; done`

// checkTrafficDistribution does what upstream's [Feature:Traffic
// Distribution] e2e test does (k8s.io/kubernetes v1.31
// test/e2e/network/traffic_distribution.go): with the Service's endpoints in
// two zones and a third zone without one, the EndpointSlice controller hints
// every endpoint to its own zone, a client pod in each endpoint's zone is
// answered, request after request, by that zone's endpoint only, and a
// client in the zone without one is answered by the endpoints elsewhere.
// The clients are the workload's own idle pods, one per node, asked
// through `kubectl exec`; upstream creates them, which the check does
// where the workload has none running.
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

	// A client per zone on that zone's node: the workload's own client pod
	// there, asked through `kubectl exec`, or else (the DaemonSet gone, or
	// not yet on that node) a new pod running upstream's request loop.
	// Starting three pods took 4–6 s of the check on a busy lab.
	running, err := runningClients(ctx, c)
	if err != nil {
		return err
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
		return fmt.Errorf("Service %s/%s has no ClusterIP and port to ask (clusterIP %q)", tdNamespace, tdService, svc.Spec.ClusterIP)
	}
	hostPort := net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(svc.Spec.Ports[0].Port)))
	zones := sortedZones(nodeForZone)
	ask := map[string]clientAsk{}
	var missing []string
	for _, z := range zones {
		if pod, ok := running[nodeForZone[z]]; ok && c.env.Config != nil {
			ask[z] = execAsk(c, pod, hostPort)
		} else {
			missing = append(missing, z)
		}
	}
	if len(missing) > 0 {
		asks, cleanup, perr := podAsks(ctx, c, nodeForZone, missing)
		defer func() {
			if cerr := cleanup(); cerr != nil {
				joinCleanup(&err, cerr)
			}
		}()
		if perr != nil {
			return perr
		}
		maps.Copy(ask, asks)
	}

	// The zones' clients are asked at once; details come in zone order.
	verdicts := make([]string, len(zones))
	errs := make([]error, len(zones))
	var wg sync.WaitGroup
	for i, z := range zones {
		wg.Go(func() {
			a, node, sameZone := ask[z], nodeForZone[z], len(endpointZones[z]) > 0
			errs[i] = poll(ctx, 500*time.Millisecond, time.Minute, func(ctx context.Context) (bool, string, error) {
				log, why, err := a.answers(ctx)
				if err != nil {
					return false, "", err
				}
				if why != "" {
					return false, fmt.Sprintf("client %s in zone %s (node %s): %s", a.name, z, node, why), nil
				}
				ok, v := routeVerdict(log, z, zoneOfPod, sameZone)
				if ok {
					verdicts[i] = v
					return true, "", nil
				}
				return false, fmt.Sprintf("client %s in zone %s (node %s): %s", a.name, z, node, v), nil
			})
		})
	}
	wg.Wait()
	for i, z := range zones {
		if errs[i] != nil {
			return errs[i]
		}
		a, node := ask[z], nodeForZone[z]
		if len(endpointZones[z]) > 0 {
			c.detail("client %s in %s (node %s) stays in its zone: %s", a.name, z, node, verdicts[i])
		} else {
			c.detail("client %s in %s (node %s), no endpoint in its zone, falls back: %s", a.name, z, node, verdicts[i])
		}
	}
	return nil
}

// clientAsk is one zone's client. answers returns its answers so far as
// routeVerdict reads them, or why there are none yet.
type clientAsk struct {
	name    string
	answers func(ctx context.Context) (log, why string, err error)
}

// tdBatch is what a client run by `kubectl exec` runs each time it is
// asked: tdInARow requests to the Service's ClusterIP and port (host:port),
// one after another, each a new connection that kube-proxy routes anew,
// each answer on its own line. No pause between them (upstream's loop
// waits 1 s): the answers are read once the batch is done, and its pauses
// were most of its time. The address, not the name: the cluster DNS is
// not what the check proves, and on a busy lab a lookup per request cost
// more than the request.
func tdBatch(hostPort string) string {
	return fmt.Sprintf(`for i in $(seq 1 %d); do curl -q -s --connect-timeout 2 --max-time 3 http://%s/hostname || echo "%s curl exit $?"; echo; done`,
		tdInARow, hostPort, tdFailed)
}

// runningClients maps each node to the name of the workload's client pod
// running ready there (DaemonSet tdClients).
func runningClients(ctx context.Context, c *run) (map[string]string, error) {
	pods, err := c.client().CoreV1().Pods(tdNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + tdClients})
	if err != nil {
		return nil, fmt.Errorf("list the client pods in %s: %w", tdNamespace, err)
	}
	out := map[string]string{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && p.Spec.NodeName != "" && podReady(p) {
			out[p.Spec.NodeName] = p.Name
		}
	}
	return out, nil
}

// execAsk asks through the client pod: each call runs a new batch of
// requests to hostPort in it and returns its answers.
func execAsk(c *run, pod, hostPort string) clientAsk {
	return clientAsk{name: pod, answers: func(ctx context.Context) (string, string, error) {
		out, err := podExec(ctx, c, tdNamespace, pod, tdClients, "sh", "-c", tdBatch(hostPort))
		if err != nil {
			return "", err.Error(), nil
		}
		return out, "", nil
	}}
}

// podAsks creates a client pod on the node of each of zones, running
// upstream's request loop, whose log is its answers. cleanup deletes them,
// and is never nil.
func podAsks(ctx context.Context, c *run, nodeForZone map[string]string, zones []string) (map[string]clientAsk, func() error, error) {
	cs := c.client()
	pods := cs.CoreV1().Pods(tdNamespace)
	sel := metav1.ListOptions{LabelSelector: tdClientLabel}
	cleanup := func() error {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if err := pods.DeleteCollection(cctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, sel); err != nil {
			return fmt.Errorf("delete client pods in %s: %w", tdNamespace, err)
		}
		return nil
	}
	dep, err := cs.AppsV1().Deployments(tdNamespace).Get(ctx, tdService, metav1.GetOptions{})
	if err != nil {
		return nil, cleanup, fmt.Errorf("get Deployment %s/%s (its image runs the clients): %w", tdNamespace, tdService, err)
	}
	image := dep.Spec.Template.Spec.Containers[0].Image
	// A run killed before its cleanup left its pods.
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, sel); err != nil {
		return nil, cleanup, fmt.Errorf("delete earlier client pods in %s: %w", tdNamespace, err)
	}
	out := map[string]clientAsk{}
	for _, z := range zones {
		node := nodeForZone[z]
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "client-in-" + z + "-", Labels: map[string]string{tdClientLabel: z}},
			Spec: corev1.PodSpec{
				NodeName:                      node,
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
			return nil, cleanup, fmt.Errorf("create a client pod on node %s (zone %s): %w", node, z, err)
		}
		name := created.Name
		out[z] = clientAsk{name: name, answers: func(ctx context.Context) (string, string, error) {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return "", "", fmt.Errorf("get client pod %s/%s: %w", tdNamespace, name, err)
			}
			if p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodSucceeded {
				return "", fmt.Sprintf("pod on %s is %s", node, clientState(p)), nil
			}
			logs, err := podLogs(ctx, c, tdNamespace, name, "client")
			if err != nil {
				return "", err.Error(), nil
			}
			return logs, "", nil
		}}
	}
	return out, cleanup, nil
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
// e2enode.GetReadySchedulableNodes picks them, leaving out probe Nodes.
func schedulableZones(ctx context.Context, c *run) (map[string]string, error) {
	nodes, err := c.client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	sort.Slice(nodes.Items, func(i, j int) bool { return nodes.Items[i].Name < nodes.Items[j].Name })
	out := map[string]string{}
	for _, n := range nodes.Items {
		zone := n.Labels[corev1.LabelTopologyZone]
		if zone == "" || out[zone] != "" || n.Spec.Unschedulable || isProbeNode(&n) {
			continue
		}
		_, cond := nodeutil.GetNodeCondition(&n.Status, corev1.NodeReady)
		ready, tainted := cond != nil && cond.Status == corev1.ConditionTrue, false
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
