package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kindlab "github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/lab"
)

// Each configuration's Env is started once, by the first test that needs
// it, and stopped in TestMain: an apiserver start costs seconds.
type sharedEnv struct {
	once  sync.Once
	env   *Env
	err   error
	opts  Options
	start time.Duration
}

var (
	sharedMu sync.Mutex
	shared   = map[string]*sharedEnv{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	for name, s := range shared {
		if s.env != nil {
			if err := s.env.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "stop %s env: %v\n", name, err)
				code = 1
			}
		}
	}
	os.Exit(code)
}

func env(t *testing.T, name string, opts func(t *testing.T) Options) (*Env, Options) {
	t.Helper()
	sharedMu.Lock()
	s, ok := shared[name]
	if !ok {
		s = &sharedEnv{}
		shared[name] = s
	}
	sharedMu.Unlock()
	o := opts(t)
	Require(t, o)
	s.once.Do(func() {
		s.opts = o
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		begin := time.Now()
		s.env, s.err = Start(ctx, o)
		s.start = time.Since(begin)
		if s.err == nil {
			t.Logf("%s env started in %s (dir %s)", name, s.start.Round(time.Millisecond), s.env.Dir)
		}
	})
	if s.err != nil {
		t.Fatalf("start %s env: %v", name, s.err)
	}
	return s.env, s.opts
}

