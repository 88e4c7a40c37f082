// Package testenv runs a real etcd and kube-apiserver v1.31.14 (and
// optionally kube-controller-manager) on loopback, started with a lab's
// feature gates, runtime config and authentication config, so tests can
// prove against the real API what a kind cluster would do.
//
// The binaries are built from source by fixtures/k8sbin/build.sh
// (`make k8s-bins`); see BinDir for where they are looked up.
package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kindlab/kindlab/provision/lab"
)

// Version is the Kubernetes version the binaries are built at.
const Version = "v1.31.14"

// Options are the control plane's settings.
type Options struct {
	FeatureGates  map[string]bool
	RuntimeConfig map[string]string
	// AuthenticationConfig, when not nil, is written to a file and passed
	// with --authentication-config (and --anonymous-auth is then left out:
	// the apiserver refuses both).
	AuthenticationConfig []byte
	// ServiceCIDR is --service-cluster-ip-range; default "10.96.0.0/24".
	ServiceCIDR string
	// ControllerManager also runs kube-controller-manager (PV binder,
	// endpointslice, service-account token controllers...).
	ControllerManager bool
	// Unchecked starts kube-apiserver even with settings Start otherwise
	// refuses up front because the apiserver would never get ready (see
	// checkOptions): the cross-check of the lab rules uses it to watch the
	// real apiserver fail, under a ctx with a short deadline.
	Unchecked bool
}

// DefaultServiceCIDR is used when Options.ServiceCIDR is empty.
const DefaultServiceCIDR = "10.96.0.0/24"

// FromLab returns the options a lab's control plane runs with: its gates,
// runtime config, authentication config and service subnet.
func FromLab(r *lab.Resolved) (Options, error) {
	if r == nil {
		return Options{}, errors.New("testenv: nil lab")
	}
	o := Options{ServiceCIDR: r.Networking.ServiceSubnet}
	if len(r.FeatureGates) > 0 {
		o.FeatureGates = make(map[string]bool, len(r.FeatureGates))
		for k, v := range r.FeatureGates {
			o.FeatureGates[k] = v
		}
	}
	if len(r.RuntimeConfig) > 0 {
		o.RuntimeConfig = make(map[string]string, len(r.RuntimeConfig))
		for k, v := range r.RuntimeConfig {
			o.RuntimeConfig[k] = v
		}
	}
	if r.AuthenticationConfig != nil {
		b, err := r.AuthenticationConfig.Read()
		if err != nil {
			return Options{}, fmt.Errorf("lab %s: authentication config: %w", r.Name, err)
		}
		o.AuthenticationConfig = b
	}
	return o, nil
}

// Env is a running control plane.
type Env struct {
	// Config is an admin client config (system:masters).
	Config *rest.Config
	Client kubernetes.Interface
	// URL is the apiserver, https://127.0.0.1:PORT.
	URL string
	// Dir holds the certs, kubeconfigs, etcd data and the logs
	// (etcd.log, apiserver.log, kcm.log).
	Dir string
	// Kubeconfig is the admin kubeconfig file in Dir, for kubectl.
	Kubeconfig string

	caPEM    []byte
	etcd     *process
	api      *process
	kcm      *process
	stopOnce sync.Once
	stopErr  error
}

// ErrNoBinaries is wrapped by the errors BinDir and Start return when the
// Kubernetes binaries have not been built.
var ErrNoBinaries = errors.New("kubernetes " + Version + " binaries not built")

const buildHint = "build them with `make k8s-bins` (fixtures/k8sbin/build.sh kube-apiserver kube-controller-manager kubeadm kube-proxy etcd)"

// BinDir returns the directory holding kube-apiserver and etcd:
// $KINDLAB_K8S_BIN if set, else $KINDLAB_CACHE/k8s/v1.31.14/bin (KINDLAB_CACHE
// defaults to $HOME/.cache/kindlab), where build.sh puts them.
func BinDir() (string, error) {
	dir := os.Getenv("KINDLAB_K8S_BIN")
	if dir == "" {
		cache := os.Getenv("KINDLAB_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("locate the kindlab cache: %w (set KINDLAB_CACHE or KINDLAB_K8S_BIN)", err)
			}
			cache = filepath.Join(home, ".cache", "kindlab")
		}
		dir = filepath.Join(cache, "k8s", Version, "bin")
	}
	for _, c := range []string{"kube-apiserver", "etcd"} {
		if err := checkBinary(dir, c); err != nil {
			return "", err
		}
	}
	return dir, nil
}

