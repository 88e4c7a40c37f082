package check_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	kindlab "github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/testenv"
	"github.com/kindlab/kindlab/provision/workload"
)

// Two control planes (kube-apiserver + etcd + kube-controller-manager
// v1.31.14), each started once and shared: the all-features lab as written,
// and the same lab with every gate the checks depend on switched off and
// no authentication config.
type shared struct {
	once sync.Once
	env  *testenv.Env
	lab  *lab.Resolved
	// applyErrs are the workloads that did not apply, by name.
	applyErrs map[string]error
	err       error
}

var (
	onEnv, offEnv shared
)

// gatesOff are switched off in the "off" control plane.
var gatesOff = []string{
	"HonorPVReclaimPolicy",
	"ImageVolume",
	"MultiCIDRServiceAllocator",
	"ServiceAccountTokenNodeBinding",
	"ServiceTrafficDistribution",
	"AnonymousAuthConfigurableEndpoints",
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, s := range []*shared{&onEnv, &offEnv} {
		if s.env != nil {
			if err := s.env.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "stop testenv: %v\n", err)
				code = 1
			}
		}
	}
	os.Exit(code)
}

func allFeatures(t testing.TB) *lab.Resolved {
	t.Helper()
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("all-features", lab.ResolveOptions{KnownChecks: check.Names()})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// start brings up (once) a control plane for the lab and applies every
// workload without waiting (no nodes run the pods), one workload at a time
// so that one refused workload does not hide the others.
func start(t testing.TB, s *shared, off bool) (*testenv.Env, *lab.Resolved, map[string]error) {
	t.Helper()
	r := allFeatures(t)
	opts, err := testenv.FromLab(r)
	if err != nil {
		t.Fatal(err)
	}
	opts.ControllerManager = true
	if off {
		for _, g := range gatesOff {
			opts.FeatureGates[g] = false
		}
		opts.AuthenticationConfig = nil
	}
	testenv.Require(t, opts)
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		s.lab = r
		s.env, s.err = testenv.Start(ctx, opts)
		if s.err != nil {
			return
		}
		s.applyErrs = map[string]error{}
		for _, w := range r.Workloads {
			if err := workload.ApplyWith(ctx, s.env.Config, []lab.ResolvedWorkload{w}, workload.Options{NoWait: true, Images: r.Images}); err != nil {
				s.applyErrs[w.Name] = err
			}
		}
	})
	if s.err != nil {
		t.Fatalf("start control plane: %v", s.err)
	}
	return s.env, s.lab, s.applyErrs
}

func runChecks(t *testing.T, env *testenv.Env, r *lab.Resolved, names ...string) map[string]check.Result {
	t.Helper()
	out := map[string]check.Result{}
	for _, res := range runChecksInOrder(t, env, r, names...) {
		out[res.Name] = res
	}
	return out
}

// runChecksInOrder runs checks as Run does by default (concurrently) and
// fails the test unless results and progress come in the order asked.
func runChecksInOrder(t *testing.T, env *testenv.Env, r *lab.Resolved, names ...string) []check.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress []string
	start := time.Now()
	results := check.Run(ctx, check.Env{Config: env.Config, Lab: r, Progress: func(res check.Result) { progress = append(progress, res.Name) }}, names)
	var sum time.Duration
	for i, res := range results {
		t.Logf("%s: %s %s (%s)\n    %s", res.Name, res.Status, res.Reason, res.Duration, strings.Join(res.Details, "\n    "))
		sum += res.Duration
		// Checks run concurrently; results stay in the order asked.
		if res.Name != names[i] {
			t.Errorf("result %d is %s, want %s", i, res.Name, names[i])
		}
	}
	t.Logf("%d checks: %s wall, %s summed", len(results), time.Since(start).Round(time.Millisecond), sum)
	if len(results) != len(names) || strings.Join(progress, ",") != strings.Join(names, ",") {
		t.Errorf("%d results, progress %v, for checks %v", len(results), progress, names)
	}
	return results
}

