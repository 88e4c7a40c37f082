package workload_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/testenv"
	"github.com/kindlab/kindlab/provision/workload"
)

// podWorkload is a namespace of its own (with the "default" account the
// serviceaccount controller would make) and, unless pod is "", one Pod.
func podWorkload(ns, pod string) string {
	s := `apiVersion: v1
kind: Namespace
metadata:
  name: ` + ns + `
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: ` + ns + `
`
	if pod == "" {
		return s
	}
	return s + `---
apiVersion: v1
kind: Pod
metadata:
  name: ` + pod + `
  namespace: ` + ns + `
spec:
  automountServiceAccountToken: false
  containers:
  - name: c
    image: registry.k8s.io/pause:3.10
`
}

// applyLab is a lab of three workloads, in this order: "slow" (a pod no
// kubelet runs: never ready), "broken" (a pod the test reports Failed, as
// a kubelet would) and "quick" (nothing to wait for).
func applyLab(t *testing.T) *lab.Resolved {
	t.Helper()
	return testenv.Lab(t, "apply-test", map[string]string{
		"slow/manifests.yaml":   podWorkload("kindlab-apply-slow", "never"),
		"broken/manifests.yaml": podWorkload("kindlab-apply-broken", "crash"),
		"quick/manifests.yaml":  podWorkload("kindlab-apply-quick", ""),
		"apply-test.yaml": `apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: apply-test
spec:
  nodeImage: kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b
  nodes: [{role: control-plane}]
  workloads:
  - {name: slow, path: slow}
  - {name: broken, path: broken}
  - {name: quick, path: quick}
`,
	}, lab.ResolveOptions{})
}

// TestApplyWaitsConcurrently, on a real kube-apiserver: each workload's
// Ready comes once, as soon as its own wait ends (a failed pod at once,
// not after the slow workload's timeout), and the error returned names
// every workload that failed, not only the first in the lab's order (a
// failed pod behind a slow workload must not be reported as the slow
// one's timeout alone).
func TestApplyWaitsConcurrently(t *testing.T) {
	r := applyLab(t)
	env := testenv.StartT(t, testenv.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The kubelet's part for "broken": its pod exits with an error.
	go func() {
		pods := env.Client.CoreV1().Pods("kindlab-apply-broken")
		for ctx.Err() == nil {
			p, err := pods.Get(ctx, "crash", metav1.GetOptions{})
			if err == nil {
				p.Status.Phase, p.Status.Reason, p.Status.Message = corev1.PodFailed, "Error", "exit code 3"
				if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err == nil {
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	const timeout = 6 * time.Second
	type outcome struct {
		err error
		at  time.Duration
	}
	var mu sync.Mutex
	ready := map[string][]outcome{}
	began := time.Now()
	err := workload.ApplyLab(ctx, env.Config, r, workload.Options{Timeout: timeout, Ready: func(name string, err error) {
		mu.Lock()
		defer mu.Unlock()
		ready[name] = append(ready[name], outcome{err, time.Since(began)})
	}})
	mu.Lock()
	defer mu.Unlock()
	for _, name := range []string{"slow", "broken", "quick"} {
		if len(ready[name]) != 1 {
			t.Fatalf("Ready for %s called %d times, want once: %+v", name, len(ready[name]), ready)
		}
	}
	if o := ready["quick"][0]; o.err != nil || o.at >= timeout {
		t.Errorf("quick: Ready(%v) at %s, want nil before the timeout", o.err, o.at)
	}
	if o := ready["broken"][0]; o.err == nil || !strings.Contains(o.err.Error(), "pod failed: Error exit code 3") || o.at >= timeout {
		t.Errorf("broken: Ready(%v) at %s, want its pod's failure before the %s timeout", o.err, o.at, timeout)
	}
	if o := ready["slow"][0]; o.err == nil || !strings.Contains(o.err.Error(), "Pod kindlab-apply-slow/never not ready") {
		t.Errorf("slow: Ready(%v), want a not-ready timeout", o.err)
	}
	if err == nil {
		t.Fatal("ApplyLab succeeded with a failed and a never-ready workload")
	}
	for _, want := range []string{"Pod kindlab-apply-slow/never not ready", "Pod kindlab-apply-broken/crash: pod failed: Error exit code 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ApplyLab's error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("ApplyLab's error is not one line: %q", err)
	}
	// Every workload's namespace was made before the first workload's
	// pod (Helm's order), so their service accounts come together. The
	// apiserver's resourceVersion is etcd's revision here: one etcd, so
	// larger is later.
	last, err := env.Client.CoreV1().Namespaces().Get(ctx, "kindlab-apply-quick", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := env.Client.CoreV1().Pods("kindlab-apply-slow").Get(ctx, "never", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsRV, _ := strconv.ParseInt(last.ResourceVersion, 10, 64)
	podRV, _ := strconv.ParseInt(first.ResourceVersion, 10, 64)
	if nsRV == 0 || podRV == 0 || nsRV > podRV {
		t.Errorf("the last workload's namespace (resourceVersion %s) was made after the first workload's pod (%s)", last.ResourceVersion, first.ResourceVersion)
	}
}
