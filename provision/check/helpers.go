package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func getPod(ctx context.Context, c *run, ns, name, workload string) (*corev1.Pod, error) {
	pod, err := c.client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("pod %s/%s not found (apply the %s workload first)", ns, name, workload)
	}
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", ns, name, err)
	}
	return pod, nil
}

// initDone reports whether an init container finished successfully, or
// what it waits on.
func initDone(p *corev1.Pod, container string) (bool, string) {
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name != container {
			continue
		}
		switch {
		case s.State.Terminated != nil && s.State.Terminated.ExitCode == 0:
			return true, ""
		case s.State.Terminated != nil:
			return false, fmt.Sprintf("init container %s exited %d (%s)", container, s.State.Terminated.ExitCode, s.State.Terminated.Reason)
		case s.State.Waiting != nil:
			return false, fmt.Sprintf("init container %s waiting: %s %s", container, s.State.Waiting.Reason, s.State.Waiting.Message)
		case s.LastTerminationState.Terminated != nil:
			return false, fmt.Sprintf("init container %s restarted after exit %d", container, s.LastTerminationState.Terminated.ExitCode)
		}
		return false, fmt.Sprintf("init container %s running", container)
	}
	why := fmt.Sprintf("pod %s/%s is %s", p.Namespace, p.Name, p.Status.Phase)
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status != corev1.ConditionTrue {
			why += ": " + cond.Message
		}
	}
	return false, why
}

func podLogs(ctx context.Context, c *run, ns, pod, container string) (string, error) {
	rc, err := c.client().CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).Stream(ctx)
	if err != nil {
		return "", fmt.Errorf("logs of %s/%s container %s: %w", ns, pod, container, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("logs of %s/%s container %s: %w", ns, pod, container, err)
	}
	return string(b), nil
}

// mounttestContent extracts the file content agnhost mounttest printed as
// `content of file "PATH": CONTENT`.
func mounttestContent(logs string) string {
	const marker = "content of file "
	i := strings.Index(logs, marker)
	if i < 0 {
		return ""
	}
	rest := logs[i+len(marker):]
	j := strings.Index(rest, ": ")
	if j < 0 {
		return ""
	}
	out := rest[j+2:]
	// mounttest adds one newline after the content.
	return strings.TrimSuffix(out, "\n")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
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

// noPodsFor is how long a Service may have no pod at all before a wait for
// its endpoints gives up: a Deployment being rolled creates its pods in a
// second or two, one an attendee deleted or scaled to 0 never does.
const noPodsFor = 10 * time.Second

// waitReadyEndpoints waits up to timeout for a ready endpoint of a Service,
// and fails at once after noPodsFor without any pod behind it, saying so
// and how to put the lab back, rather than after the whole timeout
// (fresh-user review, session 13: 2 minutes for a deleted Deployment).
func waitReadyEndpoints(ctx context.Context, c *run, ns, service string, timeout time.Duration) error {
	var none time.Time
	return poll(ctx, 500*time.Millisecond, timeout, func(ctx context.Context) (bool, string, error) {
		ready, pods, why, err := readyEndpoints(ctx, c, ns, service)
		switch {
		case err != nil || ready > 0:
			return ready > 0, why, err
		case pods > 0:
			none = time.Time{}
		case none.IsZero():
			none = time.Now()
		case time.Since(none) > noPodsFor:
			return false, "", fmt.Errorf("Service %s/%s has had no pod for %s: its workload was deleted or scaled to 0; `kindlab reset` puts the lab back", ns, service, noPodsFor)
		}
		return false, why, nil
	})
}

// readyEndpoints counts a Service's ready endpoints and, with none, its
// pods; the reason names their state (ErrImagePull, Pending, …).
func readyEndpoints(ctx context.Context, c *run, ns, service string) (ready, pods int, why string, err error) {
	slices, err := c.client().DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return 0, 0, "", fmt.Errorf("list EndpointSlices of %s/%s: %w", ns, service, err)
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
		return n, 0, "", nil
	}
	svc, err := c.client().CoreV1().Services(ns).Get(ctx, service, metav1.GetOptions{})
	if err != nil {
		return 0, 0, "", fmt.Errorf("get Service %s/%s: %w", ns, service, err)
	}
	list, err := c.client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labelsString(svc.Spec.Selector)})
	if err != nil {
		return 0, 0, "", fmt.Errorf("list pods of %s/%s: %w", ns, service, err)
	}
	var states []string
	for i := range list.Items {
		states = append(states, list.Items[i].Name+": "+podState(&list.Items[i]))
	}
	sort.Strings(states)
	return 0, len(list.Items), fmt.Sprintf("Service %s/%s has no ready endpoints (pods: %s)", ns, service, strings.Join(states, "; ")), nil
}

func labelsString(sel map[string]string) string {
	var parts []string
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// controlPlaneNode returns the first node labelled as a control plane.
func controlPlaneNode(ctx context.Context, c *run) (string, error) {
	nodes, err := c.client().CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "node-role.kubernetes.io/control-plane"})
	if err != nil {
		return "", fmt.Errorf("list control-plane nodes: %w", err)
	}
	if len(nodes.Items) == 0 {
		return "", fmt.Errorf("no node is labelled node-role.kubernetes.io/control-plane")
	}
	return nodes.Items[0].Name, nil
}

// podReady reports whether a pod's Ready condition is True.
func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
