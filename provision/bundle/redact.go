package bundle

import (
	"bytes"
	"encoding/base64"
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Redacted replaces a secret value. In a Secret's data it is base64 of
// itself, so the object still decodes and applies.
const Redacted = "REDACTED"

// RedactedAnnotation marks an object whose values kindlab replaced.
const RedactedAnnotation = "kindlab.dev/redacted"

var redactedB64 = base64.StdEncoding.EncodeToString([]byte(Redacted))

// A bundle goes into bug trackers, so everything in it passes through these
// patterns. They are deliberately a deny list of credential shapes, not an
// allow list of safe text: kind's logs are free text from many components.
// Each pattern has a literal most input does not contain, which keeps the
// regexp engine's scan of tens of megabytes of logs fast.
var (
	// A PEM private key block, terminated, in real or JSON-escaped lines.
	pemKey = regexp.MustCompile(`-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----(?:[A-Za-z0-9+/=\s:,.-]|\\[nrt])*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----`)
	// What is left of a block a log line cut short: base64 runs after BEGIN.
	pemKeyCut = regexp.MustCompile(`-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----(?:(?:\\[nrt]|\s)+[A-Za-z0-9+/=]+)*`)
	// base64 of "-----BEGIN ": a PEM block inside a kubeconfig's
	// client-key-data or a Secret; decoded to tell keys from certificates.
	// Wrapped lines (base64 -w 76) are followed too.
	pemB64 = regexp.MustCompile(`LS0tLS1CRUdJTi[A-Za-z0-9+/=]+(?:\r?\n[ \t]*[A-Za-z0-9+/]{16,}={0,2})*`)
	// A JWT (service-account tokens, OIDC id tokens): header and claims are
	// base64url JSON objects, so both start with eyJ.
	jwt = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)
	// An Authorization header value, or prose that quotes one.
	bearer = regexp.MustCompile(`(?i)(bearer\s+)([A-Za-z0-9._~+/-]{8,}=*)`)
	// A kubeadm bootstrap token (token-id.token-secret) in free text.
	// Event names have the same shape (worker.18800c0a2b1e3f4d) with a hex
	// suffix, so an all-hex secret is left to the rules that see its
	// context (--token, token:), which also catch kind's fixed
	// abcdef.0123456789abcdef.
	bootstrap = regexp.MustCompile(`\b[a-z0-9]{6}\.[a-z0-9]{16}\b`)
	hex16     = regexp.MustCompile(`\.[0-9a-f]{16}$`)
	// A credential as a key and value: kubeconfig users, kubeadm config,
	// JSON from any component. A value starting with $ is a shell or
	// environment reference (TOKEN=$(kubectl create token …)), not a secret.
	// The key must be whole: etcd's initial-cluster-token is a name.
	credKV = regexp.MustCompile(`(?i)((?:^|[^\w.-])["']?(?:token|password|passwd|client-key-data|certificate-key|certificatekey|id-token|refresh-token|access-token|access_token|refresh_token|client-secret|client_secret|secret-key|secret_key)["']?\s*[:=]\s*)("[^"\s$][^"\s]{7,}"|'[^'\s$][^'\s]{7,}'|[^\s"',{}\[\]$][^\s"',{}\[\]]{7,})`)
	// The same as command-line flags: kubeadm join --token, --certificate-key.
	credFlag = regexp.MustCompile(`(--(?:token|certificate-key|password)(?:=|\s+))([^\s"']{8,})`)
)

