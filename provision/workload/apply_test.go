package workload_test

import (
	"context"
	"errors"
	"fmt"
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

// labYAML is a one-node lab file named name whose spec.workloads is the
// YAML list given.
func labYAML(name, workloads string) string {
	return `apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: ` + name + `
spec:
  nodeImage: kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b
  nodes: [{role: control-plane}]
  workloads:
` + workloads
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
		"apply-test.yaml":       labYAML("apply-test", "  - {name: slow, path: slow}\n  - {name: broken, path: broken}\n  - {name: quick, path: quick}\n"),
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

// TestApplyWorkloadsAtOnce, on a real kube-apiserver: the workloads'
// objects are applied concurrently, so a workload whose pod waits for its
// namespace's service account (the apiserver refuses the pod until the
// serviceaccount controller, absent here, has made it) does not hold up
// the next workload's apply: only once the next workload's ConfigMap
// exists does this test make the account. One after another, the first
// workload would wait out saWait and fail. And a workload whose apply
// fails ends the others' waits: ApplyLab returns that apply's error, not
// a pod's timeout minutes later.
func TestApplyWorkloadsAtOnce(t *testing.T) {
	configMap := func(ns string) string {
		return `apiVersion: v1
kind: Namespace
metadata:
  name: ` + ns + `
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: marker
  namespace: ` + ns + `
data: {k: v}
`
	}
	withoutAccount := `apiVersion: v1
kind: Namespace
metadata:
  name: kindlab-atonce-first
---
apiVersion: v1
kind: Pod
metadata:
  name: first
  namespace: kindlab-atonce-first
  annotations: {kindlab.dev/wait: "false"}
spec:
  automountServiceAccountToken: false
  containers:
  - name: c
    image: registry.k8s.io/pause:3.10
`
	badPort := `apiVersion: v1
kind: Service
metadata:
  name: bad
  namespace: kindlab-atonce-next
spec:
  ports: [{port: 70000}]
`
	env := testenv.StartT(t, testenv.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	r := testenv.Lab(t, "atonce", map[string]string{
		"first/manifests.yaml": withoutAccount,
		"next/manifests.yaml":  configMap("kindlab-atonce-next"),
		"atonce.yaml":          labYAML("atonce", "  - {name: first, path: first}\n  - {name: next, path: next}\n"),
	}, lab.ResolveOptions{})
	go func() {
		for ctx.Err() == nil {
			if _, err := env.Client.CoreV1().ConfigMaps("kindlab-atonce-next").Get(ctx, "marker", metav1.GetOptions{}); err == nil {
				sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "kindlab-atonce-first"}}
				if _, err := env.Client.CoreV1().ServiceAccounts("kindlab-atonce-first").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
					t.Errorf("create the service account: %v", err)
				}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	if err := workload.ApplyLab(ctx, env.Config, r, workload.Options{}); err != nil {
		t.Fatalf("the first workload's pod waited for the second workload's apply: %v", err)
	}

	// A failed apply ends the wait for a pod no kubelet will run.
	r = testenv.Lab(t, "atonce", map[string]string{
		"slow/manifests.yaml": podWorkload("kindlab-atonce-slow", "never"),
		"next/manifests.yaml": configMap("kindlab-atonce-next") + "---\n" + badPort,
		"atonce.yaml":         labYAML("atonce", "  - {name: slow, path: slow}\n  - {name: next, path: next}\n"),
	}, lab.ResolveOptions{})
	var readyCalls []string
	var mu sync.Mutex
	err := workload.ApplyLab(ctx, env.Config, r, workload.Options{Timeout: 5 * time.Minute, Ready: func(name string, err error) {
		mu.Lock()
		defer mu.Unlock()
		readyCalls = append(readyCalls, name)
	}})
	if err == nil || !strings.Contains(err.Error(), "workload next: apply Service kindlab-atonce-next/bad") || strings.Contains(err.Error(), "not ready") {
		t.Errorf("ApplyLab: %v; want the Service's refusal alone", err)
	}
	// The slow pod's wait was cancelled (ApplyLab returned within the
	// test's 2 minutes, not after the 5-minute timeout), and no workload
	// is reported ready after a failed apply: no check starts.
	mu.Lock()
	defer mu.Unlock()
	if len(readyCalls) != 0 {
		t.Errorf("Ready called for %v after a failed apply", readyCalls)
	}
}

// TestClaimWaitsForItsVolume, on a real kube-apiserver with the test in
// the PV controller's part: a claim pre-bound to a volume of its workload
// is applied only once the volume has left the apiserver's initial Pending
// phase, so that the controller's binding does not race its own first
// update of the volume (a conflict that cost up to its 15 s resync).
func TestClaimWaitsForItsVolume(t *testing.T) {
	env := testenv.StartT(t, testenv.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := testenv.Lab(t, "prebound", map[string]string{
		"vol/manifests.yaml": `apiVersion: v1
kind: Namespace
metadata:
  name: kindlab-prebound
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: kindlab-prebound
spec:
  storageClassName: kindlab-manual
  capacity: {storage: 1Mi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /tmp/kindlab-prebound}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: kindlab-prebound
spec:
  storageClassName: kindlab-manual
  volumeName: kindlab-prebound
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Mi}}
`,
		"prebound.yaml": labYAML("prebound", "  - {name: vol, path: vol}\n"),
	}, lab.ResolveOptions{})
	pvs := env.Client.CoreV1().PersistentVolumes()
	claims := env.Client.CoreV1().PersistentVolumeClaims("kindlab-prebound")
	controller := make(chan error, 1)
	go func() {
		controller <- func() error {
			for {
				pv, err := pvs.Get(ctx, "kindlab-prebound", metav1.GetOptions{})
				if err == nil {
					if pv.Status.Phase != corev1.VolumePending {
						return fmt.Errorf("a new volume is %q, want the apiserver's Pending", pv.Status.Phase)
					}
					break
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				time.Sleep(50 * time.Millisecond)
			}
			// Slower than the apply's next call: the claim must still wait.
			time.Sleep(time.Second)
			if _, err := claims.Get(ctx, "data", metav1.GetOptions{}); err == nil {
				return errors.New("the claim was applied while its volume was Pending")
			}
			pv, err := pvs.Get(ctx, "kindlab-prebound", metav1.GetOptions{})
			if err != nil {
				return err
			}
			pv.Status.Phase = corev1.VolumeAvailable
			if _, err := pvs.UpdateStatus(ctx, pv, metav1.UpdateOptions{}); err != nil {
				return err
			}
			for {
				c, err := claims.Get(ctx, "data", metav1.GetOptions{})
				if err == nil {
					c.Status.Phase = corev1.ClaimBound
					_, err = claims.UpdateStatus(ctx, c, metav1.UpdateOptions{})
					return err
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}()
	if err := workload.ApplyLab(ctx, env.Config, r, workload.Options{Timeout: time.Minute}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if err := <-controller; err != nil {
		t.Fatal(err)
	}
}
