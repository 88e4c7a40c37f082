// Package apparmor rewrites manifests that set AppArmor through the
// annotations deprecated in Kubernetes 1.30
// (container.apparmor.security.beta.kubernetes.io/<container>) to the
// securityContext.appArmorProfile field that is GA in 1.31.
package apparmor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	// The maintained yaml.v3 (same API): its encoder can keep a file's
	// compact list indentation (CompactSeqIndent).
	"go.yaml.in/yaml/v3"
)

// AnnotationPrefix starts every deprecated per-container annotation.
const AnnotationPrefix = "container.apparmor.security.beta.kubernetes.io/"

// Profile is a securityContext.appArmorProfile.
type Profile struct {
	Type             string
	LocalhostProfile string
}

// ParseAnnotation turns an annotation value into the field's profile.
func ParseAnnotation(value string) (Profile, error) {
	switch {
	case value == "runtime/default":
		return Profile{Type: "RuntimeDefault"}, nil
	case value == "unconfined":
		return Profile{Type: "Unconfined"}, nil
	case strings.HasPrefix(value, "localhost/"):
		p := strings.TrimPrefix(value, "localhost/")
		if strings.TrimSpace(p) == "" {
			return Profile{}, fmt.Errorf("bad value %q: localhost/ needs a profile name", value)
		}
		return Profile{Type: "Localhost", LocalhostProfile: p}, nil
	}
	return Profile{}, fmt.Errorf("bad value %q (want runtime/default, localhost/<profile> or unconfined)", value)
}

// Migrate rewrites every deprecated AppArmor annotation in a (multi-document)
// YAML stream, or a JSON manifest, to the field, on Pods and on the pod
// templates of workload controllers. It returns the input unchanged when
// there is nothing to migrate, and how many annotations it rewrote.
//
// The output is in the input's format: JSON for JSON (key order and the
// input's indentation kept, so kubectl reads it back), YAML for YAML
// (documents, their order, comments, key order and the list indentation
// style kept as far as the YAML encoder allows).
func Migrate(data []byte) ([]byte, int, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	total := 0
	for i := 1; ; i++ {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, 0, fmt.Errorf("document %d: %w", i, err)
		}
		n, err := migrateDocument(&doc)
		if err != nil {
			return nil, 0, fmt.Errorf("document %d%s: %w", i, describe(&doc), err)
		}
		total += n
		docs = append(docs, &doc)
	}
	if total == 0 {
		return data, 0, nil
	}
	if isJSON(data) {
		out, err := encodeJSON(docs, data)
		if err != nil {
			return nil, 0, err
		}
		return out, total, nil
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(yamlIndent(data))
	if compactLists(data) {
		enc.CompactSeqIndent()
	}
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return nil, 0, fmt.Errorf("encode: %w", err)
		}
	}
	if err := enc.Close(); err != nil {
		return nil, 0, fmt.Errorf("encode: %w", err)
	}
	return out.Bytes(), total, nil
}

// isJSON says whether a manifest is JSON: its first non-blank byte opens
// an object or an array (a YAML manifest starts with a key, a comment or ---).
func isJSON(data []byte) bool {
	t := bytes.TrimLeft(data, " \t\r\n\ufeff")
	return len(t) > 0 && (t[0] == '{' || t[0] == '[')
}

// encodeJSON writes the documents as JSON, keeping key order, with the
// input's indentation (one line stays one line) and its final newline.
func encodeJSON(docs []*yaml.Node, in []byte) ([]byte, error) {
	indent := jsonIndent(in)
	var out bytes.Buffer
	for i, d := range docs {
		var compact bytes.Buffer
		if err := writeJSON(&compact, content(d)); err != nil {
			return nil, fmt.Errorf("document %d: encode JSON: %w", i+1, err)
		}
		if i > 0 {
			out.WriteByte('\n')
		}
		if indent == "" {
			out.Write(compact.Bytes())
		} else if err := json.Indent(&out, compact.Bytes(), "", indent); err != nil {
			return nil, fmt.Errorf("document %d: encode JSON: %w", i+1, err)
		}
	}
	if bytes.HasSuffix(bytes.TrimRight(in, " \t\r"), []byte("\n")) {
		out.WriteByte('\n')
	}
	return out.Bytes(), nil
}

