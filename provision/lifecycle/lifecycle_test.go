package lifecycle_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/lifecycle"
	"github.com/kindlab/kindlab/provision/progress"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
	"github.com/kindlab/kindlab/provision/testenv"
)

// lines records each line written with when it was written.
type lines struct {
	mu    sync.Mutex
	start time.Time
	at    map[string]time.Duration
	all   []string
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		l.all = append(l.all, s)
		if _, ok := l.at[s]; !ok {
			l.at[s] = time.Since(l.start)
		}
	}
	return len(p), nil
}

const nodeBoundToken = `apiVersion: v1
kind: Namespace
metadata: {name: kindlab-node-bound-token}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: token-demo, namespace: kindlab-node-bound-token}
`

// neverReady is a pod no kubelet runs, in a namespace of its own.
const neverReady = `apiVersion: v1
kind: Namespace
metadata: {name: kindlab-lifecycle-never}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: kindlab-lifecycle-never}
---
apiVersion: v1
kind: Pod
metadata: {name: never, namespace: kindlab-lifecycle-never}
spec:
  automountServiceAccountToken: false
  containers: [{name: c, image: registry.k8s.io/pause:3.10}]
`

// testLab is a lab of the workloads (name, manifests), in that order,
// and the checks.
func testLab(t *testing.T, name string, workloads [][2]string, checks string) *lab.Resolved {
	t.Helper()
	files := map[string]string{}
	spec := ""
	for _, w := range workloads {
		files[w[0]+"/manifests.yaml"] = w[1]
		spec += "  - {name: " + w[0] + ", path: " + w[0] + "}\n"
	}
	files[name+".yaml"] = `apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: ` + name + `
spec:
  nodeImage: kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b
  nodes: [{role: control-plane}]
  featureGates: {ServiceAccountTokenNodeBinding: true}
  workloads:
` + spec + `  checks: [` + checks + `]
`
	return testenv.Lab(t, name, files, lab.ResolveOptions{KnownChecks: check.Names()})
}

