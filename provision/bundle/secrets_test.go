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
	"sort"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
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

// corpus is every planted credential by the form it takes: the name says
// where it was put and how, the values are what must not be in a bundle.
type corpus struct {
	forms map[string][]string
	order []string
}

func (c *corpus) plant(form string, vals ...string) {
	if c.forms == nil {
		c.forms = map[string][]string{}
	}
	if _, ok := c.forms[form]; !ok {
		c.order = append(c.order, form)
	}
	c.forms[form] = append(c.forms[form], vals...)
}

// leaked walks a bundle and counts, per form, the planted values found in
// any file; where names the files.
func (c *corpus) leaked(t *testing.T, bundle string) (hits map[string]int, where map[string][]string, files map[string]string) {
	t.Helper()
	hits, where, files = map[string]int{}, map[string][]string{}, map[string]string{}
	if err := Walk(bundle, func(name string, data []byte) error {
		files[name] = string(data)
		for form, vals := range c.forms {
			for _, v := range vals {
				if n := strings.Count(string(data), v); n > 0 {
					hits[form] += n
					where[form] = append(where[form], fmt.Sprintf("%s (%.24q…)", name, v))
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return hits, where, files
}

// droppedForms are planted where the bundle leaves the whole carrier out
// (a compressed file, a line too long to read): no value to find even
// without redaction, so they are checked by what the manifest says.
var droppedForms = map[string]bool{
	"private key in a compressed log":                  true,
	"password and token in a line longer than MaxLine": true,
}

// A bundle is made from a real kube-apiserver and kube-controller-manager
// holding real credentials in every form listed by the corpus (Secrets,
// ConfigMaps with docker and containerd auth, a Deployment and pods with
// env passwords, secret flags and last-applied annotations, tokens the
// token controller and TokenRequest minted), and from log files as kind's
// export brings them (component logs, PKI, kubeconfigs, kubeadm output,
// audit events, docker inspect, cloud keys). Not one planted value may be
// anywhere in the bundle, while the objects and logs themselves must be.
// The same bundle made with redaction off must show every form: the search
// can see what it looks for.
func TestNoSecretLeavesInABundle(t *testing.T) {
	env := testenv.StartT(t, testenv.Options{ControllerManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cs := env.Client
	var c corpus
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	// In a Secret the apiserver returns data base64-encoded.
	plantSecret := func(form string, vals ...string) {
		for _, v := range vals {
			c.plant(form, v, b64(v))
		}
	}

	manifestPassword, manifestKey := "pw-"+random(t, 20), "key-"+random(t, 20)
	plantSecret("Secret stringData in the lab's manifest", manifestPassword)
	plantSecret("Secret data in the lab's manifest", manifestKey)

	// A Deployment applied by kubectl once (its last-applied annotation
	// holds the env and args of then) and changed since.
	deployPW, deployProxyPW, deployArgPW, deployTok := "dpw"+random(t, 18), "ppw"+random(t, 14), "apw"+random(t, 16), "tok"+random(t, 24)
	oldPW, oldTok := "old"+random(t, 18), "otk"+random(t, 22)
	c.plant("env password in a Deployment", deployPW)
	c.plant("proxy URL with password in a Deployment's env", deployProxyPW)
	c.plant("--db-password= arg in a Deployment", deployArgPW)
	c.plant("--token and its value as two args in a Deployment", deployTok)
	c.plant("env password in a Deployment's last-applied-configuration", oldPW)
	c.plant("--token arg in a Deployment's last-applied-configuration", oldTok)
	const ns = "kindlab-leaky"
	lastApplied, _ := json.Marshal(map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "app", "namespace": ns},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"containers": []any{map[string]any{
			"name": "app", "image": "kindlab.invalid/app:v1",
			"args": []any{"--token=" + oldTok},
			"env":  []any{map[string]any{"name": "DB_PASSWORD", "value": oldPW}},
		}}}}},
	})

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
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: %[1]s
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: %[4]q
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      automountServiceAccountToken: false
      containers:
      - name: app
        image: kindlab.invalid/app:v1
        args: ["--db-password=%[6]s", "--token", "%[8]s", "--v=2"]
        env:
        - name: DB_PASSWORD
          value: %[5]s
        - name: HTTP_PROXY
          value: http://proxyuser:%[7]s@proxy.example:3128
        - name: MODE
          value: fast
        - name: FROM_SECRET
          valueFrom: {secretKeyRef: {name: from-manifest, key: password}}
`, ns, manifestPassword, b64(manifestKey), string(lastApplied), deployPW, deployArgPW, deployProxyPW, deployTok))
	cat := lab.NewCatalog()
	if _, err := cat.AddFile(labFile); err != nil {
		t.Fatal(err)
	}
	r, err := cat.Resolve("leaky", lab.ResolveOptions{})
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
	plantSecret("service-account token minted by the token controller", saToken)
	c.plant("TokenRequest token (JWT) in a kubeconfig, a check result and an audit log", requested)

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
		c.plant("PEM private key files in the logs", keyBody(k)...)
		c.plant("base64 PEM in a kubeconfig's client-key-data", b64(string(k)))
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
`, env.URL, b64(string(adminCert)), b64(string(adminKey)), requested)

	oobValue, bearer, certKey := "oob-"+random(t, 24), random(t, 40), random(t, 64)
	bootstrap := random(t, 6) + "." + random(t, 16)
	plantSecret("Secret created beside the lab", oobValue)
	c.plant("Bearer token in a pod's env and a kubelet log", bearer)
	c.plant("kubeadm certificate key in a join line", certKey)
	c.plant("kubeadm bootstrap token in a join line", bootstrap)
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "oob"},
		Data:       map[string][]byte{"value": []byte(oobValue), "tls.key": adminKey},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A Secret applied with kubectl: its last-applied annotation holds the
	// stringData as written.
	appliedPW := "apl" + random(t, 20)
	c.plant("Secret stringData in its last-applied-configuration", appliedPW)
	appliedJSON, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "applied", "namespace": ns}, "stringData": map[string]any{"password": appliedPW}})
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "applied", Annotations: map[string]string{LastApplied: string(appliedJSON)}},
		StringData: map[string]string{"password": appliedPW},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Registry credentials where a Secret should have been: a ConfigMap
	// with docker's config.json, the same as base64, and containerd's
	// configs.
	regPW, idTok, tomlPW, tomlTok, hostsPW := "rpw"+random(t, 16), "idt"+random(t, 30), "cpw"+random(t, 16), "ctk"+random(t, 30), "hpw"+random(t, 16)
	dockerAuth := b64("bob:" + regPW)
	dockerJSON := `{"auths":{"registry.example:5000":{"auth":"` + dockerAuth + `","identitytoken":"` + idTok + `"}}}`
	b64PW := "b6p" + random(t, 16)
	b64Docker := b64(`{"auths":{"r2.example":{"auth":"` + b64("alice:"+b64PW) + `"}}}`)
	c.plant("docker auth (dockerconfigjson) in a ConfigMap", dockerAuth, "bob:"+regPW, idTok)
	c.plant("base64 dockerconfigjson in a ConfigMap", b64Docker, b64("alice:"+b64PW))
	c.plant("containerd config.toml registry auths in a ConfigMap", tomlPW, tomlTok, b64("carol:"+tomlPW))
	c.plant("containerd hosts.toml Basic header in a ConfigMap", b64("dave:"+hostsPW))
	containerdTOML := fmt.Sprintf(`version = 2
[plugins."io.containerd.grpc.v1.cri".registry.configs."r.example".auth]
  username = "carol"
  password = "%s"
  auth = "%s"
  identitytoken = "%s"
`, tomlPW, b64("carol:"+tomlPW), tomlTok)
	hostsTOML := fmt.Sprintf(`server = "https://r.example"
[host."https://r.example".header]
  authorization = ["Basic %s"]
`, b64("dave:"+hostsPW))

	// Application config and cloud credentials in a ConfigMap.
	blockPW, nextTok, envListPW := "blk"+random(t, 16), "nxt"+random(t, 20), "elp"+random(t, 16)
	c.plant("password as a YAML block scalar in a ConfigMap", blockPW)
	c.plant("token on the line after its key in a ConfigMap", nextTok)
	c.plant("env list (name/value lines) in a ConfigMap", envListPW)
	appYAML := fmt.Sprintf("database:\n  user: app\n  password: |\n    %s\ntoken:\n  %s\nenv:\n- name: API_KEY\n  value: %s\n- name: MODE\n  value: fast\n", blockPW, nextTok, envListPW)
	aws, awsSecret := "AKIA"+strings.ToUpper(strings.Map(func(r rune) rune {
		if r >= '2' && r <= '7' || r >= 'a' && r <= 'z' {
			return r
		}
		return 'k'
	}, random(t, 16))), random(t, 40)
	gcpKey := keyPEMs(t)["pkcs8"]
	gcpJSON, _ := json.MarshalIndent(map[string]string{"type": "service_account", "project_id": "p", "private_key_id": "0a1b2c",
		"private_key": string(gcpKey), "client_email": "sa@p.iam.gserviceaccount.com"}, "", "  ")
	ghp, slack, glpat, gapi := "ghp_"+alnum(t, 36), "xoxb-"+random(t, 12)+"-"+alnum(t, 24), "glpat-"+alnum(t, 20), "AIza"+alnum(t, 35)
	c.plant("AWS access key and secret key in a ConfigMap", aws, awsSecret)
	c.plant("GCP service-account JSON private_key in a ConfigMap", keyBody(gcpKey)...)
	c.plant("GitHub, Slack, GitLab and Google API tokens in a ConfigMap", ghp, slack, glpat, gapi)
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "registry-auth"},
		Data: map[string]string{"config.json": dockerJSON, ".dockerconfigjson": b64Docker,
			"config.toml": containerdTOML, "hosts.toml": hostsTOML},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "app-config"},
		Data: map[string]string{"app.yaml": appYAML,
			"aws-config":   fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", aws, awsSecret),
			"sa.json":      string(gcpJSON),
			"tokens.env":   fmt.Sprintf("GITHUB_TOKEN=%s\nSLACK_BOT=%s\nGITLAB=%s\nMAPS=%s\n", ghp, slack, glpat, gapi),
			"mode":         "fast",
			"settings.ini": "[server]\nport = 8080\n",
		},
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
	podArgPW, podFlagTok, podKey, podPodPW := "ppa"+random(t, 16), "pft"+random(t, 24), "pak"+random(t, 24), "plp"+random(t, 16)
	c.plant("--db-password= arg in a pod", podArgPW)
	c.plant("--token value as two args in a pod's command", podFlagTok)
	c.plant("API key env and Authorization header in a pod", podKey)
	c.plant("env password in a pod's last-applied-configuration", podPodPW)
	podLast, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "client", "namespace": ns},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "env": []any{map[string]any{"name": "DB_PASSWORD", "value": podPodPW}}}}}})
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client", Annotations: map[string]string{"example/join": join, LastApplied: string(podLast)}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: "kindlab.invalid/none:v1",
			Command: []string{"/app", "--token", podFlagTok},
			Args:    []string{"--db-password=" + podArgPW, "--v=2"},
			Env: []corev1.EnvVar{{Name: "AUTH", Value: "Bearer " + bearer}, {Name: "API_KEY", Value: podKey},
				{Name: "SECRET_NAME", Value: "db-credentials"}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz", Port: intstr.FromInt32(8080),
				HTTPHeaders: []corev1.HTTPHeader{{Name: "Authorization", Value: "Bearer " + podKey}},
			}}},
		}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// What kind's log export brings from a node: component logs, plus
	// (a worst case) the PKI, a kubeconfig, kubeadm's output, audit events,
	// docker inspect, configs and a compressed file nothing can look into.
	uploadKey, initToken := random(t, 64), random(t, 6)+"."+random(t, 16)
	c.plant("kubeadm certificate key printed on the line after 'Using certificate key:'", uploadKey)
	c.plant("kubeadm bootstrap token printed by kubeadm init", initToken)
	inspectProxyPW, inspectEnvPW := "ipw"+random(t, 16), "iev"+random(t, 16)
	c.plant("proxy URL with password in docker inspect's Env", inspectProxyPW)
	c.plant("X_PASSWORD=value in docker inspect's Env", inspectEnvPW)
	structPW, klogProxyPW, klogFlagTok := "sdp"+random(t, 16), "kpp"+random(t, 16), "kft"+random(t, 24)
	c.plant("env password in a Go struct dump in a kubelet log", structPW)
	c.plant("proxy URL with password in a klog line", klogProxyPW)
	c.plant("--token value flag in a log line", klogFlagTok)
	auditData, auditLastPW := "aud"+random(t, 20), "alp"+random(t, 16)
	c.plant("Secret data (any key) in an audit event", b64(auditData))
	c.plant("Secret stringData in an escaped last-applied inside an audit event", auditLastPW)
	yamlEnvPW, yamlArgTok, yamlBlockPW := "yep"+random(t, 16), "yat"+random(t, 24), "ybp"+random(t, 16)
	c.plant("env name/value lines in a YAML dump in a log", yamlEnvPW)
	c.plant("--token and value as YAML list items in a log", yamlArgTok)
	c.plant("password YAML block scalar in a log", yamlBlockPW)
	basicPW, cookieTok := "bpw"+random(t, 16), "ck"+alnum(t, 24)
	c.plant("Basic auth header in a log", b64("erin:"+basicPW))
	c.plant("Cookie header in a log", cookieTok)
	logKeys := keyPEMs(t)
	c.plant("PEM private key spanning lines in a log", keyBody(logKeys["rsa"])...)
	wrapped := wrap(b64(string(logKeys["ec"])), 76, "\n  ")
	c.plant("wrapped base64 PEM in a log", strings.Split(wrapped, "\n  ")...)
	ctrdPW, ctrdTok, dockerLogPW := "cdp"+random(t, 16), "cdt"+random(t, 28), "dlp"+random(t, 16)
	c.plant("registry auth in a containerd debug log line (Go struct dump)", ctrdPW, b64("bob:"+ctrdPW), ctrdTok)
	c.plant("docker config.json auths in the node logs", b64("eve:"+dockerLogPW))
	logAWS := "ASIA" + strings.ToUpper(strings.Map(func(r rune) rune {
		if r >= '2' && r <= '7' || r >= 'a' && r <= 'z' {
			return r
		}
		return 'm'
	}, random(t, 16)))
	logGhs, logHook := "ghs_"+alnum(t, 36), "T"+alnum(t, 8)+"/B"+alnum(t, 8)+"/"+alnum(t, 24)
	c.plant("AWS, GitHub and Slack webhook keys in a log", logAWS, logGhs, logHook)
	longPW, longTok, afterPW := "lng"+random(t, 16), "ltk"+random(t, 24), "aft"+random(t, 16)
	c.plant("password and token in a line longer than MaxLine", longPW, longTok)
	c.plant("password on the line after the long line", afterPW)
	gzKey := keyPEMs(t)["ec"]
	c.plant("private key in a compressed log", keyBody(gzKey)...)
	auditSecretLast, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Secret", "stringData": map[string]any{"password": auditLastPW}})
	auditSecret, _ := json.Marshal(map[string]any{"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create",
		"objectRef": map[string]any{"resource": "secrets", "namespace": ns, "name": "s"},
		"requestObject": map[string]any{"kind": "Secret", "apiVersion": "v1",
			"metadata": map[string]any{"name": "s", "annotations": map[string]any{LastApplied: string(auditSecretLast)}},
			"data":     map[string]any{"whatever-key": b64(auditData)}}})
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
		gz.Write(gzKey)
		long := "I1130 1 x.go:1] dump password=" + longPW + " " + strings.Repeat("x", MaxLine) + " token=" + longTok + "\n"
		for name, content := range map[string]string{
			"admin.conf": kubeconfig,
			"kubeadm.log": "I0101 12:00:00 You can now join any number of control-plane nodes:\n  " + join + "\n" +
				"[bootstrap-token] Using token: " + initToken + "\n[upload-certs] Storing the certificates in Secret \"kubeadm-certs\"\n[upload-certs] Using certificate key:\n" + uploadKey + "\n[mark-control-plane] Marking the node\n",
			"audit.log":       fmt.Sprintf(`{"user":{"username":"system:serviceaccount:%s:app"},"requestHeaders":{"Authorization":["Bearer %s"]}}`+"\n", ns, requested) + string(auditSecret) + "\n",
			"journal.log.gz":  gz.String(),
			"old/kubelet.log": "Authorization: Bearer " + bearer + "\n",
			"leaky-control-plane/inspect.json": fmt.Sprintf(`[
    {
        "Name": "/leaky-control-plane",
        "Config": {
            "Env": [
                "HTTP_PROXY=http://corp:%s@proxy.example:3128",
                "DB_PASSWORD=%s",
                "container=docker"
            ]
        }
    }
]
`, inspectProxyPW, inspectEnvPW),
			"leaky-control-plane/kubelet.log": fmt.Sprintf(`I1130 10:00:00.000001 1 kuberuntime_manager.go:1] "Creating container" container=&Container{Name:app,Image:kindlab.invalid/app:v1,Env:[]EnvVar{EnvVar{Name:DB_PASSWORD,Value:%s,ValueFrom:nil,},},}
I1130 10:00:00.000002 1 proxy.go:1] "Using proxy" url="http://corp:%s@proxy.example:3128"
I1130 10:00:00.000003 1 exec.go:1] "Running" cmd="/usr/bin/helper --token %s --v=2"
`, structPW, klogProxyPW, klogFlagTok),
			"leaky-control-plane/pod-dump.yaml": fmt.Sprintf("spec:\n  containers:\n  - name: app\n    args:\n    - --token\n    - %s\n    env:\n    - name: DB_PASSWORD\n      value: %s\n    - name: MODE\n      value: fast\nconfig:\n  password: |\n    %s\n", yamlArgTok, yamlEnvPW, yamlBlockPW),
			"leaky-control-plane/http.log":      fmt.Sprintf("GET /v2/ Authorization: Basic %s\nSet-Cookie: session=%s; Path=/\n", b64("erin:"+basicPW), cookieTok),
			"leaky-control-plane/keys.log":      "wrote key\n" + string(logKeys["rsa"]) + "and a secret's data:\n  " + wrapped + "\ndone\n",
			"leaky-control-plane/long.log":      long + "password: " + afterPW + "\n",
			"leaky-control-plane/containerd.log": fmt.Sprintf(`time="2026-11-30T10:00:00Z" level=debug msg="PullImage" image="r.example/app:v1" auth="&AuthConfig{Username:bob,Password:%s,Auth:%s,ServerAddress:r.example,IdentityToken:%s,RegistryToken:,}"`+"\n",
				ctrdPW, b64("bob:"+ctrdPW), ctrdTok),
			"leaky-control-plane/docker-config.json": fmt.Sprintf("{\n\t\"auths\": {\n\t\t\"r.example:5000\": {\n\t\t\t\"auth\": \"%s\"\n\t\t}\n\t}\n}\n", b64("eve:"+dockerLogPW)),
			"leaky-control-plane/cloud.log": fmt.Sprintf("I1130 1 s3.go:1] \"Uploading\" accessKeyID=%q\nI1130 1 gh.go:1] \"Cloning with\" token=%s\nI1130 1 notify.go:1] \"Posting\" url=\"https://hooks.slack.com/services/%s\"\n",
				logAWS, logGhs, logHook),
		} {
			mustWrite(t, filepath.Join(out, name), content)
		}
		return nil
	}
	results, _ := json.Marshal([]check.Result{{Name: "node-bound-token", Status: check.Fail,
		Reason: "TokenReview of " + requested + " failed", Details: []string{"token claims " + saToken}}})

	plan := planFor(t, cat, "leaky", filepath.Join(dir, "state"))
	makeBundle := func(out string) *Manifest {
		m, err := Create(ctx, Input{
			Catalog: cat, Plan: plan,
			Checks:      &state.Checks{SavedAt: time.Now(), Results: results},
			Config:      env.Config,
			CollectLogs: collect,
			Versions:    Versions{Kindlab: "test", Kind: KindVersion()},
		}, out)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// Redaction off first: every form the bundle carries at all must be
	// found, or the search below proves nothing.
	plain := filepath.Join(t.TempDir(), "plain.tar.gz")
	func() {
		redactionOff = true
		defer func() { redactionOff = false }()
		makeBundle(plain)
	}()
	offHits, _, _ := c.leaked(t, plain)
	offTotal := 0
	for _, form := range c.order {
		offTotal += offHits[form]
		if offHits[form] == 0 && !droppedForms[form] {
			t.Errorf("redaction off: planted form %q not found in the bundle: the test cannot see it", form)
		}
		if offHits[form] > 0 && droppedForms[form] {
			t.Errorf("redaction off: %q found, but its carrier should be left out whole", form)
		}
	}

	out := filepath.Join(t.TempDir(), "leaky.tar.gz")
	m := makeBundle(out)
	hits, where, files := c.leaked(t, out)
	onTotal := 0
	for _, form := range c.order {
		onTotal += hits[form]
		if hits[form] > 0 {
			t.Errorf("leak: %q found %d times: %s", form, hits[form], strings.Join(where[form], ", "))
		}
	}
	var summary []string
	for _, form := range c.order {
		summary = append(summary, fmt.Sprintf("  %-78s off %3d  on %d", form, offHits[form], hits[form]))
	}
	t.Logf("%d planted forms, %d values; found with redaction off %d, on %d:\n%s", len(c.order), countValues(c), offTotal, onTotal, strings.Join(summary, "\n"))

	// Redacted, not dropped: the report still shows what is there.
	for file, want := range map[string][]string{
		"objects/namespaces/" + ns + "/secrets.yaml": {"name: from-manifest", "name: app-token", "name: oob", "name: applied", "password:", "apikey:", "tls.key:", "token:",
			RedactedAnnotation, "kubernetes.io/service-account-token", "last-applied-configuration"},
		"objects/namespaces/" + ns + "/configmaps.yaml": {"name: client", "client-key-data: REDACTED", "token: REDACTED", "name: registry-auth", "config.json:", ".dockerconfigjson:",
			"registry.example:5000", `username = "carol"`, `[host."https://r.example".header]`, "name: app-config", "user: app", "value: fast", "client_email", "aws_access_key_id = REDACTED(AWS access key)", "aws_secret_access_key = REDACTED", "port = 8080"},
		"objects/namespaces/" + ns + "/pods.yaml": {"name: client", "name: AUTH", "--discovery-token-ca-cert-hash", "--db-password=REDACTED", "--v=2", "name: API_KEY",
			"value: db-credentials", "name: Authorization", "path: /healthz", "last-applied-configuration"},
		"objects/workloads/leaky.yaml": {"kind: Namespace", "name: from-manifest", "kind: ServiceAccount", "kind: Deployment", "name: DB_PASSWORD", "value: REDACTED",
			"value: fast", "http://REDACTED@proxy.example:3128", "--db-password=REDACTED", "key: password", "automountServiceAccountToken: false",
			`"name":"DB_PASSWORD","value":"REDACTED"`, "image: kindlab.invalid/app:v1"},
		"objects/cluster/nodes.yaml":                         nil,
		"logs/apiserver.log":                                 {"Serving securely"},
		"logs/admin.conf":                                    {"client-certificate-data:", "client-key-data: REDACTED"},
		"logs/admin.key":                                     {"REDACTED(", "PRIVATE KEY)"},
		"logs/kubeadm.log":                                   {"kubeadm join 10.0.0.2:6443 --token REDACTED", "Using certificate key:", "[mark-control-plane] Marking the node"},
		"logs/audit.log":                                     {"system:serviceaccount:" + ns + ":app", `"whatever-key":"` + redactedB64 + `"`, `"verb":"create"`},
		"logs/leaky-control-plane/inspect.json":              {`"HTTP_PROXY=http://REDACTED@proxy.example:3128"`, `"DB_PASSWORD=REDACTED"`, `"container=docker"`},
		"logs/leaky-control-plane/kubelet.log":               {"Name:DB_PASSWORD,Value:REDACTED", "--token REDACTED --v=2"},
		"logs/leaky-control-plane/pod-dump.yaml":             {"- --token\n    - REDACTED", "value: REDACTED", "value: fast", "password: REDACTED"},
		"logs/leaky-control-plane/keys.log":                  {"wrote key", "and a secret's data:", "done"},
		"logs/leaky-control-plane/long.log":                  {"left out", "password: REDACTED"},
		"checks.json":                                        {"node-bound-token", "REDACTED(JWT)"},
		"lab/disk/manifests/objects.yaml":                    {"name: from-manifest", "password: " + Redacted, "kind: Deployment", "name: DB_PASSWORD"},
		"lab/disk/labs/leaky.yaml":                           {"name: leaky"},
		"host.json":                                          {"findings"},
		"objects/namespaces/" + ns + "/serviceaccounts.yaml": {"name: app"},
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
				t.Errorf("%s lacks %q:\n%.3000s", file, w, got)
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
		{"objects/namespaces/" + ns + "/configmaps.yaml", "credential value"},
		{"objects/namespaces/" + ns + "/pods.yaml", "env value"},
		{"objects/workloads/leaky.yaml", "env value"},
		{"logs/admin.key", "private key (PEM)"},
		{"logs/audit.log", "token (JWT)"},
		{"logs/audit.log", "Secret value"},
		{"logs/leaky-control-plane/long.log", "line too long to check"},
		{"lab/disk/manifests/objects.yaml", "Secret value"},
	} {
		if !hasRedaction(m, want.file, want.what) {
			t.Errorf("redactions lack %s in %s: %+v", want.what, want.file, m.Redactions)
		}
	}
	if m.Pins.Kubernetes != testenv.Version {
		t.Errorf("kubernetes pin %q, want %s", m.Pins.Kubernetes, testenv.Version)
	}
	t.Logf("%d files, %d redaction entries", len(files), len(m.Redactions))
}

func countValues(c corpus) int {
	n := 0
	for _, v := range c.forms {
		n += len(v)
	}
	return n
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
	sort.Strings(out)
	return out
}
