package lifecycle

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	nodeutil "k8s.io/component-helpers/node/util"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/progress"
)

// WaitReady is the wait kind's create does with --wait (kind's waitforready
// action: every control-plane node Ready), done by kindlab after kind's
// create instead, in the background: the step only starts it, so the steps
// after it (the CRI shim's check, wiring the registry, pushing the
// artifacts: about 4 s of an up's critical path, measured in session 11)
// run while the control plane gets Ready; ApplyWorkloads (and Run, at its
// end) waits for it. Once the control plane is Ready the wait for every
// node goes on (Context.nodesReady) while ApplyWorkloads applies the
// workloads, whose pods the scheduler places on each node as it gets Ready.
// Every check waits for every node too (traffic-distribution's needs a
// Ready node in each of its three zones), and so does Run before it
// returns: up still ends with every node Ready.
//
// Nothing is pulled on a node before it is Ready: tried, with ctr on every
// node during the wait, the pulls held up the CNI's container creation on
// each node by 47 s (containerd busy unpacking agnhost), so the nodes got
// Ready 36–48 s after kind's create instead of about 12 s. The scheduler
// places no pod on a node still tainted not-ready (the labs' DaemonSets
// tolerate the control-plane taint only, not that one).
type WaitReady struct {
	// Wait bounds the whole wait, for the control plane and then for the
	// other nodes; zero waits for nothing (kind's --wait 0).
	Wait time.Duration
}

// Execute implements Step: it starts the waits and returns at once. The
// control plane's status line ends when it is Ready, among the lines of
// the steps that run meanwhile (each line is written whole).
func (w WaitReady) Execute(ctx context.Context, c *Context) error {
	if w.Wait <= 0 {
		return nil
	}
	cs, err := kubernetes.NewForConfig(c.Lab.Handle.RESTConfig)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(w.Wait)
	all, cp := len(c.Lab.Plan.Config.Nodes), 0
	for _, n := range c.Lab.Plan.Config.Nodes {
		if n.Role == v1alpha4.ControlPlaneRole {
			cp++
		}
	}
	c.syncStatus()
	st := &progress.Status{W: c.Status.W}
	cpl := check.NewLatch()
	var nodes *check.Latch
	if cp < all {
		nodes = check.NewLatch()
	}
	wctx, stop := context.WithCancel(ctx)
	ended := make(chan struct{})
	c.controlPlane, c.nodesReady = cpl, nodes
	c.stopNodes = func() { stop(); <-ended }
	st.Start("Waiting ≤ %s for control-plane = Ready ⏳", w.Wait)
	go func() {
		defer close(ended)
		err := waitNodes(wctx, cs, controlPlaneSelector, cp, deadline)
		switch {
		case err == nil:
			st.End(true)
		case ctx.Err() != nil || wctx.Err() == nil:
			// Failed, or the user stopped it: say so on its line. Stopped
			// by Run because a step after it failed, it ends unsaid: that
			// step's line says why.
			st.Fail()
		}
		if nodes != nil {
			c.nodesBegan = time.Now()
		}
		cpl.Open(err)
		if nodes == nil {
			return
		}
		if err != nil {
			nodes.Open(err)
			return
		}
		nodes.Open(waitNodes(wctx, cs, "", all, deadline))
	}()
	return nil
}

// awaitControlPlane waits for WaitReady's control-plane wait, if one runs:
// the workloads are applied once the control plane is Ready, as before
// kind's create with --wait returned.
func awaitControlPlane(ctx context.Context, c *Context) error {
	l := c.controlPlane
	if l == nil {
		return nil
	}
	select {
	case <-l.Done():
		return l.Err()
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// controlPlaneSelector is kubeadm's label on control-plane nodes (kind's
// waitforready action selects them the same way).
const controlPlaneSelector = "node-role.kubernetes.io/control-plane"

// waitNodes waits until want nodes matching selector ("": all) are
// registered and every one reports Ready, polling every half second until
// deadline.
func waitNodes(ctx context.Context, cs kubernetes.Interface, selector string, want int, deadline time.Time) error {
	outer := ctx
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	why := "no node registered yet"
	for {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: selector})
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
			return fmt.Errorf("nodes not Ready by the end of the wait (--wait): %s", why)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func nodeReady(n corev1.Node) bool {
	_, c := nodeutil.GetNodeCondition(&n.Status, corev1.NodeReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

// awaitNodes waits for the wait for every node that WaitReady left
// going, if it did, with a status line while it waits.
func awaitNodes(ctx context.Context, c *Context) error {
	if err := awaitControlPlane(ctx, c); err != nil {
		return err
	}
	l := c.nodesReady
	if l == nil {
		return nil
	}
	st := c.Status
	select {
	case <-l.Done():
		return l.Err()
	default:
	}
	st.Start("Waiting for every node = Ready ⏳")
	select {
	case <-l.Done():
	case <-ctx.Done():
		st.Fail()
		return context.Cause(ctx)
	}
	if err := l.Err(); err != nil {
		st.Fail()
		return err
	}
	st.End(true)
	return nil
}

// reportNodes prints, once every node is Ready, how long after the control
// plane that was (nothing when the wait failed: the checks and Run say it).
func reportNodes(c *Context, w io.Writer) {
	l := c.nodesReady
	if l == nil || w == nil {
		return
	}
	go func() {
		<-l.Done()
		if l.Err() == nil {
			fmt.Fprintf(w, "   ready: every node (%d), %s after the control plane\n", len(c.Lab.Plan.Config.Nodes), time.Since(c.nodesBegan).Round(100*time.Millisecond))
		}
	}()
}