func checkBinary(dir, name string) error {
	st, err := os.Stat(filepath.Join(dir, name))
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%w: no executable %s in %s; %s", ErrNoBinaries, name, dir, buildHint)
	}
	return nil
}

// binaries checks that every binary opts needs is there.
func binaries(opts Options) (string, error) {
	dir, err := BinDir()
	if err != nil {
		return "", err
	}
	if opts.ControllerManager {
		if err := checkBinary(dir, "kube-controller-manager"); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// Require skips the test when the binaries opts needs are missing, or fails
// it when KINDLAB_REQUIRE_K8S=1 (CI sets it, so a missing build cannot pass
// as a skip). StartT calls it; call it yourself when sharing an Env between
// tests.
func Require(t testing.TB, opts Options) {
	t.Helper()
	if _, err := binaries(opts); err != nil {
		if os.Getenv("KINDLAB_REQUIRE_K8S") == "1" {
			t.Fatalf("KINDLAB_REQUIRE_K8S=1: %v", err)
		}
		t.Skip(err.Error())
	}
}

// Binary returns the path of another v1.31.14 binary of the same build
// (kubeadm, kube-proxy...), skipping the test when it is missing, or failing
// it when KINDLAB_REQUIRE_K8S=1.
func Binary(t testing.TB, name string) string {
	t.Helper()
	dir, err := BinDir()
	if err == nil {
		err = checkBinary(dir, name)
	}
	if err != nil {
		if os.Getenv("KINDLAB_REQUIRE_K8S") == "1" {
			t.Fatalf("KINDLAB_REQUIRE_K8S=1: %v", err)
		}
		t.Skip(err.Error())
	}
	return filepath.Join(dir, name)
}

// StartT starts an Env for one test and stops it when the test ends. With
// the binaries missing it skips the test (fails with KINDLAB_REQUIRE_K8S=1).
func StartT(t testing.TB, opts Options) *Env {
	t.Helper()
	Require(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	env, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop testenv: %v", err)
		}
	})
	return env
}

// startTimeout bounds Start even under a context without a deadline: an
// apiserver that neither gets ready nor exits must not hang a test run.
const startTimeout = 3 * time.Minute

