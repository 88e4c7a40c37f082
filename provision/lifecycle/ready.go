package lifecycle

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/exec"

	"github.com/kindlab/kindlab/provision/lab"
)

// WaitReady is the wait kind's create does with --wait (kind's waitforready
// action: every control-plane node Ready), done by kindlab after kind's
// create instead, and for every node, workers too: the checks start as
// soon as their workloads are ready, and traffic-distribution's needs a
// Ready node in each of its three zones, which a worker still joining
// lacks. Waiting here lets the nodes pull the lab's images meanwhile: a
// fresh cluster spends about half a minute between kubeadm's join and a
// Ready control plane (the CNI starting), time in which nothing else runs.
// The workloads then start on images already there, or joining pulls under
// way (containerd fetches a blob once), instead of pulling them after the
// nodes are Ready (issue #16: "workloads can start pulling while nodes
// join").
//
// The pulls go on after the wait, beside the next steps; Run waits for
// them at the end. A pull that fails is a warning, not an error: the
// kubelet pulls the same reference again for the pod, and ApplyWorkloads
// reports its reason.
type WaitReady struct {
	// Wait bounds the wait for the control plane; zero waits for nothing
	// (kind's --wait 0) but still pulls.
	Wait time.Duration
}

// pullCommand pulls with containerd's ctr, which every kind node image has
// (the ones fixtures/nodeimage builds lack crictl), into the CRI's
// namespace, through the same hosts.toml files as the CRI's own pulls
// (registry.CertsDir). containerd's CRI picks up images created in its
// namespace (as it does `kind load`'s imports), and the kubelet's lookup of
// a pod's "name:tag@digest" is normalised to "name@digest"
// (reference.ParseDockerRef, as the CRI does), the name pulled here.
var pullCommand = []string{"ctr", "--namespace", "k8s.io", "images", "pull", "--hosts-dir", "/etc/containerd/certs.d"}

// Execute implements Step.
func (w WaitReady) Execute(ctx context.Context, c *Context) error {
	refs, err := pullRefs(c.Lab.Plan.Images)
	if err != nil {
		return err
	}
	var ns []nodes.Node
	if len(refs) > 0 {
		if ns, err = c.Lab.Handle.KindNodes(); err != nil {
			return err
		}
	}
	if len(ns) > 0 {
		pulls := pullOnNodes(ctx, ns, refs)
		st := c.Status
		if w.Wait <= 0 {
			st.Done("Pulling %d image(s) on %d node(s) ⏳", len(refs), len(ns))
		}
		c.joins = append(c.joins, func() {
			for _, f := range <-pulls {
				if st.W != nil {
					fmt.Fprintf(st.W, "   warning: %s\n", f)
				}
			}
		})
	}
	if w.Wait <= 0 {
		return nil
	}
	cs, err := kubernetes.NewForConfig(c.Lab.Handle.RESTConfig)
	if err != nil {
		return err
	}
	st := c.Status
	if len(ns) > 0 {
		st.Start("Waiting ≤ %s for every node = Ready, pulling %d image(s) on %d node(s) meanwhile ⏳", w.Wait, len(refs), len(ns))
	} else {
		st.Start("Waiting ≤ %s for every node = Ready ⏳", w.Wait)
	}
	want := len(c.Lab.Plan.Config.Nodes)
	if err := waitNodes(ctx, cs, want, w.Wait); err != nil {
		st.Fail()
		return err
	}
	st.End(true)
	return nil
}

// pullRefs are the references pullCommand is given for the lab's images:
// fully qualified and, when pinned by digest, by digest alone (the name the
// CRI looks a pinned image up by).
func pullRefs(images []lab.Image) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, im := range images {
		n, err := reference.ParseDockerRef(im.Reference)
		if err != nil {
			return nil, fmt.Errorf("image %s: %q: %w", im.Name, im.Reference, err)
		}
		if r := n.String(); !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out, nil
}

// pullOnNodes pulls refs on every node, the nodes at once and each node's
// images one after another, and sends on the returned channel, once all
// are done, one line per failed pull.
func pullOnNodes(ctx context.Context, ns []nodes.Node, refs []string) <-chan []string {
	out := make(chan []string, 1)
	var (
		mu     sync.Mutex
		failed []string
		wg     sync.WaitGroup
	)
	for _, n := range ns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, r := range refs {
				var stderr bytes.Buffer
				err := n.CommandContext(ctx, pullCommand[0], append(pullCommand[1:], r)...).SetStderr(&stderr).Run()
				if err == nil {
					continue
				}
				msg := strings.TrimSpace(stderr.String())
				if rerr := exec.RunErrorForError(err); rerr != nil && msg == "" {
					msg = strings.TrimSpace(string(rerr.Output))
				}
				if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
					msg = msg[i+1:]
				}
				mu.Lock()
				failed = append(failed, fmt.Sprintf("pull %s on node %s: %v: %s", r, n, err, msg))
				mu.Unlock()
			}
		}()
	}
	go func() {
		wg.Wait()
		out <- failed
	}()
	return out
}

// waitNodes waits until want nodes are registered and every one reports
// Ready (kind's waitforready action asks the same of the control-plane
// nodes), polling every half second.
func waitNodes(ctx context.Context, cs kubernetes.Interface, want int, wait time.Duration) error {
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