func allFeaturesOptions(t *testing.T) Options {
	t.Helper()
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("all-features", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := FromLab(r)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// allFeatures is the all-features lab's control plane, with the controller
// manager.
func allFeatures(t *testing.T) (*Env, Options) {
	return env(t, "all-features", func(t *testing.T) Options {
		o := allFeaturesOptions(t)
		o.ControllerManager = true
		return o
	})
}

// gateOff is the all-features lab with MultiCIDRServiceAllocator off and no
// authentication config: the runtime config still asks for
// networking.k8s.io/v1beta1, so only the gate differs for ServiceCIDR.
func gateOff(t *testing.T) (*Env, Options) {
	return env(t, "gate-off", func(t *testing.T) Options {
		o := allFeaturesOptions(t)
		o.FeatureGates["MultiCIDRServiceAllocator"] = false
		o.AuthenticationConfig = nil
		return o
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestFromLabAllFeatures(t *testing.T) {
	o := allFeaturesOptions(t)
	for _, g := range []string{"AnonymousAuthConfigurableEndpoints", "HonorPVReclaimPolicy", "ImageVolume",
		"MultiCIDRServiceAllocator", "ResourceHealthStatus", "ServiceAccountTokenNodeBinding", "ServiceTrafficDistribution"} {
		if !o.FeatureGates[g] {
			t.Errorf("FeatureGates[%s] = false, want true (gates: %v)", g, o.FeatureGates)
		}
	}
	if got := o.RuntimeConfig["networking.k8s.io/v1beta1"]; got != "true" {
		t.Errorf(`RuntimeConfig["networking.k8s.io/v1beta1"] = %q, want "true"`, got)
	}
	if !strings.Contains(string(o.AuthenticationConfig), "AuthenticationConfiguration") ||
		!strings.Contains(string(o.AuthenticationConfig), "/livez") {
		t.Errorf("AuthenticationConfig is not the lab's anonymous-endpoints config:\n%s", o.AuthenticationConfig)
	}
	if got, want := joinGates(map[string]bool{"B": false, "A": true}), "A=true,B=false"; got != want {
		t.Errorf("joinGates = %q, want %q", got, want)
	}
}

func TestBinDirMissingSaysHowToBuild(t *testing.T) {
	t.Setenv("KINDLAB_K8S_BIN", t.TempDir())
	_, err := BinDir()
	if !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("BinDir() error = %v, want ErrNoBinaries", err)
	}
	if !strings.Contains(err.Error(), "make k8s-bins") {
		t.Errorf("error does not say how to build: %v", err)
	}
	if _, err := Start(context.Background(), Options{}); !errors.Is(err, ErrNoBinaries) {
		t.Errorf("Start() error = %v, want ErrNoBinaries", err)
	}
}

func TestServerVersion(t *testing.T) {
	e, _ := allFeatures(t)
	v, err := e.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != Version {
		t.Errorf("apiserver reports %s, want %s", v.GitVersion, Version)
	}
}

func TestServiceCIDRServedWithGate(t *testing.T) {
	e, o := allFeatures(t)
	c := ctx(t)
	rl, err := e.Client.Discovery().ServerResourcesForGroupVersion("networking.k8s.io/v1beta1")
	if err != nil {
		t.Fatalf("networking.k8s.io/v1beta1 not served with MultiCIDRServiceAllocator on: %v", err)
	}
	for _, want := range []string{"servicecidrs", "ipaddresses"} {
		if !slices.ContainsFunc(rl.APIResources, func(r metav1.APIResource) bool { return r.Name == want }) {
			t.Errorf("networking.k8s.io/v1beta1 does not serve %s", want)
		}
	}
	// The apiserver turns --service-cluster-ip-range into the default
	// ServiceCIDR "kubernetes" shortly after it is ready.
	var cidrs []string
	err = poll(c, func() error {
		sc, err := e.Client.NetworkingV1beta1().ServiceCIDRs().Get(c, "kubernetes", metav1.GetOptions{})
		if err != nil {
			return err
		}
		cidrs = sc.Spec.CIDRs
		return nil
	})
	if err != nil {
		t.Fatalf("default ServiceCIDR: %v", err)
	}
	if !slices.Equal(cidrs, []string{o.ServiceCIDR}) && !(o.ServiceCIDR == "" && slices.Equal(cidrs, []string{DefaultServiceCIDR})) {
		t.Errorf("default ServiceCIDR has %v, want [%s]", cidrs, o.ServiceCIDR)
	}
	// With the new allocator every ClusterIP is an IPAddress object.
	svc, err := e.Client.CoreV1().Services("default").Create(c, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ipaddress-probe"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Client.CoreV1().Services("default").Delete(context.Background(), svc.Name, metav1.DeleteOptions{})
	})
	ip, err := e.Client.NetworkingV1beta1().IPAddresses().Get(c, svc.Spec.ClusterIP, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no IPAddress for ClusterIP %s: %v", svc.Spec.ClusterIP, err)
	}
	if ip.Spec.ParentRef == nil || ip.Spec.ParentRef.Name != svc.Name {
		t.Errorf("IPAddress %s parentRef = %+v, want Service %s", ip.Name, ip.Spec.ParentRef, svc.Name)
	}
}

// In 1.31 the gate does not decide whether the ServiceCIDR API is served:
// --runtime-config=networking.k8s.io/v1beta1=true does
// (pkg/registry/networking/rest/storage_settings.go). The gate switches the
// allocator: the default ServiceCIDR "kubernetes" and one IPAddress object
// per ClusterIP (pkg/controlplane/instance.go, pkg/registry/core/rest).
// A check for the feature must therefore look at those, not at discovery.
func TestMultiCIDRAllocatorOffWithoutGate(t *testing.T) {
	e, o := gateOff(t)
	c := ctx(t)
	if o.FeatureGates["MultiCIDRServiceAllocator"] || o.RuntimeConfig["networking.k8s.io/v1beta1"] != "true" {
		t.Fatalf("the gate-off env must have the gate off and networking.k8s.io/v1beta1 on: %v %v", o.FeatureGates, o.RuntimeConfig)
	}
	rl, err := e.Client.Discovery().ServerResourcesForGroupVersion("networking.k8s.io/v1beta1")
	if err != nil {
		t.Fatalf("networking.k8s.io/v1beta1 discovery: %v", err)
	}
	if !slices.ContainsFunc(rl.APIResources, func(r metav1.APIResource) bool { return r.Name == "servicecidrs" }) {
		t.Errorf("servicecidrs not served with the runtime config on and the gate off: 1.31 served it here before")
	}
	svc, err := e.Client.CoreV1().Services("default").Create(c, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ipaddress-probe"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Client.CoreV1().Services("default").Delete(context.Background(), svc.Name, metav1.DeleteOptions{})
	})
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatalf("Service got no ClusterIP: %q", svc.Spec.ClusterIP)
	}
	if _, err := e.Client.NetworkingV1beta1().IPAddresses().Get(c, svc.Spec.ClusterIP, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("IPAddress %s with the gate off: err = %v, want NotFound (the old bitmap allocator)", svc.Spec.ClusterIP, err)
	}
	// With the gate on the default ServiceCIDR exists before /readyz passes.
	if _, err := e.Client.NetworkingV1beta1().ServiceCIDRs().Get(c, "kubernetes", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("default ServiceCIDR with the gate off: err = %v, want NotFound", err)
	}
}

func status(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestAnonymousEndpointsWithAuthConfig(t *testing.T) {
	e, _ := allFeatures(t)
	anon := e.AnonymousClient()
	for path, want := range map[string]int{
		"/livez":   http.StatusOK,
		"/readyz":  http.StatusOK,
		"/healthz": http.StatusOK,
		// Not in the config's conditions: anonymous is not even
		// authenticated there, so 401 rather than RBAC's 403.
		"/api":     http.StatusUnauthorized,
		"/version": http.StatusUnauthorized,
	} {
		if got := status(t, anon, e.URL+path); got != want {
			t.Errorf("anonymous GET %s = %d, want %d", path, got, want)
		}
	}
}

func TestAnonymousWithoutAuthConfig(t *testing.T) {
	e, _ := gateOff(t)
	anon := e.AnonymousClient()
	// Without the config anonymous auth is on everywhere and RBAC decides:
	// the contrast to the 401 above is what the lab's config changes.
	for path, want := range map[string]int{"/livez": http.StatusOK, "/version": http.StatusOK, "/api": http.StatusForbidden} {
		if got := status(t, anon, e.URL+path); got != want {
			t.Errorf("anonymous GET %s = %d, want %d", path, got, want)
		}
	}
}

func TestNodeBoundToken(t *testing.T) {
	e, _ := allFeatures(t)
	c := ctx(t)
	node, err := e.Client.CoreV1().Nodes().Create(c, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "token-node"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Client.CoreV1().Nodes().Delete(context.Background(), node.Name, metav1.DeleteOptions{}) })
	sa, err := e.Client.CoreV1().ServiceAccounts("default").Create(c, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "token-probe"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Client.CoreV1().ServiceAccounts("default").Delete(context.Background(), sa.Name, metav1.DeleteOptions{})
	})
	tr, err := e.Client.CoreV1().ServiceAccounts("default").CreateToken(c, sa.Name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest bound to a Node: %v", err)
	}
	rev, err := e.Client.AuthenticationV1().TokenReviews().Create(c, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tr.Status.Token},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rev.Status.Authenticated {
		t.Fatalf("node-bound token not authenticated: %s", rev.Status.Error)
	}
	if got := rev.Status.User.Extra["authentication.kubernetes.io/node-name"]; !slices.Equal(got, []string{node.Name}) {
		t.Errorf("token's node-name extra = %v, want [%s] (user %+v)", got, node.Name, rev.Status.User)
	}
}

