package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kindlab/kindlab/cmd/kindlab/app"
	"github.com/kindlab/kindlab/provision/bundle"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/state"
)

// Credential shapes that must never appear unredacted anywhere in a bundle.
var (
	e2ePrivateKey = regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----(\s|\\n)*[A-Za-z0-9+/]{16}`)
	e2eJWT        = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.`)
)

// e2eBundleCreate runs `kindlab bundle create` against the running lab whose
// cluster is name (brought up by `kindlab up` in this test's isolate()d
// state), and checks the bundle: the pins are the cluster's, the kind config
// and the last check results are there, kind's logs and the lab's objects
// are there, and no credential of the cluster is: neither a Secret and a
// token planted in the lab's namespace, nor the kubeconfig's client key,
// the control plane's private keys or kind's bootstrap token. It returns the
// bundle's path (in dir).
func e2eBundleCreate(t *testing.T, name, dir string) string {
	t.Helper()
	store, err := state.Default()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.Load(name)
	if err != nil {
		t.Fatalf("bundle create: %v", err)
	}
	secrets := e2ePlantSecrets(t, name)
	secrets = append(secrets, e2eClusterCredentials(t, name)...)

	out := filepath.Join(dir, name+"-repro.tar.gz")
	start := time.Now()
	code, stdout, errOut := run(t, "bundle", "create", "--name", name, "-o", out)
	took := time.Since(start)
	if code != 0 || strings.TrimSpace(stdout) != out {
		t.Fatalf("bundle create: exit %d, stdout %q\n%s", code, stdout, errOut)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bundle create took %s, %d bytes\n%s", took.Round(100*time.Millisecond), st.Size(), errOut)

	b, err := bundle.Open(out)
	if err != nil {
		t.Fatalf("bundle create wrote a bundle Open refuses: %v", err)
	}
	m := b.Manifest
	for _, p := range m.Problems {
		t.Logf("bundle problem: %s", p)
	}
	pins := m.Pins
	if pins.NodeImage != rec.NodeImage || !strings.HasPrefix(pins.NodeImageID, "sha256:") {
		t.Errorf("node image pin %q (id %q), the cluster runs %q", pins.NodeImage, pins.NodeImageID, rec.NodeImage)
	}
	if pins.Kind != bundle.KindVersion() || pins.Kind != "v0.31.0" || pins.Kindlab != app.Version || pins.Kubernetes != "v1.31.14" {
		t.Errorf("version pins: kind %q, kindlab %q, kubernetes %q", pins.Kind, pins.Kindlab, pins.Kubernetes)
	}
	for n, ref := range rec.ImageOverrides {
		if m.Run.ImageOverrides[n] != ref || !slicesContain(pins.Images, n, ref) {
			t.Errorf("image override %s=%s not pinned: run %v, images %v", n, ref, m.Run.ImageOverrides, pins.Images)
		}
	}
	for _, a := range pins.Artifacts {
		if !strings.HasPrefix(a.Digest, "sha256:") || a.RegistryDigest != a.Digest {
			t.Errorf("artifact %s: built %q, registry has %q", a.Name, a.Digest, a.RegistryDigest)
		}
	}
	if rec.Registry && m.Run.RegistryPort != rec.RegistryPort {
		t.Errorf("registry port %d, the cluster uses %d", m.Run.RegistryPort, rec.RegistryPort)
	}
	if kc, _ := b.File(bundle.KindConfigFile); !strings.Contains(string(kc), "kind: Cluster") || !strings.Contains(string(kc), "image: "+rec.NodeImage) {
		t.Errorf("kind config:\n%s", kc)
	}
	// all-features runs kindlab's CRI shim: the bundle says so in its pins
	// and, node by node, in host.json (the unit active, the kubelet on its
	// socket), so a replay can be seen to be the same lab.
	if pins.CRIShim != "kindlab-cri-shim.service: kubelet -> unix:///run/kindlab-cri/cri.sock -> unix:///run/containerd/containerd.sock" {
		t.Errorf("cri-shim pin %q", pins.CRIShim)
	}
	var host bundle.Host
	if raw, _ := b.File(bundle.HostFile); json.Unmarshal(raw, &host) != nil || len(host.Nodes) == 0 {
		t.Errorf("host.json: %s", raw)
	}
	for _, n := range host.Nodes {
		if n.CRIShim != "active" || n.RuntimeEndpoint != "unix:///run/kindlab-cri/cri.sock" {
			t.Errorf("host.json node %s: CRI shim %q, kubelet runtime endpoint %q", n.Name, n.CRIShim, n.RuntimeEndpoint)
		}
	}
	recorded, err := b.RecordedChecks()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range recorded {
		names = append(names, c.Name)
	}
	if !reflect.DeepEqual(names, rec.Checks) || m.ChecksSavedAt == nil {
		t.Errorf("recorded checks %v (saved %v), the lab's checks are %v", names, m.ChecksSavedAt, rec.Checks)
	}

	files := map[string]int{}
	if err := bundle.Walk(out, func(file string, data []byte) error {
		files[file] = len(data)
		for _, s := range secrets {
			if strings.Contains(string(data), s) {
				t.Errorf("%s leaks a credential (%.16s…)", file, s)
			}
		}
		if loc := e2ePrivateKey.FindIndex(data); loc != nil {
			t.Errorf("%s holds a private key: %.60q", file, data[loc[0]:])
		}
		if loc := e2eJWT.FindIndex(data); loc != nil {
			t.Errorf("%s holds a JWT: %.40q", file, data[loc[0]:])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cp := name + "-control-plane"
	want := []string{"logs/kind-version.txt", "logs/docker-info.txt", "logs/" + cp + "/kubelet.log",
		"logs/" + cp + "/containerd.log", "logs/" + cp + "/journal.log", "logs/" + cp + "/inspect.json",
		"host.json", "plan.json", bundle.ChecksFile}
	for _, w := range m.Lab.Files {
		want = append(want, w)
	}
	for _, f := range want {
		if files[f] == 0 {
			t.Errorf("bundle lacks %s (or it is empty)", f)
		}
	}
	objects := 0
	for f := range files {
		if strings.HasPrefix(f, "objects/workloads/") {
			objects++
		}
	}
	if objects == 0 {
		t.Error("bundle holds no workload objects")
	}
	t.Logf("bundle: %d files, %d redactions", len(files), len(m.Redactions))
	return out
}

func slicesContain(list []lab.Image, name, ref string) bool {
	for _, x := range list {
		if x.Name == name && x.Reference == ref {
			return true
		}
	}
	return false
}

func e2eClient(t testing.TB, name string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(),
		&clientcmd.ConfigOverrides{CurrentContext: "kind-" + name}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// e2ePlantSecrets puts a Secret and a service-account token into the first
// namespace of the lab, where the bundle collects objects, and returns their
// values.
func e2ePlantSecrets(t *testing.T, name string) []string {
	t.Helper()
	cs := e2eClient(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var labNS []string
	for _, n := range nss.Items {
		if strings.HasPrefix(n.Name, "kindlab-") {
			labNS = append(labNS, n.Name)
		}
	}
	if len(labNS) == 0 {
		t.Fatal("the lab has no kindlab-* namespace to plant a Secret in")
	}
	sort.Strings(labNS)
	ns := labNS[0]
	value := "e2e-bundle-" + strings.ReplaceAll(time.Now().Format("150405.000000000"), ".", "")
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-bundle-secret"},
		StringData: map[string]string{"password": value},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The token is also put where a careless user would: a ConfigMap.
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-bundle-token"},
		Data:       map[string]string{"token": tr.Status.Token},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return []string{value, base64.StdEncoding.EncodeToString([]byte(value)), tr.Status.Token}
}

// e2eClusterCredentials returns the credentials a kind cluster holds
// anyway: the kubeconfig's client key, the control plane's private keys
// (each base64 line of them) and kind's bootstrap token.
func e2eClusterCredentials(t *testing.T, name string) []string {
	t.Helper()
	cfg, err := clientcmd.NewDefaultClientConfigLoadingRules().Load()
	if err != nil {
		t.Fatal(err)
	}
	auth := cfg.AuthInfos["kind-"+name]
	if auth == nil || len(auth.ClientKeyData) == 0 {
		t.Fatalf("kubeconfig has no client key for kind-%s", name)
	}
	out := []string{base64.StdEncoding.EncodeToString(auth.ClientKeyData), "abcdef.0123456789abcdef"}
	keys := []string{string(auth.ClientKeyData)}
	for _, f := range []string{"ca.key", "sa.key", "apiserver.key", "front-proxy-ca.key", "etcd/ca.key"} {
		b, err := exec.Command("docker", "exec", name+"-control-plane", "cat", "/etc/kubernetes/pki/"+f).Output()
		if err != nil {
			t.Fatalf("read %s on the control plane: %v", f, err)
		}
		keys = append(keys, string(b))
	}
	for _, k := range keys {
		for _, l := range strings.Split(k, "\n") {
			if l != "" && !strings.HasPrefix(l, "-----") {
				out = append(out, l)
			}
		}
	}
	return out
}

// e2eBundleReplay replays a bundle made by e2eBundleCreate under another
// cluster name (the original must be down by then, so two clusters never
// share this machine), checks that the replayed lab has the recorded pins
// and check results, then takes it down and checks nothing of it is left.
//
// The replay pulls the lab's workload images from the shared registry (the
// offline agnhost lives there), so the original lab must go down with
// `down --keep-registry`; for the same reason this takes the replay down
// with --keep-registry, and the caller removes the registry at the very end
// (`kindlab registry down --delete-data --force`) and asserts it is gone.
func e2eBundleReplay(t *testing.T, path, img string) {
	t.Helper()
	b, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	name := b.Manifest.Cluster + "-replay"
	t.Cleanup(func() { run(t, "down", "--name", name, "--keep-registry") })

	// Without --yes and without a terminal to ask on, replay lists what the
	// bundle would run and refuses: exit 2, no cluster, no state.
	code, _, errOut := run(t, "bundle", "replay", path, "--name", name)
	if code != 2 || !strings.Contains(errOut, "pass --yes to replay it") ||
		!strings.Contains(errOut, "images its workloads run:") {
		t.Fatalf("replay without --yes: exit %d, stderr %q", code, errOut)
	}
	if st, err := state.Default(); err != nil {
		t.Fatal(err)
	} else if _, err := os.Stat(st.ClusterDir(name)); !os.IsNotExist(err) {
		t.Fatalf("an unconfirmed replay left state: %v", err)
	}
	if out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=io.x-k8s.kind.cluster="+name).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("an unconfirmed replay created nodes of %s", name)
	}

	start := time.Now()
	code, out, errOut := run(t, "bundle", "replay", path, "--yes", "--name", name, "-o", "json")
	t.Logf("bundle replay took %s\n%s", time.Since(start).Round(time.Second), errOut)
	// The original lab went down with --keep-registry: the replay finds the
	// shared registry running and says so, not that it started one.
	if !regexp.MustCompile(`✓ Local registry on 127\.0\.0\.1:\d+ already running`).MatchString(errOut) || strings.Contains(errOut, "✓ Starting local registry") {
		t.Errorf("replay's progress does not say the registry was already running:\n%s", errOut)
	}
	var res bundle.ReplayResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("replay exit %d, output %q: %v", code, out, err)
	}
	if res.Cluster != name || res.Context != "kind-"+name {
		t.Errorf("replayed as cluster %q, context %q, want %s", res.Cluster, res.Context, name)
	}
	for _, p := range res.Pins {
		if !p.Same {
			t.Errorf("pin %s: recorded %q, replayed %q", p.Name, p.Recorded, p.Replayed)
		}
		if p.Name == "node-image" && p.Replayed != img {
			t.Errorf("replayed on node image %q, want %q", p.Replayed, img)
		}
	}
	recorded, err := b.RecordedChecks()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Checks) != len(recorded) || len(recorded) == 0 {
		t.Errorf("replay compared %d checks, the bundle recorded %d", len(res.Checks), len(recorded))
	}
	for _, c := range res.Checks {
		t.Logf("replay: check %-28s recorded %-11s replayed %-11s %s", c.Name, c.Recorded, c.Replayed, c.ReplayedReason)
		if !c.Same {
			t.Errorf("check %s: recorded %s (%s), replayed %s (%s)", c.Name, c.Recorded, c.RecordedReason, c.Replayed, c.ReplayedReason)
		}
	}
	if !res.Same || !res.PinsSame || code != 0 {
		t.Errorf("replay: exit %d, same checks %t, same pins %t", code, res.Same, res.PinsSame)
	}
	store, err := state.Default()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.Load(name)
	if err != nil || rec.Lab != b.Manifest.Lab.Name || rec.NodeImage != img {
		t.Errorf("replayed cluster's record %+v (%v)", rec, err)
	}

	code, _, errOut = run(t, "down", "--name", name, "--keep-registry")
	if code != 0 {
		t.Fatalf("down of the replay: exit %d: %s", code, errOut)
	}
	left, _ := exec.Command("docker", "ps", "-a", "--filter", "label=io.x-k8s.kind.cluster="+name, "--format", "{{.Names}}").Output()
	if s := strings.TrimSpace(string(left)); s != "" {
		t.Errorf("replay's containers left behind: %s", s)
	}
	if kc, _ := os.ReadFile(os.Getenv("KUBECONFIG")); strings.Contains(string(kc), "kind-"+name) {
		t.Error("replay's kubeconfig context left behind")
	}
	if _, err := os.Stat(store.ClusterDir(name)); !os.IsNotExist(err) {
		t.Errorf("replay's state (its copy of the lab included) left behind: %v", err)
	}
}