// Start runs etcd, kube-apiserver and, if asked, kube-controller-manager in
// a new temp dir and returns once the apiserver's /readyz passes (and, with
// the controller manager, once it has created the default ServiceAccount).
// ctx bounds the wait only; the processes run until Stop.
func Start(ctx context.Context, opts Options) (*Env, error) {
	if err := checkOptions(opts); err != nil && !opts.Unchecked {
		return nil, err
	}
	bin, err := binaries(opts)
	if err != nil {
		return nil, err
	}
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = DefaultServiceCIDR
	}
	serviceIP, err := firstServiceIP(opts.ServiceCIDR)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	sweepStale()

	// Ports are picked by binding :0 and released before the binaries bind
	// them, so another process can take one in between: retry then.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		env, err := startOnce(ctx, bin, opts, serviceIP)
		if err == nil {
			return env, nil
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

var errPortTaken = errors.New("port taken")

const (
	dirPattern = "kindlab-testenv-*"
	// ownerFile holds the pid of the process that started the env, so a
	// later Start can remove the dir once that process is gone.
	ownerFile = "owner.pid"
)

// checkOptions catches settings the apiserver accepts but then never gets
// ready with, which would otherwise cost the whole start timeout.
func checkOptions(opts Options) error {
	if opts.FeatureGates["MultiCIDRServiceAllocator"] {
		// Measured with v1.31.14: the gate without the API leaves /readyz
		// failing forever (its default-ServiceCIDR controller cannot list
		// ServiceCIDRs). Any networking.k8s.io/v1beta1… or api/… key may
		// turn the API on, so only their absence is refused.
		on := false
		for k := range opts.RuntimeConfig {
			if strings.HasPrefix(k, "networking.k8s.io/v1beta1") || strings.HasPrefix(k, "api/") {
				on = true
			}
		}
		if !on {
			return errors.New("testenv: MultiCIDRServiceAllocator needs RuntimeConfig networking.k8s.io/v1beta1=true: without it kube-apiserver 1.31 never gets ready")
		}
	}
	return nil
}

func startOnce(ctx context.Context, bin string, opts Options, serviceIP net.IP) (_ *Env, retErr error) {
	dir, err := os.MkdirTemp("", dirPattern)
	if err != nil {
		return nil, fmt.Errorf("testenv: create temp dir: %w", err)
	}
	e := &Env{Dir: dir}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("testenv: %w", err)
	}
	defer func() {
		if retErr != nil {
			if err := e.Stop(); err != nil {
				retErr = fmt.Errorf("%w (and cleaning up: %v)", retErr, err)
			}
		}
	}()

	p, err := newPKI(dir, serviceIP)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	e.caPEM = p.caCertPEM
	ports, err := freePorts(3)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	e.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])

	e.etcd, err = startProcess("etcd", filepath.Join(bin, "etcd"), filepath.Join(dir, "etcd.log"), []string{
		"--name=testenv",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		// Every etcd defaults its peer port to 2380: set it, or two envs collide.
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=testenv=" + peerURL,
		// A throwaway store: fsync only slows the tests down.
		"--unsafe-no-fsync=true",
	})
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	plain := &http.Client{Timeout: 2 * time.Second}
	if err := waitFor(ctx, e.etcd, "etcd /health", func(ctx context.Context) error {
		return get(ctx, plain, etcdURL+"/health", http.StatusOK)
	}); err != nil {
		return nil, err
	}

	apiArgs := []string{
		"--advertise-address=127.0.0.1",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[2]),
		"--etcd-servers=" + etcdURL,
		"--cert-dir=" + dir,
		"--tls-cert-file=" + p.servingCertFile,
		"--tls-private-key-file=" + p.servingKeyFile,
		"--client-ca-file=" + p.caCertFile,
		"--allow-privileged=true",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--enable-bootstrap-token-auth=true",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPubFile,
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--service-cluster-ip-range=" + opts.ServiceCIDR,
		"--profiling=false",
	}
	if g := joinGates(opts.FeatureGates); g != "" {
		apiArgs = append(apiArgs, "--feature-gates="+g)
	}
	if rc := joinMap(opts.RuntimeConfig); rc != "" {
		apiArgs = append(apiArgs, "--runtime-config="+rc)
	}
	if opts.AuthenticationConfig != nil {
		f := filepath.Join(dir, "authentication-config.yaml")
		if err := os.WriteFile(f, opts.AuthenticationConfig, 0o600); err != nil {
			return nil, fmt.Errorf("testenv: write authentication config: %w", err)
		}
		apiArgs = append(apiArgs, "--authentication-config="+f)
	}
	e.api, err = startProcess("kube-apiserver", filepath.Join(bin, "kube-apiserver"), filepath.Join(dir, "apiserver.log"), apiArgs)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}

	// Inline data, not file paths, so copies of Config keep working
	// wherever they are written or sent.
	certPEM, err := os.ReadFile(p.adminCertFile)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	keyPEM, err := os.ReadFile(p.adminKeyFile)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	e.Config = &rest.Config{
		Host: e.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   p.caCertPEM,
			CertData: certPEM,
			KeyData:  keyPEM,
		},
		QPS:   100,
		Burst: 200,
	}
	e.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(e.Kubeconfig, e.URL, p.caCertFile, p.adminCertFile, p.adminKeyFile); err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	e.Client, err = kubernetes.NewForConfig(e.Config)
	if err != nil {
		return nil, fmt.Errorf("testenv: admin client: %w", err)
	}
	admin, err := rest.HTTPClientFor(e.Config)
	if err != nil {
		return nil, fmt.Errorf("testenv: admin http client: %w", err)
	}
	admin.Timeout = 5 * time.Second
	if err := waitFor(ctx, e.api, "kube-apiserver /readyz", func(ctx context.Context) error {
		return get(ctx, admin, e.URL+"/readyz", http.StatusOK)
	}); err != nil {
		return nil, err
	}

	if opts.ControllerManager {
		kubeconfig := filepath.Join(dir, "kcm.kubeconfig")
		if err := writeKubeconfig(kubeconfig, e.URL, p.caCertFile, p.kcmCertFile, p.kcmKeyFile); err != nil {
			return nil, fmt.Errorf("testenv: %w", err)
		}
		kcmArgs := []string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			// 0 turns the HTTPS health/metrics server off: every kcm
			// defaults to 10257, so two envs would collide.
			"--secure-port=0",
			"--controllers=*",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + p.saKeyFile,
			"--root-ca-file=" + p.caCertFile,
			"--cluster-signing-cert-file=" + p.caCertFile,
			"--cluster-signing-key-file=" + p.caKeyFile,
			"--service-cluster-ip-range=" + opts.ServiceCIDR,
			"--cluster-name=kindlab-testenv",
			"--leader-elect=false",
			"--profiling=false",
		}
		if g := joinGates(opts.FeatureGates); g != "" {
			kcmArgs = append(kcmArgs, "--feature-gates="+g)
		}
		e.kcm, err = startProcess("kube-controller-manager", filepath.Join(bin, "kube-controller-manager"), filepath.Join(dir, "kcm.log"), kcmArgs)
		if err != nil {
			return nil, fmt.Errorf("testenv: %w", err)
		}
		// The serviceaccount controller creating "default" proves the
		// controller manager is up, authorized and running controllers;
		// pods cannot be created before it exists anyway.
		if err := waitFor(ctx, e.kcm, "kube-controller-manager (default ServiceAccount)", func(ctx context.Context) error {
			_, err := e.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
			return err
		}); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// waitFor polls check until it succeeds, the process exits or ctx ends.
