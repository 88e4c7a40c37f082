package bundle

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"runtime"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// keyPEMs returns freshly generated private keys in the PEM forms kubeadm,
// kind and client-go write (PKCS#1 RSA, SEC1 EC, PKCS#8), so the test
// cannot pass on a pattern that only matches a fixture.
func keyPEMs(t *testing.T) map[string][]byte {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"rsa":   pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}),
		"ec":    pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}),
		"pkcs8": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
	}
}

// keyBody is the part of a PEM block that is the secret: its base64 lines.
func keyBody(p []byte) []string {
	var out []string
	for _, l := range strings.Split(string(p), "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// alnum returns n random letters and digits, with at least one of each so
// token-shaped rules see a token.
func alnum(t *testing.T, n int) string {
	t.Helper()
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	b[0], b[n-1] = 'Q', '7'
	return string(b)
}

// textCase is one planted form: the text, the values that must go, and
// the text around them that must stay.
type textCase struct {
	name   string
	in     string
	secret []string
	keep   []string
}

// textCases are the forms credentials take in logs, configs and objects.
// Values are random per run, so no rule can be written to an example.
func textCases(t *testing.T) []textCase {
	keys := keyPEMs(t)
	jsonKey, _ := json.Marshal(string(keys["ec"]))
	jwtTok := "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMiLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
	pw, pw2, tok := "pw"+alnum(t, 10), "Pw"+alnum(t, 6), "tk"+alnum(t, 20)
	userPW := "user" + alnum(t, 4) + ":" + pw
	auth := b64(userPW)
	hex64 := random(t, 64)
	dockerJSON := `{"auths":{"registry.example:5000":{"auth":"` + auth + `","identitytoken":"` + tok + `"}}}`
	aws := "AKIA" + strings.ToUpper(strings.Map(func(r rune) rune {
		if r >= '2' && r <= '7' || r >= 'a' && r <= 'z' {
			return r
		}
		return 'q'
	}, alnum(t, 16)))
	awsSecret := alnum(t, 40)
	gcpKey := "AIza" + alnum(t, 35)
	ghp, pat := "ghp_"+alnum(t, 36), "github_pat_"+alnum(t, 22)+"_"+alnum(t, 59)
	slack, hook := "xoxb-"+random(t, 12)+"-"+alnum(t, 24), "https://hooks.slack.com/services/T"+alnum(t, 8)+"/B"+alnum(t, 8)+"/"+alnum(t, 24)
	glpat := "glpat-" + alnum(t, 20)
	bootstrap := random(t, 6) + "." + "z" + random(t, 15)
	return []textCase{
		{"PEM in a log", "I0101 kubeadm wrote\n" + string(keys["rsa"]) + "done\n", keyBody(keys["rsa"]), []string{"I0101 kubeadm wrote", "done", "REDACTED(RSA PRIVATE KEY)"}},
		{"PKCS8 PEM", string(keys["pkcs8"]), keyBody(keys["pkcs8"]), nil},
		{"PEM in a YAML block scalar", "data:\n  server.pem: |\n    " + strings.ReplaceAll(strings.TrimSpace(string(keys["ec"])), "\n", "\n    ") + "\n  tls.crt: abc\n",
			keyBody(keys["ec"]), []string{"server.pem: |\n    REDACTED(EC PRIVATE KEY)\n  tls.crt: abc\n"}},
		{"private key under a key naming it", "data:\n  tls.key: |\n    " + strings.ReplaceAll(strings.TrimSpace(string(keys["ec"])), "\n", "\n    ") + "\n  tls.crt: abc\n",
			keyBody(keys["ec"]), []string{"tls.key: REDACTED\n  tls.crt: abc\n"}},
		{"PEM JSON-escaped", `{"key":` + string(jsonKey) + `,"n":1}`, keyBody(keys["ec"]), []string{`"n":1`}},
		{"PEM cut short", "key: " + strings.Join(strings.Split(string(keys["rsa"]), "\n")[:4], "\n"), keyBody(keys["rsa"])[:3], nil},
		{"encrypted PEM with headers", "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0A1B\n\n" + strings.Join(keyBody(keys["rsa"])[:5], "\n") + "\n-----END RSA PRIVATE KEY-----\nafter\n",
			append([]string{"DEK-Info"}, keyBody(keys["rsa"])[:5]...), []string{"after"}},
		{"kubeconfig client-key-data", "users:\n- name: u\n  user:\n    client-key-data: " + base64.StdEncoding.EncodeToString(keys["ec"]) + "\n",
			[]string{base64.StdEncoding.EncodeToString(keys["ec"])}, []string{"client-key-data:"}},
		{"base64 PEM wrapped", "data: |\n  " + wrap(base64.StdEncoding.EncodeToString(keys["rsa"]), 76, "\n  ") + "\nnext: 1\n",
			strings.Split(wrap(base64.StdEncoding.EncodeToString(keys["rsa"]), 76, "\n"), "\n")[1:], []string{"next: 1"}},
		{"JWT", "token issued: " + jwtTok + " for sa", []string{jwtTok, "c2lnbmF0dXJlLWJ5dGVzLWhlcmU"}, []string{"token issued:", "for sa"}},
		{"bearer header", `GET /api Authorization: Bearer 0123456789abcdef0123456789abcdef`, []string{"0123456789abcdef0123456789abcdef"}, []string{"Authorization: Bearer"}},
		{"bearer high-entropy token", "curl -H 'Authorization: Bearer " + tok + "' https://10.0.0.1:6443/api", []string{tok}, []string{"https://10.0.0.1:6443/api"}},
		{"basic auth header", "Authorization: Basic " + auth, []string{auth}, []string{"Authorization: Basic"}},
		{"kubeadm join", "kubeadm join 172.18.0.3:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:1234 --certificate-key " + hex64,
			[]string{"abcdef.0123456789abcdef", "0123456789abcdef", hex64}, []string{"--discovery-token-ca-cert-hash sha256:1234"}},
		{"kubeadm certificate key on the next line", "[upload-certs] Using certificate key:\n" + hex64 + "\n[mark-control-plane] Marking the node\n",
			[]string{hex64}, []string{"Using certificate key:", "[mark-control-plane] Marking the node"}},
		{"kubeadm certificate key on the same line", "[upload-certs] Using certificate key: " + hex64, []string{hex64}, []string{"Using certificate key:"}},
		{"bootstrap token in prose", "created bootstrap token " + bootstrap + " for joining", []string{bootstrap}, []string{"created bootstrap token", "for joining"}},
		{"kind's token in kubeadm config", "bootstrapTokens:\n- token: abcdef.0123456789abcdef\n", []string{"abcdef.0123456789abcdef"}, []string{"bootstrapTokens:"}},
		{"kubeconfig token and password", "user:\n  token: s3cr3t-static-token\n  password: \"hunter2hunter2\"\n", []string{"s3cr3t-static-token", "hunter2hunter2"}, []string{"token:", "password:"}},
		{"short password", "password: " + pw2 + "\n", []string{pw2}, []string{"password: REDACTED"}},
		{"JSON credentials", `{"access_token":"ya29.a0AfH6SMB-secret","client_secret":"GOCSPX-abcdefgh"}`, []string{"ya29.a0AfH6SMB-secret", "GOCSPX-abcdefgh"}, []string{`"access_token":"REDACTED"`}},
		{"docker config JSON", dockerJSON, []string{auth, tok}, []string{`"registry.example:5000"`, `"auths"`, `"auth":"REDACTED"`}},
		{"docker config pretty", "{\n  \"auths\": {\n    \"r.example\": {\n      \"auth\": \"" + auth + "\",\n      \"password\": \"" + pw + "\",\n      \"username\": \"bob\"\n    }\n  }\n}\n",
			[]string{auth, pw}, []string{`"username": "bob"`, `"r.example"`}},
		{"dockerconfigjson base64 in a ConfigMap", "data:\n  .dockerconfigjson: " + b64(dockerJSON) + "\n", []string{b64(dockerJSON), auth, tok}, []string{".dockerconfigjson:"}},
		{"containerd config.toml auth", "[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"r.example\".auth]\n  username = \"bob\"\n  password = \"" + pw + "\"\n  auth = \"" + auth + "\"\n  identitytoken = \"" + tok + "\"\n",
			[]string{pw, auth, tok}, []string{`username = "bob"`, `password = "REDACTED"`, `registry.configs."r.example".auth]`}},
		{"containerd hosts.toml header", "server = \"https://r.example\"\n[host.\"https://r.example\".header]\n  authorization = [\"Basic " + auth + "\"]\n", []string{auth}, []string{`[host."https://r.example".header]`}},
		{"proxy URL with password", "HTTP_PROXY=http://" + userPW + "@proxy.example:3128", []string{userPW, pw}, []string{"HTTP_PROXY=http://REDACTED@proxy.example:3128"}},
		{"proxy URL in klog", `I1130 10:00:00.1 1 proxy.go:1] "Using proxy" url="https://` + userPW + `@10.0.0.1:3128/"`, []string{pw}, []string{`url="https://REDACTED@10.0.0.1:3128/"`}},
		{"URL password with @", "https_proxy=http://bob:p@ss" + pw + "@proxy:3128", []string{pw, "ss" + pw}, []string{"@proxy:3128"}},
		{"database URL", "DATABASE_URL=postgres://app:" + pw + "@db.svc:5432/app?sslmode=disable", []string{pw}, []string{"postgres://REDACTED@db.svc:5432/app"}},
		{"env YAML across lines", "env:\n- name: DB_PASSWORD\n  value: " + pw + "\n- name: LOG_LEVEL\n  value: debug\n", []string{pw}, []string{"name: DB_PASSWORD", "value: debug", "value: REDACTED"}},
		{"env YAML quoted, value first seen later", "        - name: API_TOKEN\n          # the token\n          value: \"" + tok + "\"\n", []string{tok}, []string{`value: "REDACTED"`}},
		{"env pretty JSON", "{\n  \"name\": \"DB_PASSWORD\",\n  \"value\": \"" + pw + "\"\n}\n", []string{pw}, []string{`"value": "REDACTED"`}},
		{"env JSON one line", `{"name":"GITHUB_TOKEN","value":"` + tok + `"}`, []string{tok}, []string{`"name":"GITHUB_TOKEN"`}},
		{"env Go struct dump", "Env:[]EnvVar{EnvVar{Name:DB_PASSWORD,Value:" + pw + ",ValueFrom:nil,},}", []string{pw}, []string{"Name:DB_PASSWORD"}},
		{"env as shell", "export DB_PASSWORD=" + pw + "\nAWS_SECRET_ACCESS_KEY=" + awsSecret, []string{pw, awsSecret}, []string{"export DB_PASSWORD="}},
		{"HTTP header pair", `httpHeaders: [{name: Authorization, value: "token ` + tok + `"}]`, []string{tok}, []string{"name: Authorization"}},
		{"flag with =", "kube-thing --db-password=" + pw + " --v=2", []string{pw}, []string{"--db-password=REDACTED --v=2"}},
		{"flag with space", "cmd --token " + tok + " --v=2", []string{tok}, []string{"--token REDACTED --v=2"}},
		{"JSON args", `"args":["--api-key","` + tok + `","--v=2"]`, []string{tok}, []string{`"--v=2"`}},
		{"YAML args list", "args:\n- --token\n- " + tok + "\n- --v=2\n", []string{tok}, []string{"- --token", "- --v=2"}},
		{"YAML block scalar", "password: |\n  " + pw + "\n  " + pw2 + "\nuser: bob\n", []string{pw, pw2}, []string{"user: bob", "password: REDACTED"}},
		{"value on the next line", "token:\n  " + tok + "\nother: 1\n", []string{tok}, []string{"other: 1"}},
		{"list of tokens", "tokens:\n- " + tok + "\n- " + pw + "\nnext: 1\n", []string{tok, pw}, []string{"next: 1"}},
		{"last-applied single-quoted", `    kubectl.kubernetes.io/last-applied-configuration: '{"apiVersion":"v1","kind":"Secret","stringData":{"password":"` + pw + `"}}'`, []string{pw}, []string{"last-applied-configuration"}},
		{"last-applied escaped JSON", `"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"spec\":{\"env\":[{\"name\":\"DB_PASSWORD\",\"value\":\"` + pw + `\"}],\"args\":[\"--token=` + tok + `\"]}}"`,
			[]string{pw, tok}, []string{`\"name\":\"DB_PASSWORD\"`}},
		{"audit event of a Secret", `{"kind":"Event","verb":"create","requestObject":{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s"},"data":{"anything":"` + b64(pw) + `"}}}`,
			[]string{b64(pw)}, []string{`"anything":"` + redactedB64 + `"`, `"verb":"create"`}},
		{"Go struct dump", "&AuthConfig{Username:bob, Password:" + pw + ", Auth:, ServerAddress:r.example}", []string{pw}, []string{"Username:bob", "ServerAddress:r.example"}},
		{"properties", "db.password=" + pw + "\napi.key=" + tok, []string{pw, tok}, []string{"db.password="}},
		{"cookie and api key headers", "Cookie: session=" + tok + "\nX-Api-Key: " + pw, []string{tok, pw}, []string{"Cookie:", "X-Api-Key:"}},
		{"AWS keys", "[default]\naws_access_key_id = " + aws + "\naws_secret_access_key = " + awsSecret + "\n", []string{aws, awsSecret}, []string{"[default]", "aws_access_key_id = "}},
		{"AWS key in prose", "using credentials " + aws + " for s3", []string{aws}, []string{"for s3"}},
		{"GCP service account JSON", "{\n  \"type\": \"service_account\",\n  \"private_key_id\": \"0a1b2c\",\n  \"private_key\": " + string(jsonKey) + ",\n  \"client_email\": \"sa@p.iam.gserviceaccount.com\"\n}\n",
			keyBody(keys["ec"]), []string{`"client_email": "sa@p.iam.gserviceaccount.com"`, `"private_key_id": "0a1b2c"`}},
		{"Google API key", "maps key " + gcpKey, []string{gcpKey}, []string{"maps key"}},
		{"GitHub tokens", "git clone https://" + ghp + "@github.com/o/r and " + pat, []string{ghp, pat}, []string{"github.com/o/r"}},
		{"Slack tokens", "slack " + slack + " hook " + hook, []string{slack, hook[len("https://hooks.slack.com/services/"):]}, []string{"slack ", " hook "}},
		{"GitLab token", "PRIVATE-TOKEN: " + glpat, []string{glpat}, nil},
	}
}

func TestTextRedactsCredentialShapes(t *testing.T) {
	for _, c := range textCases(t) {
		t.Run(c.name, func(t *testing.T) {
			out, found := Text([]byte(c.in))
			if len(found) == 0 {
				t.Fatalf("nothing redacted in %q", c.in)
			}
			for _, s := range c.secret {
				if strings.Contains(string(out), s) {
					t.Errorf("%q still in output:\n%s", s, out)
				}
			}
			for _, s := range c.keep {
				if !strings.Contains(string(out), s) {
					t.Errorf("%q lost from output:\n%s", s, out)
				}
			}
			if !strings.Contains(string(out), Redacted) && !strings.Contains(string(out), redactedB64) {
				t.Errorf("no %s marker:\n%s", Redacted, out)
			}
			again, more := Text(out)
			if string(again) != string(out) || len(more) != 0 {
				t.Errorf("redacting twice changed the output again (%v):\n%s\n---\n%s", more, out, again)
			}
		})
	}
}

// What must stay: public material, references to where secrets are, the
// names of keys, and the identifiers a reader of a bug report follows. A
// report without them is a worse report.
func TestTextKeepsWhatIsNotSecret(t *testing.T) {
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	for _, c := range []struct{ name, in string }{
		{"public key PEM", pub},
		{"CA data", "certificate-authority-data: " + base64.StdEncoding.EncodeToString([]byte(pub))},
		{"client certificate data", "client-certificate-data: " + base64.StdEncoding.EncodeToString([]byte(pub))},
		{"shell references", "TOKEN=$(kubectl -n kindlab-node-bound-token create token token-demo --bound-object-kind Node)\nspec: {token: $TOKEN}\npassword: ${DB_PASSWORD}\n"},
		{"template reference", "password: {{ .Values.password }}\n"},
		{"key files by name", "cfssl gencert -ca=ca.pem -ca-key=ca-key.pem -config=ca-config.json\nPWD=/\n"},
		{"test results", "--- PASS: TestContainerList (0.00s)\necho \"PASS: PGP Type of encryption\"\n"},
		{"placeholders", "ansible-playbook -u <username> --private-key <example.pem> x.yaml\nIMAGE_PULL_CREDS=<username>:<password>\n"},
		{"boolean flags naming auth", "# pass --skip-decrypt-auth then this works\nkube-apiserver --anonymous-auth --enable-bootstrap-token-auth\n"},
		{"dotted words shaped like a bootstrap token", "plugin docker.metricscollector/1.0 and kubelet.configuration"},
		{"shell expansions", `curl ${GITHUB_OAUTH_TOKEN:+-H "Authorization: Bearer ${GITHUB_OAUTH_TOKEN:?}"} https://api.github.com`},
		{"env from a secretKeyRef", "env:\n- name: DB_PASSWORD\n  valueFrom:\n    secretKeyRef:\n      key: password\n      name: db\n- name: MODE\n  value: fast\n"},
		{"env value in a substitution", "- name: DB_PASSWORD\n  value: $(DB_PASSWORD_FROM_FILE)\n"},
		{"configMapKeyRef", "configMapKeyRef:\n  key: app.properties\n  name: cfg\n"},
		{"secretName", "secret:\n  secretName: foo\n  defaultMode: 420\n"},
		{"imagePullSecrets", "imagePullSecrets:\n- name: regcred\n"},
		{"Secret type and kind", "kind: Secret\ntype: kubernetes.io/dockerconfigjson\n"},
		{"service account token settings", "automountServiceAccountToken: false\nserviceAccountToken:\n  expirationSeconds: 3600\n  path: token\nserviceAccountName: default\n"},
		{"tolerations key", "tolerations:\n- key: node-role.kubernetes.io/control-plane\n  operator: Exists\n  effect: NoSchedule\n"},
		{"label selector key", `{"matchExpressions":[{"key":"app","operator":"In","values":["web"]}]}`},
		{"image digest", "image: localhost:5001/kindlab/agnhost:2.52-k8s-v1.31.14@sha256:9331c2bfe6a6d16ed04e86305c774c1fd2a6babed6905e8cd57f87ffb00799db"},
		{"object identity", "resourceVersion: \"123456\"\nuid: 8c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f\nmachineID: 3f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c\n"},
		{"bearer prose", "bearer tokens are checked by the apiserver; bearer authentication is on"},
		{"event names", `event="&Event{ObjectMeta:{bundle-iv-worker.18800c0a2b1e3f4d  default}"` + "\nname: client.17f4a3b2c1d0e9f8\n"},
		{"etcd cluster token", `{"initial-cluster-token":"etcd-cluster","initial-cluster-state":"new"}`},
		{"klog references", `I1130 1 controller.go:1] "Syncing" key="kube-system/coredns" secret="kube-system/bootstrap-token-abcdef"`},
		{"apiserver flags that are paths and modes", "--service-account-key-file=/etc/kubernetes/pki/sa.pub --tls-private-key-file=/etc/kubernetes/pki/apiserver.key --kubelet-client-key=/etc/kubernetes/pki/apiserver-kubelet-client.key --authorization-mode=Node,RBAC --enable-bootstrap-token-auth=true --token-auth-file=/etc/tokens.csv"},
		{"kubeadm token ttl", "--token-ttl=24h0m0s --discovery-token-unsafe-skip-ca-verification"},
		{"files where secrets are", `{"passwordFile":"/etc/pw","tokenFile":"/var/run/secrets/kubernetes.io/serviceaccount/token"}`},
		{"kubelet authorization config", "authorization:\n  mode: Webhook\nauthentication:\n  anonymous:\n    enabled: false\n"},
		{"docker auth without secrets", `{"auths":{"r.example":{"username":"bob","email":"bob@example.com"}}}`},
		{"map under a secret key", "auth:\n  username: bob\n"},
		{"counts and ports", "maxTokens: 100\ntokenLimit: 64\nsecretPort: 8443\n"},
		{"user without password in URL", "DOCKER_HOST=ssh://me@my-server and https://registry.k8s.io/v2/ and http://[::1]:8080/healthz"},
		{"base64 of plain text", "data: " + b64("hello, this is only a configuration file with settings=1")},
		{"error messages", `E1130 1 token.go:1] "Failed to get token" err="secret \"foo\" not found" secret name: foo-token`},
		{"values already redacted", "password: REDACTED\ntoken: REDACTED(JWT)\n"},
		{"kubelet volume event", `MountVolume.SetUp failed for volume "token" : secret "s" not found`},
		{"flag value then positional args", "args:\n- --token\n- REDACTED\n- serve\n- ./data\n"},
		{"env named like a secret without value", "- name: token\n  mountPath: /var/run/token\n- name: other\n  value: keep-me\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, found := Text([]byte(c.in))
			if string(out) != c.in || len(found) != 0 {
				t.Errorf("changed (%v):\n%s\nto:\n%s", found, c.in, out)
			}
		})
	}
}

func TestSecretKeyNamesBySecretWord(t *testing.T) {
	for name, want := range map[string]bool{
		"password": true, "DB_PASSWORD": true, "dbPassword": true, "db-passwd": true, "passphrase": true,
		"token": true, "identitytoken": true, "registrytoken": true, "BearerToken": true, "id-token": true, "refresh_token": true,
		"auth": true, "oauth": true, "secret": true, "clientSecret": true, "client_secret": true, "credentials": true,
		"apiKey": true, "api_key": true, "APIKey": true, "x-api-key": true, "private_key": true, "privateKey": true,
		"client-key-data": true, "tls.key": true, "AWS_SECRET_ACCESS_KEY": true, "certificateKey": true, "--certificate-key": true,
		"--db-password": true, "Authorization": true, "Cookie": true, "password2": true, "tokenValue": true,
		"key": false, "keys": false, "keyRef": false, "secretKeyRef": false, "configMapKeyRef": false, "secretName": false,
		"tokenFile": false, "passwordFile": false, "--token-auth-file": false, "secretRef": false, "tokenExpirationSeconds": false,
		"automountServiceAccountToken": true, "serviceAccountName": false, "AWS_ACCESS_KEY_ID": false, "private_key_id": false,
		"initial-cluster-token": false, "--authorization-mode": false, "authentication": false, "bypass": false,
		"monkey": false, "keycloak": false, "DB_PASS": true, "PASS": false, "hotkey": false, "token-ttl": false, "kind": false, "value": false, "name": false,
		"--service-account-key-file": false, "HTTP_PROXY": false, "PWD": true,
	} {
		if got := secretKey(name); got != want {
			t.Errorf("secretKey(%q) = %t, want %t", name, got, want)
		}
	}
}

func wrap(s string, n int, sep string) string {
	var parts []string
	for len(s) > n {
		parts = append(parts, s[:n])
		s = s[n:]
	}
	return strings.Join(append(parts, s), sep)
}

func TestObjectRedactsSecretValuesKeepsShape(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{
			"name": "s", "namespace": "n",
			"annotations":   map[string]any{LastApplied: `{"data":{"k":"c2VjcmV0"}}`},
			"managedFields": []any{map[string]any{"manager": "kubectl"}},
		},
		"type":       "Opaque",
		"data":       map[string]any{"k": "c2VjcmV0"},
		"stringData": map[string]any{"p": "secret"},
	}}
	found := Object(u)
	if found["Secret value"] != 3 {
		t.Errorf("redacted %v, want 3 Secret values", found)
	}
	b, _ := json.Marshal(u.Object)
	for _, s := range []string{"c2VjcmV0", `"secret"`, "managedFields"} {
		if strings.Contains(string(b), s) {
			t.Errorf("%s left in %s", s, b)
		}
	}
	for _, s := range []string{`"k":"` + redactedB64 + `"`, `"p":"REDACTED"`, RedactedAnnotation, `"type":"Opaque"`, `{\"data\":{\"k\":\"` + redactedB64 + `\"}}`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("%s missing from %s", s, b)
		}
	}
	cm := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "c"}, "data": map[string]any{"k": "v"}}}
	if n := total(Object(cm)); n != 0 || cm.Object["data"].(map[string]any)["k"] != "v" || len(cm.GetAnnotations()) != 0 {
		t.Errorf("a plain ConfigMap was touched: %v", cm.Object)
	}
}