// writeJSON writes a node as compact JSON. Scalars keep what they were in
// the JSON they were read from: strings stay strings, numbers, booleans and
// null stay literals.
func writeJSON(w *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.MappingNode:
		w.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				w.WriteByte(',')
			}
			if err := writeJSONString(w, n.Content[i].Value); err != nil {
				return err
			}
			w.WriteByte(':')
			if err := writeJSON(w, n.Content[i+1]); err != nil {
				return err
			}
		}
		w.WriteByte('}')
	case yaml.SequenceNode:
		w.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				w.WriteByte(',')
			}
			if err := writeJSON(w, c); err != nil {
				return err
			}
		}
		w.WriteByte(']')
	case yaml.AliasNode:
		return writeJSON(w, n.Alias)
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			w.WriteString("null")
		case "!!bool", "!!int", "!!float":
			if json.Valid([]byte(n.Value)) {
				w.WriteString(n.Value)
				return nil
			}
			return writeJSONString(w, n.Value)
		default:
			return writeJSONString(w, n.Value)
		}
	default:
		return fmt.Errorf("unexpected YAML node kind %d", n.Kind)
	}
	return nil
}

// writeJSONString quotes s as encoding/json does, without escaping <, >
// and &, which kubectl does not escape either.
func writeJSONString(w *bytes.Buffer, s string) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return err
	}
	w.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	return nil
}

// jsonIndent is the indentation unit of a JSON file: the leading
// whitespace of its first indented line; "" for JSON on one line.
func jsonIndent(in []byte) string {
	lines := strings.Split(strings.TrimSpace(string(in)), "\n")
	if len(lines) < 2 {
		return ""
	}
	for _, l := range lines[1:] {
		if t := strings.TrimLeft(l, " \t"); t != "" && len(t) < len(l) {
			return l[:len(l)-len(t)]
		}
	}
	return "  "
}

// yamlIndent is the file's mapping indentation (2 when it cannot tell):
// the first nested key's indentation relative to its parent key.
func yamlIndent(in []byte) int {
	lines := strings.Split(string(in), "\n")
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if !strings.HasSuffix(t, ":") || strings.HasPrefix(t, "#") || strings.HasPrefix(t, "- ") {
			continue
		}
		for _, next := range lines[i+1:] {
			nt := strings.TrimSpace(next)
			if nt == "" || strings.HasPrefix(nt, "#") {
				continue
			}
			if strings.HasPrefix(nt, "- ") {
				break // a list, not a mapping
			}
			if d := leading(next) - leading(l); d >= 2 && d <= 8 {
				return d
			}
			break
		}
	}
	return 2
}

// compactLists says whether the file writes a block list at its key's own
// indentation ("key:\n- item", as kubectl does) rather than indented.
func compactLists(in []byte) bool {
	lines := strings.Split(string(in), "\n")
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if !strings.HasSuffix(t, ":") || strings.HasPrefix(t, "#") {
			continue
		}
		for _, next := range lines[i+1:] {
			nt := strings.TrimSpace(next)
			if nt == "" || strings.HasPrefix(nt, "#") {
				continue
			}
			if strings.HasPrefix(nt, "- ") || nt == "-" {
				keyIndent := leading(l)
				if strings.HasPrefix(t, "- ") {
					keyIndent += 2 // "- key:" starts a mapping in a list item
				}
				return leading(next) == keyIndent
			}
			break
		}
	}
	return false
}

func leading(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }

// describe names a document in errors: " (Deployment web)".
func describe(doc *yaml.Node) string {
	root := content(doc)
	kind := scalar(get(root, "kind"))
	name := scalar(get(get(root, "metadata"), "name"))
	if kind == "" && name == "" {
		return ""
	}
	return fmt.Sprintf(" (%s %s)", kind, name)
}

func migrateDocument(doc *yaml.Node) (int, error) {
	root := content(doc)
	if root == nil || root.Kind != yaml.MappingNode {
		return 0, nil
	}
	if scalar(get(root, "kind")) == "List" {
		items := get(root, "items")
		if items == nil {
			return 0, nil
		}
		total := 0
		for i, it := range items.Content {
			n, err := migrateDocument(it)
			if err != nil {
				return 0, fmt.Errorf("items[%d]%s: %w", i, describe(it), err)
			}
			total += n
		}
		return total, nil
	}
	meta, spec := podParts(root)
	if meta == nil || spec == nil {
		return 0, nil
	}
	return migratePod(meta, spec)
}

