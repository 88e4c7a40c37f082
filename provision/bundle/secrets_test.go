package bundle

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/state"
	"github.com/kindlab/kindlab/provision/testenv"
	"github.com/kindlab/kindlab/provision/workload"
)

func random(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)[:n]
}

// A bundle is made from a real kube-apiserver and kube-controller-manager
// holding real credentials: Secrets from the lab's manifests and created
// beside them, a service-account token the token controller minted, a
// TokenRequest token, kubeconfig credentials in a ConfigMap, a bearer token
// and a kubeadm join line in a pod, and, as kind's log export would bring,
// the control plane's logs, private keys and a kubeconfig with embedded
// credentials. Not one of those values may be anywhere in the bundle, while
// the objects and logs themselves must be.
func TestNoSecretLeavesInABundle(t *testing.T) {
	env := testenv.StartT(t, testenv.Options{ControllerManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := env.Client

	var secrets []string // every value that must not be in the bundle
	leak := func(vals ...string) {
		for _, v := range vals {
			secrets = append(secrets, v, base64.StdEncoding.EncodeToString([]byte(v)))
		}
	}
	manifestPassword, manifestKey := "pw-"+random(t, 20), "key-"+random(t, 20)
	leak(manifestPassword, manifestKey)

	dir := t.TempDir()
	labFile := filepath.Join(dir, "labs", "leaky.yaml")
	mustWrite(t, labFile, `apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: leaky
spec:
  nodeImage: kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b
  nodes: [{role: control-plane}]
  workloads:
  - name: leaky
    path: ../manifests
`)
	const ns = "kindlab-leaky"
	mustWrite(t, filepath.Join(dir, "manifests", "objects.yaml"), fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: %[1]s
---
apiVersion: v1
kind: Secret
metadata:
  name: from-manifest
  namespace: %[1]s
stringData:
  password: %[2]s
data:
  apikey: %[3]s
---
apiVersion: v1
kind: Secret
metadata:
  name: app-token
  namespace: %[1]s
  annotations:
    kubernetes.io/service-account.name: app
type: kubernetes.io/service-account-token
`, ns, manifestPassword, base64.StdEncoding.EncodeToString([]byte(manifestKey))))
	c := lab.NewCatalog()
	if _, err := c.AddFile(labFile); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("leaky", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := workload.ApplyWith(ctx, env.Config, r.Workloads, workload.Options{NoWait: true}); err != nil {
		t.Fatal(err)
	}

	// The token controller fills the legacy token Secret in.
	var saToken string
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := cs.CoreV1().Secrets(ns).Get(ctx, "app-token", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		saToken = string(s.Data["token"])
		return saToken != "", nil
	}); err != nil {
		t.Fatalf("token controller never filled app-token: %v", err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "app", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	requested := tr.Status.Token
	leak(saToken, requested)

	adminKey, err := os.ReadFile(filepath.Join(env.Dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	adminCert, _ := os.ReadFile(filepath.Join(env.Dir, "admin.crt"))
	keyFiles, _ := filepath.Glob(filepath.Join(env.Dir, "*.key"))
	if len(keyFiles) < 3 {
		t.Fatalf("testenv has only %v", keyFiles)
	}
	for _, f := range keyFiles {
		k, _ := os.ReadFile(f)
		secrets = append(secrets, keyBody(k)...)
		secrets = append(secrets, base64.StdEncoding.EncodeToString(k))
	}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: leaky
  cluster: {server: %s}
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
- name: sa
  user:
    token: %s
`, env.URL, base64.StdEncoding.EncodeToString(adminCert), base64.StdEncoding.EncodeToString(adminKey), requested)

	oobValue, bearer, certKey := "oob-"+random(t, 24), random(t, 40), random(t, 64)
	bootstrap := random(t, 6) + "." + random(t, 16)
	leak(oobValue, bearer, certKey, bootstrap)
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "oob"},
		Data:       map[string][]byte{"value": []byte(oobValue), "tls.key": adminKey},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Data:       map[string]string{"kubeconfig": kubeconfig},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The namespace's default account, which pods need, is the service
	// account controller's to make.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	join := fmt.Sprintf("kubeadm join 10.0.0.2:6443 --token %s --discovery-token-ca-cert-hash sha256:%s --control-plane --certificate-key %s", bootstrap, random(t, 64), certKey)
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client", Annotations: map[string]string{"example/join": join}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: "kindlab.invalid/none:v1",
			Env: []corev1.EnvVar{{Name: "AUTH", Value: "Bearer " + bearer}},
		}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// What kind's log export brings from a node: component logs, plus
	// (a worst case) the PKI, a kubeconfig, kubeadm's output and a
	// compressed file nothing can look into.
	collect := func(ctx context.Context, out string) error {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		for _, f := range append([]string{"apiserver.log", "etcd.log", "kcm.log"}, baseNames(keyFiles)...) {
			b, err := os.ReadFile(filepath.Join(env.Dir, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(out, f), b, 0o644); err != nil {
				return err
			}
		}
		var gz bytes.Buffer
		gz.Write([]byte{0x1f, 0x8b, 8, 0})
		gz.Write(adminKey)
		for name, content := range map[string]string{
			"admin.conf":      kubeconfig,
			"kubeadm.log":     "I0101 12:00:00 You can now join any number of control-plane nodes:\n  " + join + "\n",
			"audit.log":       fmt.Sprintf(`{"user":{"username":"system:serviceaccount:%s:app"},"requestHeaders":{"Authorization":["Bearer %s"]}}`+"\n", ns, requested),
			"journal.log.gz":  gz.String(),
			"old/kubelet.log": "Authorization: Bearer " + bearer + "\n",
		} {
			mustWrite(t, filepath.Join(out, name), content)
		}
		return nil
	}
	results, _ := json.Marshal([]check.Result{{Name: "node-bound-token", Status: check.Fail,
		Reason: "TokenReview of " + requested + " failed", Details: []string{"token claims " + saToken}}})

	plan := planFor(t, c, "leaky", filepath.Join(dir, "state"))
	out := filepath.Join(t.TempDir(), "leaky.tar.gz")
	m, err := Create(ctx, Input{
		Catalog: c, Plan: plan,
		Checks:      &state.Checks{SavedAt: time.Now(), Results: results},
		Config:      env.Config,
		CollectLogs: collect,
		Versions:    Versions{Kindlab: "test", Kind: KindVersion()},
	}, out)
	if err != nil {
		t.Fatal(err)
	}

	files := map[string]string{}
	if err := Walk(out, func(name string, data []byte) error {
		files[name] = string(data)
		for _, s := range secrets {
			if strings.Contains(string(data), s) {
				t.Errorf("%s leaks %.24q…", name, s)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Redacted, not dropped: the report still shows what is there.
	for file, want := range map[string][]string{
		"objects/namespaces/" + ns + "/secrets.yaml":    {"name: from-manifest", "name: app-token", "name: oob", "password:", "apikey:", "tls.key:", "token:", RedactedAnnotation, "kubernetes.io/service-account-token"},
		"objects/namespaces/" + ns + "/configmaps.yaml": {"name: client", "client-key-data: [REDACTED", "token: [REDACTED"},
		"objects/namespaces/" + ns + "/pods.yaml":       {"name: client", "Bearer [REDACTED]", "--discovery-token-ca-cert-hash"},
		"objects/workloads/leaky.yaml":                  {"kind: Namespace", "name: from-manifest", "kind: ServiceAccount"},
		"objects/cluster/nodes.yaml":                    nil,
		"logs/apiserver.log":                            {"Serving securely"},
		"logs/admin.conf":                               {"client-certificate-data:", "client-key-data: [REDACTED"},
		"logs/admin.key":                                {"[REDACTED ", "PRIVATE KEY]"},
		"logs/kubeadm.log":                              {"kubeadm join 10.0.0.2:6443 --token [REDACTED"},
		"checks.json":                                   {"node-bound-token", "[REDACTED JWT]"},
		"lab/disk/manifests/objects.yaml":               {"name: from-manifest", "password: " + Redacted},
		"lab/disk/labs/leaky.yaml":                      {"name: leaky"},
		"host.json":                                     {"findings"},
	} {
		got, ok := files[file]
		if !ok {
			if file != "objects/cluster/nodes.yaml" {
				t.Errorf("bundle lacks %s", file)
			}
			continue
		}
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s lacks %q:\n%.2000s", file, w, got)
			}
		}
	}
	if _, ok := files["logs/journal.log.gz"]; ok {
		t.Error("a compressed log file, which redaction cannot read, is in the bundle")
	}
	if !strings.Contains(strings.Join(m.Problems, "\n"), "logs/journal.log.gz") {
		t.Errorf("problems do not name the dropped file: %q", m.Problems)
	}
	for _, want := range []struct{ file, what string }{
		{"objects/namespaces/" + ns + "/secrets.yaml", "Secret value"},
		{"logs/admin.key", "private key (PEM)"},
		{"logs/audit.log", "token (JWT)"},
		{"lab/disk/manifests/objects.yaml", "Secret value"},
	} {
		if !hasRedaction(m, want.file, want.what) {
			t.Errorf("redactions lack %s in %s: %+v", want.what, want.file, m.Redactions)
		}
	}
	if m.Pins.Kubernetes != testenv.Version {
		t.Errorf("kubernetes pin %q, want %s", m.Pins.Kubernetes, testenv.Version)
	}
	t.Logf("%d files, %d secrets checked, %d redactions", len(files), len(secrets), len(m.Redactions))
}

func mustWrite(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func baseNames(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = filepath.Base(p)
	}
	return out
}
