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
	"k8s.io/client-go/util/retry"
)

// toBeDeletedTaint is what the cluster autoscaler puts on a node it is
// about to delete; kube-proxy's /healthz fails for such a node (KEP-3836).
const toBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// checkKubeProxyHealth taints a worker as the cluster autoscaler does before
// deleting it and proves kube-proxy's /healthz on that node turns 503 while
// /livez stays 200; the taint is removed whatever happens.
func checkKubeProxyHealth(ctx context.Context, c *run) (err error) {
	if err := c.needNodes("kube-proxy's health server runs on the nodes"); err != nil {
		return err
	}
	cs := c.client()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "!node-role.kubernetes.io/control-plane"})
	if err != nil {
		return fmt.Errorf("list worker nodes: %w", err)
	}
	var node string
	if len(nodes.Items) > 0 {
		node = nodes.Items[0].Name
	} else if node, err = controlPlaneNode(ctx, c); err != nil {
		return err
	}
	status := func(ctx context.Context, p string) (string, error) {
		out, err := c.exec(ctx, node, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "http://127.0.0.1:10256"+p)
		return strings.TrimSpace(out), err
	}
	waitFor := func(p, want, explain string) error {
		return poll(ctx, time.Second, 60*time.Second, func(ctx context.Context) (bool, string, error) {
			got, err := status(ctx, p)
			if err != nil {
				return false, err.Error(), nil
			}
			return got == want, fmt.Sprintf("kube-proxy %s on %s answers %s, want %s: %s", p, node, got, want, explain), nil
		})
	}
	if err := waitFor("/healthz", "200", "kube-proxy is not healthy before the test"); err != nil {
		return err
	}
	c.detail("node %s: kube-proxy /healthz 200 before the taint", node)

	setTaint := func(ctx context.Context, on bool) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			var taints []corev1.Taint
			for _, t := range n.Spec.Taints {
				if t.Key != toBeDeletedTaint {
					taints = append(taints, t)
				}
			}
			if on {
				taints = append(taints, corev1.Taint{Key: toBeDeletedTaint, Value: fmt.Sprint(time.Now().Unix()), Effect: corev1.TaintEffectNoSchedule})
			}
			n.Spec.Taints = taints
			_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
			return err
		})
	}
	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if terr := setTaint(cctx, false); terr != nil {
			joinCleanup(&err, fmt.Errorf("remove taint %s from node %s: %w", toBeDeletedTaint, node, terr))
			return
		}
		if err == nil {
			if herr := waitFor("/healthz", "200", "kube-proxy did not recover after the taint was removed"); herr != nil {
				joinCleanup(&err, herr)
			} else {
				c.detail("taint removed: /healthz 200 again")
			}
		}
	}()
	if err := setTaint(ctx, true); err != nil {
		return fmt.Errorf("taint node %s: %w", node, err)
	}
	if err := waitFor("/healthz", "503", "kube-proxy still reports a node that is being deleted as healthy"); err != nil {
		return err
	}
	c.detail("tainted %s=…:NoSchedule: /healthz 503", toBeDeletedTaint)
	got, err := status(ctx, "/livez")
	if err != nil {
		return err
	}
	if got != "200" {
		return fmt.Errorf("kube-proxy /livez on %s answers %s while the node is tainted, want 200 (liveness must not follow node deletion)", node, got)
	}
	c.detail("/livez 200 while tainted")
	return nil
}

const (
	nftNamespace = "kindlab-nftables"
	nftService   = "echo"
)

// checkNftables proves kube-proxy programs the Service into its nftables
// table on every node, and that the Service answers from a node.
func checkNftables(ctx context.Context, c *run) error {
	if err := c.needNodes("kube-proxy's nftables table lives on the nodes"); err != nil {
		return err
	}
	cs := c.client()
	svc, err := cs.CoreV1().Services(nftNamespace).Get(ctx, nftService, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("Service %s/%s: %w (apply the nftables workload first)", nftNamespace, nftService, err)
	}
	ip := svc.Spec.ClusterIP
	if cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{}); err == nil {
		if !strings.Contains(cm.Data["config.conf"], "mode: nftables") {
			return fmt.Errorf("kube-proxy is not configured for nftables (kube-system/kube-proxy config.conf has no \"mode: nftables\")")
		}
		c.detail("kube-proxy configured with mode: nftables")
	}
	nodes, err := c.env.Nodes.Nodes(ctx)
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	if len(nodes) == 0 {
		return fmt.Errorf("no nodes to inspect")
	}
	for _, n := range nodes {
		err := poll(ctx, time.Second, 60*time.Second, func(ctx context.Context) (bool, string, error) {
			out, err := c.exec(ctx, n, "nft", "list", "table", "ip", "kube-proxy")
			if err != nil {
				return false, fmt.Sprintf("node %s has no nftables table ip kube-proxy: %v %s", n, err, strings.TrimSpace(out)), nil
			}
			return strings.Contains(out, ip), fmt.Sprintf("table ip kube-proxy on %s has no rule for %s/%s (%s)", n, nftNamespace, nftService, ip), nil
		})
		if err != nil {
			return err
		}
	}
	c.detail("table ip kube-proxy on %s holds %s/%s (%s)", strings.Join(nodes, ", "), nftNamespace, nftService, ip)
	err = poll(ctx, 2*time.Second, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		ready, why, err := readyEndpoints(ctx, c, nftNamespace, nftService)
		return ready > 0, why, err
	})
	if err != nil {
		return err
	}
	var answer string
	err = poll(ctx, time.Second, 60*time.Second, func(ctx context.Context) (bool, string, error) {
		out, err := c.exec(ctx, nodes[0], "curl", "-s", "--max-time", "5", fmt.Sprintf("http://%s:%d/hostname", ip, svc.Spec.Ports[0].Port))
		answer = strings.TrimSpace(out)
		if err != nil || answer == "" {
			return false, fmt.Sprintf("Service %s:%d does not answer from node %s: %v", ip, svc.Spec.Ports[0].Port, nodes[0], err), nil
		}
		return true, "", nil
	})
	if err != nil {
		return err
	}
	c.detail("from node %s, http://%s/hostname answered by pod %s", nodes[0], ip, answer)
	return nil
}

