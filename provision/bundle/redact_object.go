package bundle

import (
	"bytes"
	"encoding/json"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// LastApplied is the annotation kubectl apply keeps the applied object in,
// as a JSON string: for a Secret it holds the stringData, for a Deployment
// its env, for any kind whatever the manifest held.
const LastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// maxJSONDepth bounds JSON found inside strings inside JSON: an annotation
// holding an object holding a ConfigMap holding a docker config is four.
const maxJSONDepth = 8

// Object redacts an object of any kind in place and says what it replaced,
// by rule name (see Text). It knows the shapes the text rules cannot see
// across a serialization:
//
//   - every core/v1 Secret's data and stringData values (the keys stay, so
//     the shape is visible; data becomes base64 of REDACTED so the object
//     still decodes), wherever the Secret is: the object, List items, the
//     last-applied annotation, an audit event;
//   - values under keys naming a secret (secretKey), and lists of strings
//     under them;
//   - env and header {name, value} pairs whose name names a secret;
//   - args lists with a secret flag and its value as two items;
//   - JSON inside strings (the last-applied annotation of every kind, a
//     docker config.json in a ConfigMap), parsed, redacted and written
//     back when anything in it was replaced;
//   - every other string through the text rules.
//
// Managed fields are dropped (noise). An object with a replaced value gets
// RedactedAnnotation.
func Object(u *unstructured.Unstructured) map[string]int {
	unstructured.RemoveNestedField(u.Object, "metadata", "managedFields")
	found := map[string]int{}
	if redactionOff {
		return found
	}
	u.Object = walk(u.Object, found, 0).(map[string]any)
	if total(found) > 0 {
		ann := u.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[RedactedAnnotation] = "secret values replaced by kindlab bundle"
		u.SetAnnotations(ann)
	}
	return found
}

func total(found map[string]int) int {
	n := 0
	for _, v := range found {
		n += v
	}
	return n
}

// walk redacts v and returns it (a string is replaced, maps and lists are
// changed in place).
func walk(v any, found map[string]int, depth int) any {
	switch x := v.(type) {
	case map[string]any:
		done := map[string]bool{}
		if secretObject(x) {
			redactSecretData(x, found, done)
			secretLastApplied(x, found, depth)
		}
		if name, ok := x["name"].(string); ok && secretKey(name) {
			if val, ok := x["value"].(string); ok && !plainValue(val) {
				x["value"] = Redacted
				found["env value"]++
				done["value"] = true
			}
		}
		for k, val := range x {
			if done[k] {
				continue
			}
			if secretKey(k) {
				switch sv := val.(type) {
				case string:
					if !plainValue(sv) {
						x[k] = Redacted
						found["credential value"]++
						continue
					}
				case []any:
					for i, item := range sv {
						if s, ok := item.(string); ok && !plainValue(s) {
							sv[i] = Redacted
							found["credential value"]++
						}
					}
				}
			}
			x[k] = walk(val, found, depth)
		}
		return x
	case []any:
		for i := 0; i+1 < len(x); i++ {
			flag, ok := x[i].(string)
			next, ok2 := x[i+1].(string)
			if !ok || !ok2 || !strings.HasPrefix(flag, "-") || strings.Contains(flag, "=") || strings.ContainsAny(flag, " \t") {
				continue
			}
			if secretKey(flag) && !strings.HasPrefix(next, "-") && !plainValue(next) {
				x[i+1] = Redacted
				found["credential flag"]++
			}
		}
		for i := range x {
			x[i] = walk(x[i], found, depth)
		}
		return x
	case string:
		return redactString(x, found, depth)
	}
	return v
}

// redactSecretData replaces the values of a Secret's data and stringData.
func redactSecretData(x map[string]any, found map[string]int, done map[string]bool) {
	for _, field := range []string{"data", "stringData"} {
		m, ok := x[field].(map[string]any)
		if !ok {
			continue
		}
		for k, val := range m {
			if s, ok := val.(string); ok && (s == redactedB64 || s == Redacted) {
				continue
			}
			if field == "data" {
				m[k] = redactedB64
			} else {
				m[k] = Redacted
			}
			found["Secret value"]++
		}
		done[field] = true
	}
}

// secretLastApplied redacts a Secret's last-applied annotation as a
// Secret, even when what kubectl kept there lacks kind (older kubectl, a
// hand-made annotation): it is this Secret's data either way.
func secretLastApplied(x map[string]any, found map[string]int, depth int) {
	meta, _ := x["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	s, ok := ann[LastApplied].(string)
	if !ok {
		return
	}
	v, ok := decodeJSON([]byte(s))
	m, isMap := v.(map[string]any)
	if !ok || !isMap {
		// Not JSON: it cannot be told apart, so it goes.
		delete(ann, LastApplied)
		found["Secret value"]++
		return
	}
	before := total(found)
	redactSecretData(m, found, map[string]bool{})
	if total(found) == before {
		return
	}
	if b, ok := encodeJSON(m); ok {
		ann[LastApplied] = string(b)
	} else {
		delete(ann, LastApplied)
	}
}

// secretObject is a core/v1 Secret (as an object, a List item, or JSON
// inside a string).
func secretObject(m map[string]any) bool {
	return m["kind"] == "Secret" && m["apiVersion"] == "v1"
}

// redactString looks into JSON held in a string, then applies the text
// rules to what is left.
func redactString(s string, found map[string]int, depth int) string {
	if t := strings.TrimSpace(s); depth < maxJSONDepth && len(t) > 1 && (t[0] == '{' && t[len(t)-1] == '}' || t[0] == '[' && t[len(t)-1] == ']') {
		if v, ok := decodeJSON([]byte(t)); ok {
			before := total(found)
			v = walk(v, found, depth+1)
			if total(found) > before {
				if b, ok := encodeJSON(v); ok {
					s = string(reindent(b, t))
				} else {
					// Something was secret and cannot be written back.
					found["credential value"]++
					return Redacted
				}
			}
		}
	}
	// The JSON was walked already: the text rules need not parse it again.
	sc := newScrubber()
	sc.noJSON = true
	var out bytes.Buffer
	sc.stream(&out, strings.NewReader(s))
	merge(found, sc.found)
	return out.String()
}

// reindent gives JSON written back the indentation of the original when
// that was pretty-printed (a service-account key file, a docker config.json
// as docker writes it), so a reader sees the file as it was.
func reindent(b []byte, orig string) []byte {
	lines := strings.Split(orig, "\n")
	if len(lines) < 2 {
		return b
	}
	second := lines[1]
	indent := second[:len(second)-len(strings.TrimLeft(second, " \t"))]
	if indent == "" {
		return b
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", indent); err != nil {
		return b
	}
	return out.Bytes()
}

func decodeJSON(b []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // numbers come back as written
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	return v, true
}

func encodeJSON(v any) ([]byte, bool) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as kubectl writes it: & < > stay
	if err := enc.Encode(v); err != nil {
		return nil, false
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), true
}

// redactJSONLine redacts a log line that is a JSON document holding a
// Secret (an audit event of a Secret request, a JSON log of an object):
// its data has keys of any name, which only the structure tells apart.
func redactJSONLine(s *scrubber, l []byte, n *int) []byte {
	if s.depth > 0 || s.noJSON || !bytes.Contains(l, []byte(`Secret\"`)) && !bytes.Contains(l, []byte(`"Secret"`)) {
		return l
	}
	t := bytes.TrimSpace(l)
	if len(t) < 2 || t[0] != '{' || t[len(t)-1] != '}' {
		return l
	}
	v, ok := decodeJSON(t)
	if !ok {
		return l
	}
	found := map[string]int{}
	v = walk(v, found, 0)
	if total(found) == 0 {
		return l
	}
	b, ok := encodeJSON(v)
	if !ok {
		return l
	}
	*n += found["Secret value"]
	for k, c := range found {
		if k != "Secret value" {
			s.found[k] += c
		}
	}
	return cat(l[:indentOf(l)], b)
}