func labContext(t *testing.T, r *lab.Resolved, env *testenv.Env, w *lines) *lifecycle.Context {
	t.Helper()
	plan, err := render.Render(r, render.Options{Name: "test", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return &lifecycle.Context{Lab: running.FromPlan(plan, cluster.APIServerOnly("test", env.Config), state.Store{}, nil),
		Status: &progress.Status{W: w}}
}

// TestApplyWorkloadsChecks runs up's last step against a real
// kube-apiserver: node-bound-token's check runs as soon as its workload is
// ready, while apparmor's workload is still waited for; apparmor's
// workload never gets ready, so its check fails unstarted, the step fails
// naming it, and nothing waits beyond the workloads' timeout.
func TestApplyWorkloadsChecks(t *testing.T) {
	// node-bound-token's workload: its namespace and service account,
	// ready at once; apparmor's: a pod no kubelet runs, never ready.
	r := testLab(t, "gated", [][2]string{{"node-bound-token", nodeBoundToken}, {"apparmor", neverReady}}, "node-bound-token, apparmor")
	// An apply that fails after node-bound-token's was applied.
	broken := testLab(t, "broken", [][2]string{{"node-bound-token", nodeBoundToken},
		{"bogus", "apiVersion: example.com/v1\nkind: Nothing\nmetadata: {name: x}\n"}}, "node-bound-token")
	opts, err := testenv.FromLab(r)
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.StartT(t, opts)
	out := &lines{start: time.Now(), at: map[string]time.Duration{}}
	lc := labContext(t, r, env, out)
	const timeout = 15 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = lifecycle.Run(ctx, lc, lifecycle.ApplyWorkloads{Timeout: timeout, Checks: &lifecycle.RunChecks{}})
	took := time.Since(out.start)
	t.Logf("took %s:\n%s", took, strings.Join(out.all, "\n"))

	if err == nil || !strings.Contains(err.Error(), "Pod kindlab-lifecycle-never/never not ready") {
		t.Errorf("step error %v, want apparmor's pod not ready", err)
	}
	if took > timeout+20*time.Second {
		t.Errorf("the step took %s, beyond the %s workload timeout", took, timeout)
	}
	if len(lc.Checks) != 2 || lc.Checks[0].Name != "node-bound-token" || lc.Checks[1].Name != "apparmor" {
		t.Fatalf("checks %+v, want node-bound-token then apparmor", lc.Checks)
	}
	if res := lc.Checks[0]; res.Status != check.Pass {
		t.Errorf("node-bound-token: %s %s", res.Status, res.Reason)
	}
	if res := lc.Checks[1]; res.Status != check.Fail || !strings.HasPrefix(res.Reason, "not started: workload apparmor is not ready: ") {
		t.Errorf("apparmor: %s %q, want failed unstarted", res.Status, res.Reason)
	}
	// node-bound-token's line is printed once it ends: before apparmor's
	// workload gave up, so it did not wait for it.
	out.mu.Lock()
	printed := time.Duration(-1)
	for line, at := range out.at {
		if strings.Contains(line, "node-bound-token") && strings.Contains(line, "pass") {
			printed = at
		}
	}
	if printed < 0 || printed >= timeout {
		t.Errorf("node-bound-token's result printed at %s, want before the %s timeout (lines %q)", printed, timeout, out.all)
	}
	out.mu.Unlock()

	// An apply failed: the checks do not start, and none says a workload
	// that was applied was not.
	lc = labContext(t, broken, env, &lines{start: time.Now(), at: map[string]time.Duration{}})
	err = lifecycle.Run(ctx, lc, lifecycle.ApplyWorkloads{Timeout: timeout, Checks: &lifecycle.RunChecks{}})
	if err == nil || !strings.Contains(err.Error(), "workload bogus") {
		t.Errorf("step error %v, want bogus's apply", err)
	}
	if len(lc.Checks) != 1 || lc.Checks[0].Status != check.Fail || !strings.HasPrefix(lc.Checks[0].Reason, "not started: ") ||
		!strings.Contains(lc.Checks[0].Reason, "workload bogus") || strings.Contains(lc.Checks[0].Reason, "node-bound-token was not applied") {
		t.Errorf("checks after a failed apply: %+v", lc.Checks)
	}
}

// TestWaitReadyInBackground runs up's wait against a real kube-apiserver
// (no kubelet: the test registers the Nodes and reports them Ready as a
// kubelet would). WaitReady only starts the wait: the step after it runs
// before any node exists, ApplyWorkloads applies once the control plane is
// Ready, and Run returns once the worker is too. A step that fails while
// the control plane is not Ready fails Run at once, its wait ends unsaid
// (no ✗ line for a wait nobody gave up on) and nothing is written after
// Run returns.
func TestWaitReadyInBackground(t *testing.T) {
	r := testLab(t, "waits", [][2]string{{"node-bound-token", nodeBoundToken}}, "")
	opts, err := testenv.FromLab(r)
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.StartT(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	withWorker := func(lc *lifecycle.Context) *lifecycle.Context {
		lc.Lab.Plan.Config.Nodes = append(lc.Lab.Plan.Config.Nodes, v1alpha4.Node{Role: v1alpha4.WorkerRole})
		return lc
	}

	// A step after the wait fails before the control plane is Ready.
	out := &lines{start: time.Now(), at: map[string]time.Duration{}}
	lc := withWorker(labContext(t, r, env, out))
	boom := errors.New("the CRI shim is not running")
	err = lifecycle.Run(ctx, lc, lifecycle.WaitReady{Wait: time.Minute},
		lifecycle.StepFunc(func(context.Context, *lifecycle.Context) error { return boom }),
		lifecycle.ApplyWorkloads{Timeout: 15 * time.Second})
	took := time.Since(out.start)
	if !errors.Is(err, boom) || took > 10*time.Second {
		t.Errorf("Run: %v after %s, want the step's error at once", err, took)
	}
	out.mu.Lock()
	after := len(out.all)
	for _, l := range out.all {
		if strings.HasPrefix(l, " ✗") || strings.Contains(l, "Applying") {
			t.Errorf("line %q after a later step failed (lines %q)", l, out.all)
		}
	}
	out.mu.Unlock()
	time.Sleep(1500 * time.Millisecond)
	out.mu.Lock()
	if len(out.all) != after {
		t.Errorf("written after Run returned: %q", out.all[after:])
	}
	out.mu.Unlock()

	// The control plane gets Ready 2 s after the wait began, the worker
	// 2 s later.
	out = &lines{start: time.Now(), at: map[string]time.Duration{}}
	lc = withWorker(labContext(t, r, env, out))
	var stepAt time.Duration
	readyAt := make(chan time.Duration, 2)
	go func() {
		time.Sleep(2 * time.Second)
		readyAt <- readyNode(ctx, t, env, "waits-control-plane", map[string]string{"node-role.kubernetes.io/control-plane": ""}, out.start)
		time.Sleep(2 * time.Second)
		readyAt <- readyNode(ctx, t, env, "waits-worker", nil, out.start)
	}()
	err = lifecycle.Run(ctx, lc, lifecycle.WaitReady{Wait: time.Minute},
		lifecycle.StepFunc(func(context.Context, *lifecycle.Context) error { stepAt = time.Since(out.start); return nil }),
		lifecycle.ApplyWorkloads{Timeout: 15 * time.Second})
	took = time.Since(out.start)
	t.Logf("took %s:\n%s", took, strings.Join(out.all, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	cpAt, workerAt := <-readyAt, <-readyAt
	if stepAt >= cpAt {
		t.Errorf("the step after WaitReady ran at %s, after the control plane was Ready (%s): WaitReady waited", stepAt, cpAt)
	}
	if took < workerAt {
		t.Errorf("Run returned at %s, before the worker was Ready (%s)", took, workerAt)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	applied, ok := out.at[" • Applying workloads 🚀"]
	if !ok || applied < cpAt {
		t.Errorf("workloads applied at %s (found %v), want after the control plane was Ready at %s (lines %q)", applied, ok, cpAt, out.all)
	}
	ended := false
	for _, l := range out.all {
		ended = ended || strings.HasPrefix(l, " ✓ Waiting ≤ 1m0s for control-plane = Ready ⏳ (")
	}
	if !ended {
		t.Errorf("no ✓ line for the control plane's wait: %q", out.all)
	}
}

// readyNode registers a Node with labels and reports it Ready, as its
// kubelet would, and returns when, since start.
func readyNode(ctx context.Context, t *testing.T, env *testenv.Env, name string, labels map[string]string, start time.Time) time.Duration {
	n, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Error(err)
		return 0
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "KubeletReady"}}
	if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Error(err)
	}
	return time.Since(start)
}