// TestWorkloadsApply: every fixture applies for real, twice (server-side
// apply converges), and the readiness wait sees a claim bind.
func TestWorkloadsApply(t *testing.T) {
	env, r, errs := start(t, &onEnv, false)
	for name, err := range errs {
		t.Errorf("workload %s: %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var msgs []string
	if err := workload.ApplyLab(ctx, env.Config, r, workload.Options{NoWait: true, Progress: func(s string) { msgs = append(msgs, s) }}); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	// Manifests name images once, in the lab; the pods carry the pinned reference.
	pod, err := env.Client.CoreV1().Pods("kindlab-apparmor").Get(ctx, "apparmor-demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pod.Spec.Containers[0].Image, r.Images[0].Reference; got != want {
		t.Errorf("apparmor-demo runs %s, want the lab's %s", got, want)
	}
	// Without the lab's images a manifest's @image/ reference is an error, not a pull.
	if err := workload.ApplyWith(ctx, env.Config, r.Workloads, workload.Options{NoWait: true}); err == nil || !strings.Contains(err.Error(), `image "agnhost" comes from the lab's images, which were not given`) {
		t.Errorf("apply without images: %v", err)
	}
	if len(msgs) != len(r.Workloads) {
		t.Errorf("progress lines %q, want one per workload (%d)", msgs, len(r.Workloads))
	}
	for _, w := range r.Workloads {
		if w.Name != "pv-last-transition-time" {
			continue
		}
		// The claim is pre-bound to its volume: Apply waits until the PV
		// controller binds it.
		if err := workload.ApplyWith(ctx, env.Config, []lab.ResolvedWorkload{w}, workload.Options{Timeout: time.Minute, Images: r.Images}); err != nil {
			t.Errorf("apply and wait %s: %v", w.Name, err)
		}
	}
}

// TestWorkloadWaitTimesOut: a pod no node runs is reported, not waited on
// forever.
func TestWorkloadWaitTimesOut(t *testing.T) {
	env, r, _ := start(t, &onEnv, false)
	for _, w := range r.Workloads {
		if w.Name != "nftables" {
			continue
		}
		err := workload.ApplyWith(context.Background(), env.Config, []lab.ResolvedWorkload{w}, workload.Options{Timeout: 3 * time.Second, Images: r.Images})
		if err == nil || !strings.Contains(err.Error(), "Deployment kindlab-nftables/echo not ready") {
			t.Fatalf("apply with wait and no nodes: %v, want a not-ready timeout", err)
		}
	}
}

// TestChecksGatesOn: the API-only checks pass; checks with a node side
// pass their API side and are skipped (never passed) without nodes.
func TestChecksGatesOn(t *testing.T) {
	env, r, _ := start(t, &onEnv, false)
	res := runChecks(t, env, r, check.Names()...)
	want := map[string]check.Status{
		"pv-last-transition-time":    check.Pass,
		"node-bound-token":           check.Pass,
		"multi-service-cidr":         check.Pass,
		"anonymous-auth":             check.Pass,
		"apparmor":                   check.Skipped,
		"pv-reclaim-policy":          check.Skipped,
		"traffic-distribution":       check.Skipped,
		"image-volume":               check.Skipped,
		"allocated-resources-status": check.Skipped,
		"kube-proxy-health":          check.Skipped,
		"nftables":                   check.Skipped,
	}
	for name, st := range want {
		got := res[name]
		if got.Status != st {
			t.Errorf("%s: %s (%s), want %s", name, got.Status, got.Reason, st)
			continue
		}
		if st != check.Skipped {
			continue
		}
		apiSide := name != "kube-proxy-health" && name != "nftables"
		if apiSide != strings.HasPrefix(got.Reason, check.APISidePassed) {
			t.Errorf("%s skipped with %q: want the API side passed = %v", name, got.Reason, apiSide)
		}
	}
	// The multi-service-cidr check cleans up: running it again passes.
	if again := runChecks(t, env, r, "multi-service-cidr")["multi-service-cidr"]; again.Status != check.Pass {
		t.Errorf("multi-service-cidr second run: %s %s", again.Status, again.Reason)
	}
}

// TestChecksGatesOff: with its gate or config off, each check fails and
// says why.
func TestChecksGatesOff(t *testing.T) {
	env, r, applyErrs := start(t, &offEnv, true)
	// 1.31 with ImageVolume off drops the volume source silently: the
	// workload applies, the check must notice.
	for name, err := range applyErrs {
		t.Errorf("workload %s: %v", name, err)
	}
	want := map[string]string{
		"pv-reclaim-policy":    "HonorPVReclaimPolicy is off",
		"node-bound-token":     `"ServiceAccountTokenNodeBinding" feature-gate is disabled`,
		"multi-service-cidr":   "MultiCIDRServiceAllocator gate is off",
		"traffic-distribution": "the apiserver dropped the field",
		"image-volume":         "dropped the image volume source",
		"anonymous-auth":       "anonymous GET /api answered 403, want 401",
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	res := runChecks(t, env, r, names...)
	for name, reason := range want {
		got := res[name]
		if got.Status != check.Fail || !strings.Contains(got.Reason, reason) {
			t.Errorf("%s: %s %q, want fail containing %q", name, got.Status, got.Reason, reason)
		}
	}
}

func TestUnknownCheck(t *testing.T) {
	// Nothing listens there: an unknown name must fail before any request.
	res := check.Run(context.Background(), check.Env{Config: &rest.Config{Host: "http://127.0.0.1:1"}}, []string{"nope"})
	if len(res) != 1 || res[0].Status != check.Fail || !strings.Contains(res[0].Reason, `unknown check "nope"`) {
		t.Fatalf("got %+v, want one failed result naming the unknown check", res)
	}
}

func TestNamesMatchLabs(t *testing.T) {
	r := allFeatures(t)
	if strings.Join(r.Checks, ",") != strings.Join(check.Names(), ",") {
		t.Errorf("all-features checks %v, check.Names() %v: every check belongs to a lab", r.Checks, check.Names())
	}
}

// TestImageVolumeRegistryStep: the image-volume check fails while the
// artifact is not in the registry, and passes that step once kindlab pushed
// it (a real distribution registry on loopback).
func TestImageVolumeRegistryStep(t *testing.T) {
	env, r, _ := start(t, &onEnv, false)
	reg := registrytest.StartDistribution(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func() check.Result {
		return check.Run(ctx, check.Env{Config: env.Config, Lab: r, RegistryHost: reg.Addr}, []string{"image-volume"})[0]
	}
	if res := run(); res.Status != check.Fail || !strings.Contains(res.Reason, "was the artifact pushed?") {
		t.Fatalf("before the push: %s %q, want a failed registry step", res.Status, res.Reason)
	}
	port, err := strconv.Atoi(reg.Addr[strings.LastIndex(reg.Addr, ":")+1:])
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := artifact.PushLab(ctx, r.Artifacts, port, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := run()
	if res.Status != check.Skipped || !strings.HasPrefix(res.Reason, check.APISidePassed) {
		t.Fatalf("after the push: %s %q, want the API side to pass", res.Status, res.Reason)
	}
	if !strings.Contains(strings.Join(res.Details, "\n"), pushed[0].Digest) {
		t.Errorf("details %q do not name the pushed digest %s", res.Details, pushed[0].Digest)
	}
}

// TestLabsDeclareTheirImages: every built-in lab declares each image its
// workloads take by name, pinned by digest (no apiserver needed).
func TestLabsDeclareTheirImages(t *testing.T) {
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	for _, name := range c.Names() {
		r, err := c.Resolve(name, lab.ResolveOptions{KnownChecks: check.Names()})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range r.Workloads {
			objs, err := workload.Load(w)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if err := workload.ResolveImages(o, r.Images); err != nil {
					t.Errorf("lab %s, workload %s, %s %s: %v", name, w.Name, o.GetKind(), o.GetName(), err)
				}
			}
		}
	}
}

// TestCollidingChecksDoNotOverlap: three runs of multi-service-cidr, each
// filling the one Service range and adding the same second ServiceCIDR, all
// pass with room for three at once. Overlapping, one would see another's
// Services or second range, or lose its ServiceCIDR to another's cleanup.
func TestCollidingChecksDoNotOverlap(t *testing.T) {
	env, r, _ := start(t, &onEnv, false)
	const n = "multi-service-cidr"
	for i, got := range runChecksInOrder(t, env, r, n, n, n) {
		if got.Status != check.Pass {
			t.Errorf("%s run %d: %s %s", n, i+1, got.Status, got.Reason)
		}
	}
}

// TestChecksCancel: cancelling a run of every check returns with every check
// reported in order, none passed after the cancel, and leaves nothing behind
// (the changing checks pass again afterwards).
func TestChecksCancel(t *testing.T) {
	env, r, _ := start(t, &onEnv, false)
	names := check.Names()
	ctx, cancel := context.WithCancel(context.Background())
	var cancelled time.Time
	time.AfterFunc(500*time.Millisecond, func() { cancelled = time.Now(); cancel() })
	var progress []string
	// One at a time: the cancel must find checks not yet started, and the
	// checks are now fast enough that four at a time start them all
	// within the 500 ms.
	res := check.Run(ctx, check.Env{Config: env.Config, Lab: r, Parallelism: 1,
		Progress: func(res check.Result) { progress = append(progress, res.Name) }}, names)
	after := time.Since(cancelled)
	t.Logf("returned %s after the cancel", after.Round(time.Millisecond))
	// Cleanups (deleting Services, a ServiceCIDR, RBAC) still run, with
	// their own deadline; nothing else waits.
	if after > 20*time.Second {
		t.Errorf("Run returned %s after the cancel", after)
	}
	if strings.Join(progress, ",") != strings.Join(names, ",") || len(res) != len(names) {
		t.Fatalf("progress %v, %d results, want every check of %v", progress, len(res), names)
	}
	notStarted := 0
	for i, got := range res {
		t.Logf("%s: %s %s", got.Name, got.Status, got.Reason)
		if got.Name != names[i] {
			t.Errorf("result %d is %s, want %s", i, got.Name, names[i])
		}
		if strings.HasPrefix(got.Reason, "not started: context canceled") {
			notStarted++
		}
	}
	if notStarted == 0 {
		t.Errorf("every check started within 500ms: the cancel proved nothing")
	}
	again := runChecks(t, env, r, "multi-service-cidr", "anonymous-auth", "node-bound-token")
	for n, got := range again {
		if got.Status != check.Pass {
			t.Errorf("%s after a cancelled run: %s %s", n, got.Status, got.Reason)
		}
	}
}

// BenchmarkChecks runs the checks an apiserver alone can run, one at a time
// and then DefaultParallelism at a time, and reports the ratio of their wall
// times (sequential/concurrent; above 1 is faster).
func BenchmarkChecks(b *testing.B) {
	env, r, _ := start(b, &onEnv, false)
	var seq, par time.Duration
	for range b.N {
		for _, p := range []int{1, check.DefaultParallelism} {
			start := time.Now()
			res := check.Run(context.Background(), check.Env{Config: env.Config, Lab: r, Parallelism: p}, check.Names())
			took := time.Since(start)
			if check.AnyFailed(res) {
				b.Fatalf("parallelism %d: a check failed: %+v", p, res)
			}
			if p == 1 {
				seq += took
			} else {
				par += took
			}
		}
	}
	b.ReportMetric(seq.Seconds()/float64(b.N), "seq-s/op")
	b.ReportMetric(par.Seconds()/float64(b.N), "par-s/op")
	b.ReportMetric(float64(seq)/float64(par), "seq/par")
}

// TestProbeNodesLeftOut: the checks that pick nodes from the API's list
// (kube-proxy-health, traffic-distribution) never pick a probe Node, which
// node-bound-token creates while they run and no kubelet or kube-proxy
// serves; that is why they may run beside it (TestDeclaredCollisions).
// The probe Node here sorts first and is as schedulable as the worker, so
// only its label keeps it out: without the label it is picked.
func TestProbeNodesLeftOut(t *testing.T) {
	env, _, _ := start(t, &onEnv, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	nodes := cs.CoreV1().Nodes()
	// A ready, untainted Node in zone-a; the TaintNodesByCondition
	// admission plugin taints a new Node not-ready, so the taint goes once
	// it reports Ready, as a kubelet's node would.
	readyNode := func(name string, labels map[string]string) {
		t.Helper()
		labels[corev1.LabelTopologyZone] = "zone-a"
		n, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nodes.Delete(context.Background(), n.Name, metav1.DeleteOptions{}) })
		// kube-controller-manager's node lifecycle controller updates a
		// new Node meanwhile: each change is made on the latest version.
		update := func(change func(*corev1.Node) (*corev1.Node, error)) {
			t.Helper()
			if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				n, err := nodes.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				_, err = change(n)
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		update(func(n *corev1.Node) (*corev1.Node, error) {
			now := metav1.Now()
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
			return nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		})
		update(func(n *corev1.Node) (*corev1.Node, error) {
			n.Spec.Taints = nil
			return nodes.Update(ctx, n, metav1.UpdateOptions{})
		})
	}
	const probe, worker = "aa-probe-node", "ab-worker-node"
	readyNode(probe, map[string]string{check.ProbeLabel: "node-bound-token"})
	readyNode(worker, map[string]string{})

	node, zones, err := check.NodePicks(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if node != worker || zones["zone-a"] != worker {
		t.Errorf("kube-proxy-health picks %q, traffic-distribution picks %v: want %s, leaving out the probe node %s", node, zones, worker, probe)
	}

	// The same Node without the label is picked: the label alone kept it out.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := nodes.Get(ctx, probe, metav1.GetOptions{})
		if err != nil {
			return err
		}
		delete(n.Labels, check.ProbeLabel)
		_, err = nodes.Update(ctx, n, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	node, zones, err = check.NodePicks(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if node != probe || zones["zone-a"] != probe {
		t.Errorf("without its label the first node is not picked (%q, %v): the test proves nothing", node, zones)
	}
}

// A Service with no pod behind it (its Deployment deleted or scaled to 0
// by an attendee) fails the wait for its endpoints after 10 s, saying so
// and how to put the lab back, not after the whole timeout; one whose pod
// is only Pending is waited for (fresh-user review, session 13).
func TestWaitForEndpointsWithoutPods(t *testing.T) {
	env, _, _ := start(t, &onEnv, false)
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := "kindlab-no-pods"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	for _, app := range []string{"gone", "pending"} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: app}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": app}, Ports: []corev1.ServicePort{{Port: 80}}}}
		if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pending-0", Labels: map[string]string{"app": "pending"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The timeout's own error would end "(after 2m0s)".
	err = check.WaitReadyEndpoints(ctx, cs, ns, "gone", 2*time.Minute)
	if err == nil || err.Error() != "Service kindlab-no-pods/gone has had no pod for 10s: its workload was deleted or scaled to 0; `kindlab reset` puts the lab back" {
		t.Errorf("no pods: %v", err)
	}
	err = check.WaitReadyEndpoints(ctx, cs, ns, "pending", 15*time.Second)
	if err == nil || !strings.Contains(err.Error(), "has no ready endpoints (pods: pending-0: Pending") || !strings.Contains(err.Error(), "(after 15s)") {
		t.Errorf("a Pending pod: %v", err)
	}
}
