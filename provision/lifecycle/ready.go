package lifecycle

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// WaitReady is the wait kind's create does with --wait (kind's waitforready
// action: every control-plane node Ready), done by kindlab after kind's
// create instead, and for every node, workers too: the checks start as
// soon as their workloads are ready, and traffic-distribution's needs a
// Ready node in each of its three zones, which a worker still joining
// lacks. kind's create runs without its wait so that the registry is
// wired and the artifacts pushed while the nodes get Ready.
//
// The nodes do not pull the lab's images meanwhile: tried, with ctr on
// every node, the pulls held up the CNI's container creation on each node
// by 47 s (containerd busy unpacking agnhost), so the nodes got Ready
// 36–48 s after kind's create instead of about 12 s, and up was no faster.
type WaitReady struct {
	// Wait bounds the wait; zero waits for nothing (kind's --wait 0).
	Wait time.Duration
}

// Execute implements Step.
func (w WaitReady) Execute(ctx context.Context, c *Context) error {
	if w.Wait <= 0 {
		return nil
	}
	cs, err := kubernetes.NewForConfig(c.Lab.Handle.RESTConfig)
	if err != nil {
		return err
	}
	st := c.Status
	st.Start("Waiting ≤ %s for every node = Ready ⏳", w.Wait)
	if err := waitNodes(ctx, cs, len(c.Lab.Plan.Config.Nodes), w.Wait); err != nil {
		st.Fail()
		return err
	}
	st.End(true)
	return nil
}

// waitNodes waits until want nodes are registered and every one reports
// Ready (kind's waitforready action asks the same of the control-plane
// nodes), polling every half second.
func waitNodes(ctx context.Context, cs kubernetes.Interface, want int, wait time.Duration) error {
	outer := ctx
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	why := "no node registered yet"
	for {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			notReady := []string{}
			for _, n := range list.Items {
				if !nodeReady(n) {
					notReady = append(notReady, n.Name)
				}
			}
			switch {
			case len(list.Items) < want:
				why = fmt.Sprintf("%d of %d node(s) registered", len(list.Items), want)
			case len(notReady) == 0:
				return nil
			default:
				why = "node(s) not Ready: " + strings.Join(notReady, ", ")
			}
		} else {
			why = err.Error()
		}
		select {
		case <-ctx.Done():
			// Interrupted (Ctrl-C), the wait did not run its course: say
			// so, with the cause for errors.Is, as check's poll does.
			if outer.Err() != nil {
				return fmt.Errorf("nodes not Ready: %s (stopped: %w)", why, context.Cause(outer))
			}
			return fmt.Errorf("nodes not Ready after %s: %s", wait, why)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
