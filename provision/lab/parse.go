package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is a problem with a lab file: which file, where, which field, and
// what would be valid. It prints as one line, the way a compiler would.
type Error struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *Error) Error() string {
	// One line whatever the file holds: a key or value with a newline in it
	// must not break the message (found by FuzzParse).
	return strings.ReplaceAll(e.line(), "\n", `\n`)
}

func (e *Error) line() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", loc, e.Line)
	}
	if e.Field == "" {
		return loc + ": " + e.Msg
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
}

// yamlSyntaxLine is yaml.v3's syntax error, "line N: what".
var yamlSyntaxLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// document is a parsed lab with the YAML tree kept, so later validation can
// point at the line of any field path.
type document struct {
	lab  *Lab
	root *yaml.Node
}

// Parse reads one lab file. Unknown fields are errors that name the field
// path, its line and the fields that would be valid there.
func Parse(data []byte, origin Origin) (*Lab, error) {
	doc, err := parse(data, origin)
	if err != nil {
		return nil, err
	}
	if err := validateFile(doc); err != nil {
		return nil, err
	}
	return doc.lab, nil
}

func parse(data []byte, origin Origin) (*document, error) {
	fail := func(line int, field, format string, args ...any) (*document, error) {
		return nil, &Error{File: origin.Display, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return fail(0, "", "empty file: a lab needs apiVersion %s, kind %s, metadata.name and spec", APIVersion, Kind)
		}
		// yaml.v3 says "yaml: line N: what": the line goes where every
		// other error has it, file:N.
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlSyntaxLine.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			return fail(line, "", "not valid YAML: %s", m[2])
		}
		return fail(0, "", "not valid YAML: %s", msg)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return fail(extra.Line, "", "a lab file holds one document; found another after ---")
	}
	body := &root
	if body.Kind == yaml.DocumentNode && len(body.Content) == 1 {
		body = body.Content[0]
	}
	if body.Kind != yaml.MappingNode {
		return fail(body.Line, "", "a lab file is a YAML mapping with apiVersion, kind, metadata and spec")
	}
	if err := checkFields(body, reflect.TypeOf(Lab{}), "", origin.Display, map[aliased]bool{}); err != nil {
		return nil, err
	}
	var l Lab
	if err := body.Decode(&l); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			return fail(0, "", "%s", te.Errors[0])
		}
		return fail(0, "", "%v", err)
	}
	l.Origin = origin
	return &document{lab: &l, root: body}, nil
}

// checkFields walks the YAML tree beside the Go type and reports the first
// key the type does not have. yaml.v3's own KnownFields names the Go type,
// which means nothing to someone writing a lab file.
//
// An alias (*name) is checked where it is used, as the decoder will read
// it there, but each anchor once per Go type (seen): a billion-laughs file
// of nested aliases is not walked a billion times.
func checkFields(n *yaml.Node, t reflect.Type, path, file string, seen map[aliased]bool) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		k := aliased{n.Alias, t}
		if seen[k] {
			return nil
		}
		seen[k] = true
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil // decodes to the zero value, as if left out
	}
	if want := expected(n, t); want != "" {
		return &Error{File: file, Line: n.Line, Field: path, Msg: fmt.Sprintf("expected %s, not %s", want, describe(n))}
	}
	switch t.Kind() {
	case reflect.Struct:
		fields, names := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				return &Error{File: file, Line: k.Line, Field: join(path, k.Value),
					Msg: fmt.Sprintf("unknown field (valid here: %s)", strings.Join(names, ", "))}
			}
			if err := checkFields(v, ft, join(path, k.Value), file, seen); err != nil {
				return err
			}
		}
	case reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return &Error{File: file, Line: k.Line, Field: path, Msg: fmt.Sprintf("a key here is a name, not %s", describe(k))}
			}
			if err := checkFields(v, t.Elem(), join(path, k.Value), file, seen); err != nil {
				return err
			}
		}
	case reflect.Slice:
		for i, item := range n.Content {
			// yaml.v3 drops a null item of a list of mappings: a node
			// written "- ~" would vanish without a word.
			if item.Kind == yaml.ScalarNode && item.ShortTag() == "!!null" {
				return &Error{File: file, Line: item.Line, Field: fmt.Sprintf("%s[%d]", path, i), Msg: "an empty item (- with nothing, or ~): remove it or fill it in"}
			}
			if err := checkFields(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), file, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

// expected is what a lab file must hold where a value of type t goes, when
// n is not that ("" when it is): what yaml.v3 would refuse with a message
// naming the Go type (`cannot unmarshal !!int into lab.Registry`). A string
// takes any scalar, as yaml.v3 decodes one (`name: 5` is "5").
func expected(n *yaml.Node, t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			_, names := yamlFields(t)
			return "a mapping with the fields " + strings.Join(names, ", ")
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return "a mapping of names to " + kindOf(t.Elem())
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return "a list of " + kindOf(t.Elem())
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return "a string"
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			return "true or false"
		}
	}
	return ""
}

