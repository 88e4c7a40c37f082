package check

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

func init() {
	register(definition{
		name: "kube-proxy-health", feature: "kube-proxy ingress connectivity reliability (GA)", position: 20,
		// It puts the autoscaler's to-be-deleted taint on a worker, which
		// turns that node's kube-proxy /healthz to 503. The taint is
		// PreferNoSchedule, not the autoscaler's NoSchedule: kube-proxy
		// reads the key alone (k8s.io/kubernetes v1.31
		// pkg/proxy/healthcheck/proxier_health.go SyncNode), and a
		// PreferNoSchedule taint keeps no pending pod off the node, so the
		// checks waiting for their pods to be scheduled (NodeTaints) run
		// beside it; with NoSchedule it waited for all of them, and up's
		// checks ended about 3 s later. It picks the worker from the API's
		// Node list, leaving out probe Nodes (node-bound-token's), which no
		// kube-proxy runs.
		changes: []Resource{KubeProxyHealth},
		run:     checkKubeProxyHealth,
	})
}

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
	node, err := kubeProxyNode(ctx, c)
	if err != nil {
		return err
	}
	status := func(ctx context.Context, p string) (string, error) {
		out, err := c.exec(ctx, node, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "http://127.0.0.1:10256"+p)
		return strings.TrimSpace(out), err
	}
	waitFor := func(p, want, explain string) error {
		return poll(ctx, 500*time.Millisecond, 60*time.Second, func(ctx context.Context) (bool, string, error) {
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
				taints = append(taints, corev1.Taint{Key: toBeDeletedTaint, Value: fmt.Sprint(time.Now().Unix()), Effect: corev1.TaintEffectPreferNoSchedule})
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
	c.detail("tainted %s=…:PreferNoSchedule (kube-proxy reads the key, whatever the effect): /healthz 503", toBeDeletedTaint)
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

// kubeProxyNode picks the node whose kube-proxy the check taints: the first
// worker in the API's list, or the control plane of a one-node lab; never
// a probe Node, which no kube-proxy runs.
func kubeProxyNode(ctx context.Context, c *run) (string, error) {
	nodes, err := c.client().CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "!node-role.kubernetes.io/control-plane," + notProbe})
	if err != nil {
		return "", fmt.Errorf("list worker nodes: %w", err)
	}
	if len(nodes.Items) > 0 {
		return nodes.Items[0].Name, nil
	}
	return controlPlaneNode(ctx, c)
}