func TestControllerManagerRunsControllers(t *testing.T) {
	e, _ := allFeatures(t)
	c := ctx(t)
	svc, err := e.Client.CoreV1().Services("default").Create(c, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "slice-probe"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "slice-probe"},
			Ports:    []corev1.ServicePort{{Port: 80}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Client.CoreV1().Services("default").Delete(context.Background(), svc.Name, metav1.DeleteOptions{})
	})
	// Only the endpointslice controller in kube-controller-manager writes
	// a slice for a selector Service.
	err = poll(c, func() error {
		l, err := e.Client.DiscoveryV1().EndpointSlices("default").List(c, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc.Name})
		if err != nil {
			return err
		}
		if len(l.Items) == 0 {
			return errors.New("no EndpointSlice yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("endpointslice controller: %v; kcm log:\n%s", err, tail(filepath.Join(e.Dir, "kcm.log"), 20))
	}
}

func TestStartFailureReportsLog(t *testing.T) {
	o := Options{FeatureGates: map[string]bool{"NoSuchGate": true}}
	Require(t, o)
	_, err := Start(ctx(t), o)
	if err == nil {
		t.Fatal("Start with an unknown feature gate succeeded")
	}
	if !strings.Contains(err.Error(), "NoSuchGate") || !strings.Contains(err.Error(), "apiserver.log") {
		t.Errorf("error does not carry the apiserver's log: %v", err)
	}
}

func poll(c context.Context, f func() error) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-c.Done():
			return fmt.Errorf("%w (last: %v)", c.Err(), err)
		case <-tick.C:
		}
	}
}

