// Package apparmor rewrites manifests that set AppArmor through the
// annotations deprecated in Kubernetes 1.30
// (container.apparmor.security.beta.kubernetes.io/<container>) to the
// securityContext.appArmorProfile field that is GA in 1.31.
package apparmor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"gopkg.in/yaml.v3"
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
// YAML stream to the field, on Pods and on the pod templates of workload
// controllers, keeping documents, their order and comments. It returns the
// input unchanged when there is nothing to migrate, and how many
// annotations it rewrote.
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
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
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
	if sc == nil {
		sc = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		container.Content = append(container.Content, str("securityContext"), sc)
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
