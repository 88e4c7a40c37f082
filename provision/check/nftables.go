package check

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func init() {
	register(definition{
		name: "nftables", feature: "kube-proxy nftables mode (beta)", position: 40,
		// It changes nothing; it needs the Service's pods scheduled and
		// ready (a pending pod would stay off a tainted node). It reads
		// kube-proxy's nftables table, not its /healthz, and the Service's
		// ClusterIP is allocated already, so neither kube-proxy-health nor a
		// full Service range disturbs it. It lists nodes through NodeAccess
		// (the runtime's containers), never through the API, so a throw-away
		// Node object is not among them.
		needs: []Resource{NodeTaints},
		run:   checkNftables,
	})
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
		err := poll(ctx, 500*time.Millisecond, 60*time.Second, func(ctx context.Context) (bool, string, error) {
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
	if err := waitReadyEndpoints(ctx, c, nftNamespace, nftService, 2*time.Minute); err != nil {
		return err
	}
	var answer string
	err = poll(ctx, 500*time.Millisecond, 60*time.Second, func(ctx context.Context) (bool, string, error) {
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