func waitFor(ctx context.Context, p *process, what string, check func(context.Context) error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if p.exited() {
			err := p.exitError()
			if strings.Contains(tail(p.logPath, 50), "address already in use") {
				return fmt.Errorf("testenv: %w: %w", errPortTaken, err)
			}
			return fmt.Errorf("testenv: waiting for %s: %w", what, err)
		}
		err := check(ctx)
		if err == nil {
			return nil
		}
		// A check cut short by the deadline says nothing about the
		// process: keep the last answer it gave (a failing /readyz
		// names its failing checks) for the error below.
		if last == nil || ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testenv: waiting for %s: %w (last: %v); last lines of %s:\n%s",
				what, ctx.Err(), last, p.logPath, tail(p.logPath, 20))
		case <-tick.C:
		}
	}
}

func get(ctx context.Context, c *http.Client, url string, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		// /readyz and /livez list their checks; name the failing ones.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var failed []string
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "[-]") {
				failed = append(failed, strings.TrimPrefix(l, "[-]"))
			}
		}
		if len(failed) > 0 {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.Join(failed, "; "))
		}
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// AnonymousClient returns an HTTP client that trusts the apiserver's serving
// certificate and sends no credentials.
func (e *Env) AnonymousClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.caPEM)
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		},
	}
}

// Stop kills the processes and removes Dir (kept when
// KINDLAB_TESTENV_KEEP=1, for reading the logs). Safe to call twice.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		var errs []error
		// Dependents first, so none logs a storm of errors about the others.
		for _, p := range []*process{e.kcm, e.api, e.etcd} {
			if err := p.kill(); err != nil {
				errs = append(errs, err)
			}
		}
		if e.Dir != "" && os.Getenv("KINDLAB_TESTENV_KEEP") != "1" {
			if err := os.RemoveAll(e.Dir); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", e.Dir, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			e.stopErr = fmt.Errorf("testenv: stop: %w", err)
		}
	})
	return e.stopErr
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	// Held open together so the n ports differ from each other.
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// firstServiceIP is the kubernetes Service's ClusterIP, which the serving
// certificate must name. For a dual-stack range it is the first family's.
func firstServiceIP(cidrs string) (net.IP, error) {
	first := strings.TrimSpace(strings.Split(cidrs, ",")[0])
	pfx, err := netip.ParsePrefix(first)
	if err != nil {
		return nil, fmt.Errorf("testenv: service CIDR %q: %w", cidrs, err)
	}
	return net.IP(pfx.Masked().Addr().Next().AsSlice()), nil
}

func joinGates(m map[string]bool) string {
	s := make(map[string]string, len(m))
	for k, v := range m {
		s[k] = strconv.FormatBool(v)
	}
	return joinMap(s)
}

func joinMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func writeKubeconfig(path, server, ca, cert, key string) error {
	const tmpl = `apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: user
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: testenv
  context: {cluster: testenv, user: user}
current-context: testenv
`
	if err := os.WriteFile(path, []byte(fmt.Sprintf(tmpl, server, ca, cert, key)), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// Lab writes files (paths relative to a new temporary directory, "/"
// separated, mapped to their content) and returns the lab named name,
// resolved from the file name+".yaml" among them with opts: a lab and its
// workloads' manifests as a test's literal text. Any error fails t.
func Lab(t testing.TB, name string, files map[string]string, opts lab.ResolveOptions) *lab.Resolved {
	t.Helper()
	dir := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := lab.NewCatalog()
	if _, err := c.AddFile(filepath.Join(dir, name+".yaml")); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve(name, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