func TestKubeconfigWorksWithKubectl(t *testing.T) {
	e, _ := allFeatures(t)
	bin, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(bin, "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Skipf("no kubectl in %s (fixtures/k8sbin/build.sh kubectl builds it)", bin)
	}
	out, err := exec.CommandContext(ctx(t), kubectl, "--kubeconfig", e.Kubeconfig, "get", "namespace", "kube-system", "-o", "name").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "namespace/kube-system" {
		t.Fatalf("kubectl with %s: %v: %s", e.Kubeconfig, err, out)
	}
}

// Not shared: this one stops its env.
func TestStopKillsProcessesAndRemovesDir(t *testing.T) {
	Require(t, Options{})
	e, err := Start(ctx(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	procs := []*process{e.etcd, e.api}
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if !p.exited() {
			t.Errorf("%s (pid %d) still runs after Stop", p.name, p.cmd.Process.Pid)
		}
	}
	if _, err := os.Stat(e.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stop left %s behind (stat: %v)", e.Dir, err)
	}
	if err := e.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if resp, err := e.AnonymousClient().Get(e.URL + "/livez"); err == nil {
		resp.Body.Close()
		t.Errorf("apiserver still answers after Stop: %s", resp.Status)
	}
}

func TestStartRefusesMultiCIDRGateWithoutAPI(t *testing.T) {
	_, err := Start(ctx(t), Options{FeatureGates: map[string]bool{"MultiCIDRServiceAllocator": true}})
	if err == nil || !strings.Contains(err.Error(), "networking.k8s.io/v1beta1=true") {
		t.Fatalf("Start() error = %v, want one naming the missing runtime config", err)
	}
}

func TestSweepRemovesDirsOfDeadOwners(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the sweep needs Linux: it is a no-op elsewhere")
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	for name, pid := range map[string]int{"kindlab-testenv-dead": dead.Process.Pid, "kindlab-testenv-live": os.Getpid()} {
		if err := os.Mkdir(filepath.Join(tmp, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, name, ownerFile), []byte(fmt.Sprint(pid)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sweepStale()
	if _, err := os.Stat(filepath.Join(tmp, "kindlab-testenv-dead")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir of a dead owner survived the sweep (stat: %v)", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "kindlab-testenv-live")); err != nil {
		t.Errorf("dir of a live owner was swept: %v", err)
	}
}

// TestWaitForKeepsLastAnswer: when the deadline cuts a readiness request
// short, the error names what the server last answered (its failing
// checks), not only the cancelled request. CI met exactly this: a loaded
// apiserver took longer than the time left to answer the last /readyz.
func TestWaitForKeepsLastAnswer(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "[+]ping ok\n[-]informer-sync failed: reason withheld\nreadyz check failed\n")
			return
		}
		<-r.Context().Done() // a server too slow to answer before the deadline
	}))
	defer srv.Close()
	log := filepath.Join(t.TempDir(), "x.log")
	if err := os.WriteFile(log, []byte("a log line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &process{name: "x", logPath: log, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := waitFor(ctx, p, "x /readyz", func(ctx context.Context) error {
		return get(ctx, srv.Client(), srv.URL+"/readyz", http.StatusOK)
	})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want a deadline error, got %v", err)
	}
	if !strings.Contains(err.Error(), "informer-sync failed: reason withheld") {
		t.Errorf("the error lost the server's last answer: %v", err)
	}
	if calls.Load() < 3 {
		t.Errorf("the slow request was never made (%d calls)", calls.Load())
	}
}
