package lifecycle

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kindlab/kindlab/provision/testenv"
)

// TestWaitNodes runs the node wait against a real kube-apiserver (no
// kubelet: the test registers the Node and reports it Ready as a kubelet
// would): too few nodes is a timeout naming the count, an interrupted wait
// says so (not "after" the whole budget, and errors.Is finds the cause),
// and a Ready node of each wanted ends the wait.
func TestWaitNodes(t *testing.T) {
	env := testenv.StartT(t, testenv.Options{})
	ctx := context.Background()

	err := waitNodes(ctx, env.Client, "", 1, time.Now().Add(time.Second))
	if err == nil || !strings.Contains(err.Error(), "0 of 1 node(s) registered") || !strings.Contains(err.Error(), "by the end of the wait") {
		t.Fatalf("no node registered: %v", err)
	}

	// Ctrl-C during the wait: the wait ends at once and says why.
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(300*time.Millisecond, cancel)
	began := time.Now()
	err = waitNodes(cctx, env.Client, "", 1, time.Now().Add(10*time.Minute))
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the cancelled wait took %s", took)
	}
	if err == nil || !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "by the end of the wait") {
		t.Errorf("cancelled wait: %v; want context.Canceled, not a 10m timeout", err)
	}

	node, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kindlab-wait-test"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitNodes(ctx, env.Client, "", 1, time.Now().Add(time.Second)); err == nil || !strings.Contains(err.Error(), "not Ready: kindlab-wait-test") {
		t.Errorf("registered, not Ready: %v", err)
	}
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "KubeletReady"}}
	if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := waitNodes(ctx, env.Client, "", 1, time.Now().Add(30*time.Second)); err != nil {
		t.Errorf("one Ready node of one: %v", err)
	}
	if err := waitNodes(ctx, env.Client, "", 2, time.Now().Add(time.Second)); err == nil || !strings.Contains(err.Error(), "1 of 2 node(s) registered") {
		t.Errorf("one Ready node of two: %v", err)
	}
	// WaitReady's first wait is for the control plane only (kubeadm's
	// label), as kind's --wait is.
	if err := waitNodes(ctx, env.Client, controlPlaneSelector, 1, time.Now().Add(time.Second)); err == nil || !strings.Contains(err.Error(), "0 of 1 node(s) registered") {
		t.Errorf("a Ready worker, no control plane: %v", err)
	}
	node, err = env.Client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Labels = map[string]string{controlPlaneSelector: ""}
	if _, err := env.Client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := waitNodes(ctx, env.Client, controlPlaneSelector, 1, time.Now().Add(30*time.Second)); err != nil {
		t.Errorf("a Ready control plane: %v", err)
	}
}