// yamlFields are a struct type's fields by their YAML key, and the keys
// sorted: what a lab file may write in its mapping.
func yamlFields(t reflect.Type) (map[string]reflect.Type, []string) {
	fields := map[string]reflect.Type{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = t.Field(i).Type
		names = append(names, tag)
	}
	sort.Strings(names)
	return fields, names
}

// kindOf names, for a lab's author, what a Go type holds.
func kindOf(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		return "mappings"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "strings"
	}
	return t.Kind().String()
}

// describe names what a node holds, quoting a scalar (cut at 40 bytes).
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "…"
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		return "the number " + v
	case "!!bool":
		return v
	}
	return strconv.Quote(v)
}

// aliased is an anchored node checked against a Go type.
type aliased struct {
	n *yaml.Node
	t reflect.Type
}

// join appends a key to a field path; a key that is not a plain name is
// written quoted in brackets, as kubectl's JSONPath does.
func join(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + `[` + strconv.Quote(key) + `]`
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// line finds the line of a field path such as "spec.nodes[1].role" or
// "spec.featureGates.Foo" in the document, or 0 when it is not there.
func (d *document) line(path string) int {
	parts := splitPath(path)
	if parts == nil {
		return 0
	}
	n := d.root
	for _, part := range parts {
		if n == nil {
			return 0
		}
		switch {
		case part.index >= 0:
			if n.Kind != yaml.SequenceNode || part.index >= len(n.Content) {
				return 0
			}
			n = n.Content[part.index]
		default:
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content) && n.Kind == yaml.MappingNode; i += 2 {
				if n.Content[i].Value == part.key {
					next = n.Content[i+1]
					if next.Kind != yaml.MappingNode && next.Kind != yaml.SequenceNode {
						next = n.Content[i] // a scalar's key line reads better than its value's
					}
					break
				}
			}
			n = next
		}
	}
	if n == nil {
		return 0
	}
	return n.Line
}

type pathPart struct {
	key   string
	index int
}

// splitPath splits "a.b[2].c" into a, b, [2], c. Map keys such as
// "networking.k8s.io/v1beta1" contain dots, so a key is taken whole when the
// caller quotes it (join: strconv.Quote) as a["networking.k8s.io/v1beta1"].
// A path it cannot read (a hostile key written into it unquoted) gives nil:
// the field then has no line, and the message still names it.
func splitPath(path string) []pathPart {
	var parts []pathPart
	for len(path) > 0 {
		switch {
		case strings.HasPrefix(path, `["`):
			q, err := strconv.QuotedPrefix(path[1:])
			if err != nil || !strings.HasPrefix(path[1+len(q):], "]") {
				return nil
			}
			key, err := strconv.Unquote(q)
			if err != nil {
				return nil
			}
			parts = append(parts, pathPart{key: key, index: -1})
			path = path[1+len(q)+1:]
		case path[0] == '[':
			end := strings.IndexByte(path, ']')
			i, err := strconv.Atoi(path[1:max(end, 1)])
			if end < 0 || err != nil || i < 0 {
				return nil
			}
			parts = append(parts, pathPart{index: i})
			path = path[end+1:]
		case path[0] == '.':
			path = path[1:]
		default:
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			parts = append(parts, pathPart{key: path[:end], index: -1})
			path = path[end:]
		}
	}
	return parts
}

// ReadFile reads a lab file from disk.
func ReadFile(fsys fs.FS, path, display string) (*Lab, error) {
	data, err := fs.ReadFile(fsys, path)
	if err != nil {
		return nil, &Error{File: display, Msg: fmt.Sprintf("cannot read lab file: %v", unwrapPathError(err))}
	}
	return Parse(data, Origin{FS: fsys, Path: path, Display: display})
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