// objectCase is an object of some kind holding a planted value, as the
// apiserver returns it.
type objectCase struct {
	name   string
	yaml   string
	secret []string
	keep   []string
}

func TestObjectRedactsEveryKind(t *testing.T) {
	pw, tok := "pw"+alnum(t, 12), "tk"+alnum(t, 20)
	auth := b64("bob:" + pw)
	docker := `{"auths":{"r.example:5000":{"auth":"` + auth + `"}}}`
	deploy := func(env string) string {
		return `apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: ns1, uid: 8c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f, resourceVersion: "4711"}
spec:
  template:
    spec:
      automountServiceAccountToken: false
      containers:
      - name: c
        image: localhost:5001/app@sha256:9331c2bfe6a6d16ed04e86305c774c1fd2a6babed6905e8cd57f87ffb00799db
        args: ["--db-password=` + pw + `", "--token", "` + tok + `", "--v=2"]
        env:
` + env + `
        - {name: MODE, value: fast}
        - name: FROM_CM
          valueFrom: {configMapKeyRef: {key: mode, name: cfg}}
        - name: API_TOKEN
          valueFrom: {secretKeyRef: {key: token, name: api}}
      volumes:
      - {name: s, secret: {secretName: foo}}
`
	}
	last, _ := yaml.YAMLToJSON([]byte(deploy("        - {name: DB_PASSWORD, value: " + pw + "}")))
	lastJSON, _ := json.Marshal(string(last))
	for _, c := range []objectCase{
		{"ConfigMap holding a docker config", `apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data:
  config.json: '` + docker + `'
  .dockerconfigjson: ` + b64(docker) + `
  mode: fast
`, []string{auth, b64(docker)}, []string{`r.example:5000`, "mode: fast", ".dockerconfigjson: REDACTED(base64"}},
		{"Deployment with env passwords and last-applied", strings.Replace(deploy("        - {name: DB_PASSWORD, value: "+pw+"}"), "resourceVersion: \"4711\"}", "resourceVersion: \"4711\", annotations: {kubectl.kubernetes.io/last-applied-configuration: "+string(lastJSON)+"}}", 1),
			[]string{pw, tok}, []string{"name: DB_PASSWORD", "value: fast", "key: mode", "key: token", "secretName: foo", "automountServiceAccountToken: false",
				"sha256:9331c2bfe6a6d16ed04e86305c774c1fd2a6babed6905e8cd57f87ffb00799db", `resourceVersion: "4711"`, "uid: 8c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f", "--v=2", "--db-password=REDACTED", `"name":"DB_PASSWORD","value":"REDACTED"`}},
		{"Pod with a header and a proxy", `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    env:
    - {name: HTTPS_PROXY, value: "http://bob:` + pw + `@proxy:3128"}
    readinessProbe:
      httpGet:
        httpHeaders:
        - {name: Authorization, value: "Bearer ` + tok + `"}
`, []string{pw, tok}, []string{"http://REDACTED@proxy:3128", "name: Authorization"}},
		{"Secret list item in a custom object", `apiVersion: example.com/v1
kind: Backup
metadata: {name: b}
spec:
  items:
  - {apiVersion: v1, kind: Secret, metadata: {name: s}, data: {anything: ` + b64(pw) + `}}
  settings: {endpoint: "https://s3.example", secretAccessKey: ` + tok + `, region: eu}
`, []string{b64(pw), tok}, []string{"anything: " + redactedB64, "region: eu", "endpoint: https://s3.example"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var m map[string]any
			if err := yaml.Unmarshal([]byte(c.yaml), &m); err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{Object: m}
			found := Object(u)
			y, err := yaml.Marshal(u.Object)
			if err != nil {
				t.Fatal(err)
			}
			// The bundle writes objects through the text rules too.
			out, more := Text(y)
			for _, s := range c.secret {
				if strings.Contains(string(out), s) {
					t.Errorf("%q left (found %v, then %v):\n%s", s, found, more, out)
				}
				if strings.Contains(string(y), s) {
					t.Errorf("%q left by Object, only the text rules caught it (found %v):\n%s", s, found, y)
				}
			}
			for _, s := range c.keep {
				if !strings.Contains(string(out), s) {
					t.Errorf("%q lost:\n%s", s, out)
				}
			}
			if u.GetAnnotations()[RedactedAnnotation] == "" {
				t.Errorf("no %s annotation", RedactedAnnotation)
			}
			// Still an object of its kind: it decodes again.
			var back map[string]any
			if err := yaml.Unmarshal(out, &back); err != nil || back["kind"] != m["kind"] {
				t.Errorf("redacted object does not decode (%v):\n%s", err, out)
			}
		})
	}
}

// A line longer than MaxLine is left out whole and the lines after it are
// still redacted; memory stays bounded by the line limit, not the input.
func TestStreamBoundsMemoryPerLine(t *testing.T) {
	const huge = 256 << 20
	pw := "pw" + alnum(t, 12)
	src := io.MultiReader(
		strings.NewReader("password: "+pw+"\n"),
		io.LimitReader(repeatReader('a'), huge),
		strings.NewReader("\ntoken: "+pw+"\nlast line without newline"),
	)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var out bytes.Buffer
	found, err := Stream(&out, src)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Errorf("allocated %d MiB for a %d MiB line", alloc>>20, huge>>20)
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) != 4 || lines[0] != "password: REDACTED" || !strings.HasPrefix(lines[1], "REDACTED(line of 268435456 bytes left out") ||
		lines[2] != "token: REDACTED" || lines[3] != "last line without newline" {
		t.Errorf("output %.300q", out.String())
	}
	if found["line too long to check"] != 1 || found["credential value"] != 2 {
		t.Errorf("found %v", found)
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}