// Text replaces credentials in b and says what it replaced, by kind.
func Text(b []byte) ([]byte, map[string]int) {
	found := map[string]int{}
	b = pemKey.ReplaceAllFunc(b, func(m []byte) []byte {
		found["private key (PEM)"]++
		return []byte("[" + Redacted + " " + string(pemKey.FindSubmatch(m)[1]) + "PRIVATE KEY]")
	})
	b = pemKeyCut.ReplaceAllFunc(b, func(m []byte) []byte {
		found["private key (PEM)"]++
		return []byte("[" + Redacted + " " + string(pemKeyCut.FindSubmatch(m)[1]) + "PRIVATE KEY]")
	})
	if bytes.Contains(b, []byte("LS0tLS1CRUdJTi")) {
		b = pemB64.ReplaceAllFunc(b, func(m []byte) []byte {
			if !b64PrivateKey(m) {
				return m
			}
			found["private key (base64 PEM)"]++
			return []byte("[" + Redacted + " base64 PRIVATE KEY]")
		})
	}
	b = jwt.ReplaceAllFunc(b, func([]byte) []byte {
		found["token (JWT)"]++
		return []byte("[" + Redacted + " JWT]")
	})
	b = bearer.ReplaceAllFunc(b, func(m []byte) []byte {
		sub := bearer.FindSubmatch(m)
		if bytes.HasPrefix(sub[2], []byte("["+Redacted)) {
			return m
		}
		found["bearer token"]++
		return append(append([]byte{}, sub[1]...), "["+Redacted+"]"...)
	})
	b = bootstrap.ReplaceAllFunc(b, func(m []byte) []byte {
		if hex16.Match(m) {
			return m
		}
		found["bootstrap token"]++
		return []byte("[" + Redacted + " bootstrap token]")
	})
	b = credKV.ReplaceAllFunc(b, func(m []byte) []byte {
		sub := credKV.FindSubmatch(m)
		v := sub[2]
		if bytes.Contains(v, []byte(Redacted)) {
			return m
		}
		found["credential value"]++
		r := "[" + Redacted + "]"
		if q := v[0]; q == '"' || q == '\'' {
			r = string(q) + r + string(q)
		}
		return append(append([]byte{}, sub[1]...), r...)
	})
	b = credFlag.ReplaceAllFunc(b, func(m []byte) []byte {
		sub := credFlag.FindSubmatch(m)
		if bytes.Contains(sub[2], []byte(Redacted)) {
			return m
		}
		found["credential flag"]++
		return append(append([]byte{}, sub[1]...), "["+Redacted+"]"...)
	})
	return b, found
}

func b64PrivateKey(m []byte) bool {
	s := strings.TrimRight(strings.Join(strings.Fields(string(m)), ""), "=")
	// Any prefix of whole 4-character groups decodes; a key's marker is in
	// the first few dozen bytes.
	n := min(len(s), 256) / 4 * 4
	dec, err := base64.StdEncoding.DecodeString(s[:n])
	if err != nil {
		return false
	}
	first, _, _ := bytes.Cut(dec, []byte("\n"))
	return bytes.Contains(first, []byte("PRIVATE KEY"))
}

// Object removes what an object dump must not carry or does not need: a
// Secret's values (keys stay, so the shape is visible), the last-applied
// annotation that repeats them, and managed fields (noise).
func Object(u *unstructured.Unstructured) (redacted int) {
	unstructured.RemoveNestedField(u.Object, "metadata", "managedFields")
	if u.GetKind() != "Secret" || u.GroupVersionKind().Group != "" {
		return 0
	}
	for _, field := range []string{"data", "stringData"} {
		m, ok := u.Object[field].(map[string]any)
		if !ok {
			continue
		}
		for k := range m {
			if field == "data" {
				m[k] = redactedB64
			} else {
				m[k] = Redacted
			}
			redacted++
		}
	}
	ann := u.GetAnnotations()
	if _, ok := ann["kubectl.kubernetes.io/last-applied-configuration"]; ok {
		delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
		redacted++
	}
	if redacted > 0 {
		if ann == nil {
			ann = map[string]string{}
		}
		ann[RedactedAnnotation] = "values of data and stringData replaced by kindlab bundle"
		u.SetAnnotations(ann)
	}
	return redacted
}

// redactions turns Text's counts into manifest entries for one file.
func redactions(file string, found map[string]int) []Redaction {
	var out []Redaction
	for what, n := range found {
		out = append(out, Redaction{File: file, What: what, Count: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].What < out[j].What })
	return out
}
