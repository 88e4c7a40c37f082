package bundle

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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

func TestTextRedactsCredentialShapes(t *testing.T) {
	keys := keyPEMs(t)
	jsonKey, _ := json.Marshal(string(keys["ec"]))
	jwtTok := "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMiLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
	cases := []struct {
		name   string
		in     string
		secret []string
		keep   []string
	}{
		{"PEM in a log", "I0101 kubeadm wrote\n" + string(keys["rsa"]) + "done\n", keyBody(keys["rsa"]), []string{"I0101 kubeadm wrote", "done"}},
		{"PKCS8 PEM", string(keys["pkcs8"]), keyBody(keys["pkcs8"]), nil},
		{"PEM JSON-escaped", `{"key":` + string(jsonKey) + `,"n":1}`, keyBody(keys["ec"]), []string{`"n":1`}},
		{"PEM cut short", "key: " + strings.Join(strings.Split(string(keys["rsa"]), "\n")[:4], "\n"), keyBody(keys["rsa"])[:3], nil},
		{"kubeconfig client-key-data", "users:\n- name: u\n  user:\n    client-key-data: " + base64.StdEncoding.EncodeToString(keys["ec"]) + "\n",
			[]string{base64.StdEncoding.EncodeToString(keys["ec"])}, []string{"client-key-data:"}},
		{"base64 PEM wrapped", "data: |\n  " + wrap(base64.StdEncoding.EncodeToString(keys["rsa"]), 76, "\n  ") + "\nnext: 1\n",
			strings.Split(wrap(base64.StdEncoding.EncodeToString(keys["rsa"]), 76, "\n"), "\n")[1:20], []string{"next: 1"}},
		{"JWT", "token issued: " + jwtTok + " for sa", []string{jwtTok, "c2lnbmF0dXJlLWJ5dGVzLWhlcmU"}, []string{"token issued:", "for sa"}},
		{"bearer header", `GET /api Authorization: Bearer 0123456789abcdef0123456789abcdef`, []string{"0123456789abcdef0123456789abcdef"}, []string{"Authorization: Bearer"}},
		{"kubeadm join", "kubeadm join 172.18.0.3:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:1234 --certificate-key 0f2a4b6c8d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80910a",
			[]string{"abcdef.0123456789abcdef", "0123456789abcdef", "0f2a4b6c8d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80910a"}, []string{"--discovery-token-ca-cert-hash sha256:1234"}},
		{"bootstrap token in prose", "created bootstrap token x7k2pq.9zt4m1w8r5v3n6b0 for joining", []string{"x7k2pq.9zt4m1w8r5v3n6b0"}, []string{"created bootstrap token", "for joining"}},
		{"kind's token in kubeadm config", "bootstrapTokens:\n- token: abcdef.0123456789abcdef\n", []string{"abcdef.0123456789abcdef"}, []string{"bootstrapTokens:"}},
		{"kubeconfig token and password", "user:\n  token: s3cr3t-static-token\n  password: \"hunter2hunter2\"\n", []string{"s3cr3t-static-token", "hunter2hunter2"}, []string{"token:", "password:"}},
		{"JSON credentials", `{"access_token":"ya29.a0AfH6SMB-secret","client_secret":"GOCSPX-abcdefgh"}`, []string{"ya29.a0AfH6SMB-secret", "GOCSPX-abcdefgh"}, []string{`"access_token":"`}},
	}
	for _, c := range cases {
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
			if !strings.Contains(string(out), Redacted) {
				t.Errorf("no %s marker:\n%s", Redacted, out)
			}
			again, more := Text(out)
			if string(again) != string(out) || len(more) != 0 {
				t.Errorf("redacting twice changed the output again (%v):\n%s", more, again)
			}
		})
	}
}

// Public material and the labs' own text stay: a report without the CA
// certificate or the instructions is a worse report.
func TestTextKeepsWhatIsNotSecret(t *testing.T) {
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	for _, in := range []string{
		pub,
		"certificate-authority-data: " + base64.StdEncoding.EncodeToString([]byte(pub)),
		"TOKEN=$(kubectl -n kindlab-node-bound-token create token token-demo --bound-object-kind Node)\nspec: {token: $TOKEN}\n",
		"automountServiceAccountToken: false\nserviceAccountToken:\n  expirationSeconds: 3600\n",
		"image: localhost:5001/kindlab/agnhost:2.52-k8s-v1.31.14@sha256:9331c2bfe6a6d16ed04e86305c774c1fd2a6babed6905e8cd57f87ffb00799db",
		"bearer tokens are checked by the apiserver",
		// Event names look like bootstrap tokens; etcd's cluster token is a name.
		`event="&Event{ObjectMeta:{bundle-iv-worker.18800c0a2b1e3f4d  default}"` + "\nname: client.17f4a3b2c1d0e9f8\n",
		`{"initial-cluster-token":"etcd-cluster","initial-cluster-state":"new"}`,
	} {
		out, found := Text([]byte(in))
		if string(out) != in || len(found) != 0 {
			t.Errorf("changed %q to %q (%v)", in, out, found)
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
			"annotations":   map[string]any{"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"k":"c2VjcmV0"}}`},
			"managedFields": []any{map[string]any{"manager": "kubectl"}},
		},
		"type":       "Opaque",
		"data":       map[string]any{"k": "c2VjcmV0"},
		"stringData": map[string]any{"p": "secret"},
	}}
	if n := Object(u); n != 3 {
		t.Errorf("redacted %d values, want 3", n)
	}
	b, _ := json.Marshal(u.Object)
	for _, s := range []string{"c2VjcmV0", `"secret"`, "last-applied", "managedFields"} {
		if strings.Contains(string(b), s) {
			t.Errorf("%s left in %s", s, b)
		}
	}
	for _, s := range []string{`"k":"` + redactedB64 + `"`, `"p":"REDACTED"`, RedactedAnnotation, `"type":"Opaque"`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("%s missing from %s", s, b)
		}
	}
	cm := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "c"}, "data": map[string]any{"k": "v"}}}
	if n := Object(cm); n != 0 || cm.Object["data"].(map[string]any)["k"] != "v" {
		t.Errorf("a ConfigMap's data was touched: %v", cm.Object)
	}
}