const (
	tdNamespace = "kindlab-traffic-distribution"
	tdService   = "echo"
)

// checkTrafficDistribution proves the apiserver keeps trafficDistribution
// and that the EndpointSlice controller hints every endpoint to its own zone.
func checkTrafficDistribution(ctx context.Context, c *run) error {
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
	var summary []string
	err = poll(ctx, 2*time.Second, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(tdNamespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + tdService})
		if err != nil {
			return false, "", fmt.Errorf("list EndpointSlices: %w", err)
		}
		zones := map[string][]string{}
		summary = nil
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
				zones[*e.Zone] = append(zones[*e.Zone], e.Addresses[0])
			}
		}
		if len(zones) < 2 {
			return false, fmt.Sprintf("ready endpoints in %d zone(s), want at least 2", len(zones)), nil
		}
		for z, addrs := range zones {
			summary = append(summary, fmt.Sprintf("%s: %s", z, strings.Join(addrs, ",")))
		}
		sort.Strings(summary)
		return true, "", nil
	})
	if err != nil {
		return err
	}
	c.detail("every ready endpoint is hinted to its own zone (%s)", strings.Join(summary, "; "))
	return nil
}

const (
	devNamespace = "kindlab-allocated-resources-status"
	devConsumer  = "device-consumer"
	devResource  = "kindlab.dev/device"
	// devHealthDir is the health-device-plugin's control directory on the
	// node: a file named after a device marks it unhealthy.
	devHealthDir = "/var/lib/kindlab-device-plugin/unhealthy"
)