// podParts finds the pod metadata and spec of a Pod, a PodTemplate or a
// workload controller's pod template.
func podParts(root *yaml.Node) (meta, spec *yaml.Node) {
	var tmpl *yaml.Node
	switch scalar(get(root, "kind")) {
	case "Pod":
		return get(root, "metadata"), get(root, "spec")
	case "PodTemplate":
		tmpl = get(root, "template")
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job":
		tmpl = get(get(root, "spec"), "template")
	case "CronJob":
		tmpl = get(get(get(get(root, "spec"), "jobTemplate"), "spec"), "template")
	}
	return get(tmpl, "metadata"), get(tmpl, "spec")
}

func migratePod(meta, spec *yaml.Node) (int, error) {
	ann := get(meta, "annotations")
	if ann == nil || ann.Kind != yaml.MappingNode {
		return 0, nil
	}
	migrated := 0
	var kept []*yaml.Node
	for i := 0; i+1 < len(ann.Content); i += 2 {
		k, v := ann.Content[i], ann.Content[i+1]
		container, ok := strings.CutPrefix(k.Value, AnnotationPrefix)
		if !ok {
			kept = append(kept, k, v)
			continue
		}
		prof, err := ParseAnnotation(v.Value)
		if err != nil {
			return 0, fmt.Errorf("annotation %s: %w", k.Value, err)
		}
		c := findContainer(spec, container)
		if c == nil {
			return 0, fmt.Errorf("annotation %s: the pod has no container named %q", k.Value, container)
		}
		if err := setProfile(c, prof); err != nil {
			return 0, fmt.Errorf("annotation %s: container %s: %w", k.Value, container, err)
		}
		migrated++
	}
	if migrated == 0 {
		return 0, nil
	}
	ann.Content = kept
	if len(kept) == 0 {
		del(meta, "annotations")
	}
	return migrated, nil
}

func findContainer(spec *yaml.Node, name string) *yaml.Node {
	for _, list := range []string{"containers", "initContainers", "ephemeralContainers"} {
		seq := get(spec, list)
		if seq == nil || seq.Kind != yaml.SequenceNode {
			continue
		}
		for _, c := range seq.Content {
			if scalar(get(c, "name")) == name {
				return c
			}
		}
	}
	return nil
}

func setProfile(container *yaml.Node, p Profile) error {
	want := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	want.Content = append(want.Content, str("type"), str(p.Type))
	if p.LocalhostProfile != "" {
		want.Content = append(want.Content, str("localhostProfile"), str(p.LocalhostProfile))
	}
	sc := get(container, "securityContext")
	switch {
	case sc == nil:
		sc = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		container.Content = append(container.Content, str("securityContext"), sc)
	case sc.Kind == yaml.ScalarNode && sc.ShortTag() == "!!null":
		// `securityContext:` with no value (or null, ~): the apiserver
		// reads it as absent. Filled in where it stands.
		sc.Kind, sc.Tag, sc.Value = yaml.MappingNode, "!!map", ""
		if sc.Style&yaml.FlowStyle == 0 {
			sc.Style = 0
		}
	}
	if sc.Kind != yaml.MappingNode {
		return errors.New("securityContext is not a mapping")
	}
	if cur := get(sc, "appArmorProfile"); cur != nil {
		if scalar(get(cur, "type")) == p.Type && scalar(get(cur, "localhostProfile")) == p.LocalhostProfile {
			return nil // already migrated by hand; the annotation just goes
		}
		return fmt.Errorf("securityContext.appArmorProfile (type %s) already set and differs from the annotation (type %s)", scalar(get(cur, "type")), p.Type)
	}
	sc.Content = append(sc.Content, str("appArmorProfile"), want)
	return nil
}

func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func content(doc *yaml.Node) *yaml.Node {
	if doc != nil && doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return doc.Content[0]
	}
	return doc
}

// get returns the value of key in a mapping node, nil if absent.
func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func del(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}
