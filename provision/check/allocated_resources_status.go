package check

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func init() {
	register(definition{
		name: "allocated-resources-status", feature: "Device health in allocatedResourcesStatus (ResourceHealthStatus, alpha)", position: 100,
		// It marks one device unhealthy in the device plugin for a moment,
		// and waits for the consumer pod to run on a node with devices (a
		// pending pod would stay off a tainted node).
		changes: []Resource{DeviceHealth},
		needs:   []Resource{NodeTaints},
		run:     checkAllocatedResourcesStatus,
	})
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
	err = poll(ctx, 500*time.Millisecond, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
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
		rerr := poll(cctx, 500*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, string, error) {
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
	err = poll(ctx, 500*time.Millisecond, 90*time.Second, func(ctx context.Context) (bool, string, error) {
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