// checkAllocatedResourcesStatus turns one allocated device unhealthy in the
// device plugin and proves the kubelet reports it in the container's
// allocatedResourcesStatus; the device is made healthy again afterwards.
func checkAllocatedResourcesStatus(ctx context.Context, c *run) (err error) {
	cs := c.client()
	pod, err := getPod(ctx, c, devNamespace, devConsumer, "allocated-resources-status")
	if err != nil {
		return err
	}
	if q, ok := pod.Spec.Containers[0].Resources.Limits[devResource]; !ok || q.IsZero() {
		return fmt.Errorf("pod %s/%s does not request %s", devNamespace, devConsumer, devResource)
	}
	c.detail("pod %s requests %s", devConsumer, devResource)
	if err := c.needNodes("devices and their health come from the kubelet's device manager"); err != nil {
		return err
	}
	health := func(p *corev1.Pod) map[string]corev1.ResourceHealthStatus {
		out := map[string]corev1.ResourceHealthStatus{}
		for _, s := range p.Status.ContainerStatuses {
			for _, rs := range s.AllocatedResourcesStatus {
				if rs.Name != devResource {
					continue
				}
				for _, r := range rs.Resources {
					out[string(r.ResourceID)] = r.Health
				}
			}
		}
		return out
	}
	var devs map[string]corev1.ResourceHealthStatus
	err = poll(ctx, time.Second, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		p, err := cs.CoreV1().Pods(devNamespace).Get(ctx, devConsumer, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		pod = p
		if p.Status.Phase != corev1.PodRunning {
			return false, fmt.Sprintf("pod %s/%s is not Running (%s); device plugin: %s", devNamespace, devConsumer, podState(p), pluginState(ctx, c)), nil
		}
		devs = health(p)
		if len(devs) == 0 {
			return false, fmt.Sprintf("running container has no allocatedResourcesStatus for %s: ResourceHealthStatus is off on the kubelet", devResource), nil
		}
		// A device left unhealthy (by hand, or a run cut short) would make
		// the flip below prove nothing.
		for id, h := range devs {
			if h != corev1.ResourceHealthStatusHealthy {
				return false, fmt.Sprintf("device %s is %s before the check (remove %s/%s on node %s)", id, h, devHealthDir, id, p.Spec.NodeName), nil
			}
		}
		return true, "", nil
	})
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(devs))
	for id := range devs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	c.detail("on node %s the container reports %s", pod.Spec.NodeName, formatHealth(devs))
	target := ids[0]
	file := devHealthDir + "/" + target
	if _, err := c.exec(ctx, pod.Spec.NodeName, "sh", "-c", "mkdir -p "+devHealthDir+" && touch "+file); err != nil {
		return fmt.Errorf("mark device %s unhealthy: %w", target, err)
	}
	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if _, rerr := c.exec(cctx, pod.Spec.NodeName, "rm", "-f", file); rerr != nil {
			joinCleanup(&err, rerr)
			return
		}
		rerr := poll(cctx, time.Second, 30*time.Second, func(ctx context.Context) (bool, string, error) {
			p, err := cs.CoreV1().Pods(devNamespace).Get(ctx, devConsumer, metav1.GetOptions{})
			if err != nil {
				return false, err.Error(), nil
			}
			now := health(p)
			return now[target] == corev1.ResourceHealthStatusHealthy, fmt.Sprintf("device %s did not turn healthy again: %s", target, formatHealth(now)), nil
		})
		if rerr != nil {
			joinCleanup(&err, rerr)
		} else if err == nil {
			c.detail("device %s repaired: Healthy again", target)
		}
	}()
	err = poll(ctx, time.Second, 90*time.Second, func(ctx context.Context) (bool, string, error) {
		p, err := cs.CoreV1().Pods(devNamespace).Get(ctx, devConsumer, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		devs = health(p)
		return devs[target] == corev1.ResourceHealthStatusUnhealthy,
			fmt.Sprintf("device %s marked unhealthy in the plugin but the container reports %s", target, formatHealth(devs)), nil
	})
	if err != nil {
		return err
	}
	c.detail("device %s turned unhealthy: the container reports %s", target, formatHealth(devs))
	return nil
}

func formatHealth(devs map[string]corev1.ResourceHealthStatus) string {
	var parts []string
	for id, h := range devs {
		parts = append(parts, id+"="+string(h))
	}
	sort.Strings(parts)
	return devResource + " [" + strings.Join(parts, " ") + "]"
}

// podState says what a pod waits for: a container's waiting reason or the
// scheduler's message says more than the phase.
func podState(p *corev1.Pod) string {
	for _, st := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if w := st.State.Waiting; w != nil {
			return fmt.Sprintf("%s: container %s %s %s", p.Status.Phase, st.Name, w.Reason, w.Message)
		}
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status != corev1.ConditionTrue {
			return fmt.Sprintf("%s: %s", p.Status.Phase, cond.Message)
		}
	}
	return string(p.Status.Phase)
}

// pluginState summarises the device plugin's pods, whose image is built
// offline and may be missing.
func pluginState(ctx context.Context, c *run) string {
	pods, err := c.client().CoreV1().Pods(devNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=health-device-plugin"})
	if err != nil {
		return err.Error()
	}
	if len(pods.Items) == 0 {
		return "no pods (DaemonSet health-device-plugin missing?)"
	}
	var parts []string
	for i := range pods.Items {
		p := &pods.Items[i]
		parts = append(parts, fmt.Sprintf("%s on %s: %s", p.Name, p.Spec.NodeName, podState(p)))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// readyEndpoints counts a Service's ready endpoints; with none, the reason
// names the state of the Service's pods (ErrImagePull, Pending, …).
func readyEndpoints(ctx context.Context, c *run, ns, service string) (int, string, error) {
	slices, err := c.client().DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return 0, "", fmt.Errorf("list EndpointSlices of %s/%s: %w", ns, service, err)
	}
	n := 0
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				n++
			}
		}
	}
	if n > 0 {
		return n, "", nil
	}
	svc, err := c.client().CoreV1().Services(ns).Get(ctx, service, metav1.GetOptions{})
	if err != nil {
		return 0, "", fmt.Errorf("get Service %s/%s: %w", ns, service, err)
	}
	pods, err := c.client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labelsString(svc.Spec.Selector)})
	if err != nil {
		return 0, "", fmt.Errorf("list pods of %s/%s: %w", ns, service, err)
	}
	var states []string
	for i := range pods.Items {
		states = append(states, pods.Items[i].Name+": "+podState(&pods.Items[i]))
	}
	sort.Strings(states)
	return 0, fmt.Sprintf("Service %s/%s has no ready endpoints (pods: %s)", ns, service, strings.Join(states, "; ")), nil
}

func labelsString(sel map[string]string) string {
	var parts []string
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
