package lab

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
)

// File is a file a lab refers to, with the filesystem it lives in.
type File struct {
	FS   fs.FS
	Path string
	// Display names the file in errors and output.
	Display string
	// Root is the directory on disk FS is confined to ("" when embedded).
	Root string
}

// Read returns the file's bytes.
func (f File) Read() ([]byte, error) {
	b, err := fs.ReadFile(f.FS, f.Path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Display, err)
	}
	return b, nil
}

// Sub returns the directory as its own fs.FS.
func (f File) Sub() (fs.FS, error) { return fs.Sub(f.FS, f.Path) }

// DiskPath is the file's path on the real disk, when it comes from a lab
// on disk rather than one embedded in the binary: callers that must check
// symlinks against the real file system need it.
func (f File) DiskPath() (string, bool) {
	if f.Root == "" {
		return "", false
	}
	return filepath.Join(f.Root, filepath.FromSlash(f.Path)), true
}

// ResolvedArtifact is an artifact with its source directory located.
type ResolvedArtifact struct {
	Artifact
	Dir File
	Lab string
}

// ResolvedWorkload is a workload with its manifest directory located.
type ResolvedWorkload struct {
	Workload
	Dir File
	Lab string
}

// Instruction is one lab's step-by-step text.
type Instruction struct {
	Lab  string `json:"lab"`
	Text string `json:"text"`
}

// Resolved is a lab with its includes merged: what the provisioner builds.
type Resolved struct {
	Name        string
	Description string
	// Labs are the labs merged, includes first, each once.
	Labs                 []string
	NodeImage            string
	Nodes                []Node
	FeatureGates         map[string]bool
	RuntimeConfig        map[string]string
	Networking           Networking
	AuthenticationConfig *File
	// ImageVolumeReadOnlyShim runs kindlab's CRI shim in every node (see
	// ContainerRuntime.ImageVolumeReadOnlyShim).
	ImageVolumeReadOnlyShim bool
	Registry                bool
	Images                  []Image
	Artifacts               []ResolvedArtifact
	Workloads               []ResolvedWorkload
	Checks                  []string
	Instructions            []Instruction
	// Source is the top lab file, for messages.
	Source string
}

// ResolveOptions are what Resolve checks against that the lab package
// itself does not own.
type ResolveOptions struct {
	// KnownChecks, when set, is the list of check names that exist.
	KnownChecks []string
	// SkipComponentRules leaves out what the 1.31 components would refuse
	// (the rule table and the authentication config validation). Only the
	// cross-check sets it, to hand refused values to the components.
	SkipComponentRules bool
}

// Resolve merges a lab with everything it includes. Conflicts (two labs
// setting one gate differently, two node layouts) are errors that name both
// labs; the merged lab must have a pinned node image and a control plane.
func (c *Catalog) Resolve(name string, opts ResolveOptions) (*Resolved, error) {
	top, ok := c.labs[name]
	if !ok {
		return nil, &NotFound{Name: name, Known: c.Names()}
	}
	r := &Resolved{
		Name:          name,
		Description:   top.Spec.Description,
		FeatureGates:  map[string]bool{},
		RuntimeConfig: map[string]string{},
		Source:        top.Origin.Display,
	}
	m := &merger{c: c, r: r, setBy: map[string]string{}, done: map[string]bool{}}
	if err := m.merge(name, nil); err != nil {
		return nil, err
	}
	doc := c.docs[name]
	fail := func(field, format string, args ...any) error {
		return &Error{File: top.Origin.Display, Line: doc.line(field), Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if r.NodeImage == "" {
		return nil, fail("spec.nodeImage", "missing: the lab (or a lab it includes) must pin a node image by digest, e.g. kindest/node:v1.31.14@sha256:…")
	}
	if len(r.Nodes) == 0 {
		return nil, fail("spec.nodes", "missing: the lab (or a lab it includes) must list its nodes, at least one %s", RoleControlPlane)
	}
	if len(r.Artifacts) > 0 {
		r.Registry = true // artifacts are pushed to the local registry
	}
	if m.shim != nil {
		r.ImageVolumeReadOnlyShim = *m.shim
	}
	if r.ImageVolumeReadOnlyShim && !r.FeatureGates["ImageVolume"] {
		field := "spec.containerRuntime.imageVolumeReadOnlyShim"
		return nil, &Error{File: m.c.labs[m.setBy[field]].Origin.Display, Line: m.c.docs[m.setBy[field]].line(field), Field: field,
			Msg: "true, but the lab does not turn on spec.featureGates.ImageVolume: the shim only changes image-volume mounts " +
				"(valid: turn the gate on, or set false / remove the field)"}
	}
	if opts.KnownChecks != nil {
		for _, ch := range r.Checks {
			if !slices.Contains(opts.KnownChecks, ch) {
				return nil, fail("spec.checks", "unknown check %q (valid: %s)", ch, strings.Join(opts.KnownChecks, ", "))
			}
		}
	}
	if !opts.SkipComponentRules {
		if err := m.checkComponents(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// checkComponents refuses what the 1.31 components would refuse: the rule
// table (rules_1_31.go), then the authentication config through
// k8s.io/apiserver's own validation. Each refusal names the file and line
// of the lab that set the field, which may be an included lab.
func (m *merger) checkComponents() error {
	for _, rule := range rules131 {
		field, msg := rule.check(m.r)
		if msg == "" {
			continue
		}
		file, line := m.locate(field)
		return &Error{File: file, Line: line, Field: field, Msg: msg}
	}
	if f := m.r.AuthenticationConfig; f != nil {
		data, err := f.Read()
		if err != nil {
			file, line := m.locate("spec.apiServer.authenticationConfig")
			return &Error{File: file, Line: line, Field: "spec.apiServer.authenticationConfig", Msg: err.Error()}
		}
		origin := m.c.labs[m.setBy["spec.apiServer.authenticationConfig"]].Origin
		return ValidateAuthenticationConfig(data, m.r.FeatureGates, []string{ServiceAccountIssuer}, origin.displayBeside(f.Display))
	}
	return nil
}

// locate finds the file and line of a field in the lab that set it (the
// top lab when none did, e.g. a gate left at its default), falling back to
// the nearest enclosing field the file has.
func (m *merger) locate(field string) (string, int) {
	name := m.setBy[field]
	if name == "" {
		name = m.r.Name
	}
	doc := m.c.docs[name]
	for p := field; p != ""; p = parentPath(p) {
		if l := doc.line(p); l > 0 {
			return doc.lab.Origin.Display, l
		}
	}
	return doc.lab.Origin.Display, 0
}

type merger struct {
	c     *Catalog
	r     *Resolved
	setBy map[string]string // merged key -> lab that set it, for conflict messages
	done  map[string]bool
	// shim is spec.containerRuntime.imageVolumeReadOnlyShim as merged so
	// far: nil until a lab sets it, so an explicit false is kept.
	shim *bool
}

// merge folds a lab and (first) its includes into the result. A lab
// included twice through different paths is merged once.
func (m *merger) merge(name string, stack []string) error {
	for _, s := range stack {
		if s == name {
			return &Error{File: m.c.labs[stack[0]].Origin.Display, Field: "spec.include",
				Msg: fmt.Sprintf("include cycle: %s -> %s", strings.Join(stack, " -> "), name)}
		}
	}
	if m.done[name] {
		return nil
	}
	l := m.c.labs[name]
	doc := m.c.docs[name]
	stack = append(stack, name)
	for i, inc := range l.Spec.Include {
		if _, ok := m.c.labs[inc]; !ok {
			field := fmt.Sprintf("spec.include[%d]", i)
			return &Error{File: l.Origin.Display, Line: doc.line(field), Field: field,
				Msg: (&NotFound{Name: inc, Known: m.c.Names()}).Error()}
		}
		if err := m.merge(inc, stack); err != nil {
			return err
		}
	}
	m.done[name] = true
	m.r.Labs = append(m.r.Labs, name)
	top := len(stack) == 1
	s := l.Spec
	conflict := func(field, what string, prev, cur any) error {
		return &Error{File: l.Origin.Display, Line: doc.line(field), Field: field,
			Msg: fmt.Sprintf("%s %v conflicts with %v from lab %q (set it in the including lab to choose)", what, cur, prev, m.setBy[field])}
	}
	// overrides reports whether this lab may replace what the lab that set
	// field chose: the top lab may, and so may a lab over the labs it
	// includes (traffic-distribution's nodes over base's, also when
	// all-features includes both); labs that include neither must agree.
	overrides := func(field string) bool {
		return top || m.includes(name, m.setBy[field])
	}
	// setOne sets a single-valued field: the including lab overrides,
	// labs that include neither must agree with each other.
	setOne := func(field string, cur any, dst any) error {
		if reflect.ValueOf(cur).IsZero() {
			return nil
		}
		dv := reflect.ValueOf(dst).Elem()
		if !dv.IsZero() && !overrides(field) && !reflect.DeepEqual(dv.Interface(), cur) {
			// Indirect: a *bool prints as its value, not an address.
			return conflict(field, field, reflect.Indirect(dv).Interface(), reflect.Indirect(reflect.ValueOf(cur)).Interface())
		}
		dv.Set(reflect.ValueOf(cur))
		m.setBy[field] = name
		return nil
	}
	if err := setOne("spec.nodeImage", s.NodeImage, &m.r.NodeImage); err != nil {
		return err
	}
	if err := setOne("spec.nodes", s.Nodes, &m.r.Nodes); err != nil {
		return err
	}
	if err := setOne("spec.networking.kubeProxyMode", s.Networking.KubeProxyMode, &m.r.Networking.KubeProxyMode); err != nil {
		return err
	}
	if err := setOne("spec.networking.podSubnet", s.Networking.PodSubnet, &m.r.Networking.PodSubnet); err != nil {
		return err
	}
	if err := setOne("spec.networking.serviceSubnet", s.Networking.ServiceSubnet, &m.r.Networking.ServiceSubnet); err != nil {
		return err
	}
	if err := setOne("spec.containerRuntime.imageVolumeReadOnlyShim", s.ContainerRuntime.ImageVolumeReadOnlyShim, &m.shim); err != nil {
		return err
	}
	if p := s.APIServer.AuthenticationConfig; p != "" {
		rp, _ := l.Origin.Resolve(p) // checked by validateFile
		f := &File{FS: l.Origin.FS, Path: rp, Display: p, Root: l.Origin.Root}
		field := "spec.apiServer.authenticationConfig"
		if prev := m.r.AuthenticationConfig; prev != nil && !overrides(field) && !sameContent(*prev, *f) {
			return conflict(field, "authentication config", prev.Display, p)
		}
		m.r.AuthenticationConfig = f
		m.setBy[field] = name
	}
	for _, g := range sortedKeys(s.FeatureGates) {
		field := join("spec.featureGates", g)
		if prev, ok := m.r.FeatureGates[g]; ok && prev != s.FeatureGates[g] && !overrides(field) {
			return conflict(field, "feature gate "+g+"=", prev, s.FeatureGates[g])
		}
		m.r.FeatureGates[g] = s.FeatureGates[g]
		m.setBy[field] = name
	}
	for _, k := range sortedKeys(s.RuntimeConfig) {
		field := fmt.Sprintf("spec.runtimeConfig[%q]", k)
		if prev, ok := m.r.RuntimeConfig[k]; ok && prev != s.RuntimeConfig[k] && !overrides(field) {
			return conflict(field, "runtime config "+k+"=", prev, s.RuntimeConfig[k])
		}
		m.r.RuntimeConfig[k] = s.RuntimeConfig[k]
		m.setBy[field] = name
	}
	if s.Registry != nil && s.Registry.Enabled {
		m.r.Registry = true
	}
	for i, img := range s.Images {
		field := fmt.Sprintf("spec.images[%d].reference", i)
		if j := indexOf(m.r.Images, func(x Image) bool { return x.Name == img.Name }); j >= 0 {
			if m.r.Images[j].Reference != img.Reference {
				m.setBy[field] = m.setBy["image/"+img.Name]
				return conflict(field, "image "+img.Name, m.r.Images[j].Reference, img.Reference)
			}
			continue
		}
		m.r.Images = append(m.r.Images, img)
		m.setBy["image/"+img.Name] = name
	}
	for i, a := range s.Artifacts {
		field := fmt.Sprintf("spec.artifacts[%d]", i)
		if j := indexOf(m.r.Artifacts, func(x ResolvedArtifact) bool { return x.Name == a.Name }); j >= 0 {
			m.setBy[field] = m.r.Artifacts[j].Lab
			return conflict(field, "artifact", m.r.Artifacts[j].Name, a.Name)
		}
		src, _ := l.Origin.Resolve(a.Source)
		m.r.Artifacts = append(m.r.Artifacts, ResolvedArtifact{Artifact: a, Lab: name,
			Dir: File{FS: l.Origin.FS, Path: src, Display: a.Source, Root: l.Origin.Root}})
	}
	for i, w := range s.Workloads {
		field := fmt.Sprintf("spec.workloads[%d]", i)
		if j := indexOf(m.r.Workloads, func(x ResolvedWorkload) bool { return x.Name == w.Name }); j >= 0 {
			m.setBy[field] = m.r.Workloads[j].Lab
			return conflict(field, "workload", m.r.Workloads[j].Name, w.Name)
		}
		dir, _ := l.Origin.Resolve(w.Path)
		m.r.Workloads = append(m.r.Workloads, ResolvedWorkload{Workload: w, Lab: name,
			Dir: File{FS: l.Origin.FS, Path: dir, Display: w.Path, Root: l.Origin.Root}})
	}
	for _, ch := range s.Checks {
		if !slices.Contains(m.r.Checks, ch) {
			m.r.Checks = append(m.r.Checks, ch)
		}
	}
	if strings.TrimSpace(s.Instructions) != "" {
		m.r.Instructions = append(m.r.Instructions, Instruction{Lab: name, Text: s.Instructions})
	}
	return nil
}

func sameContent(a, b File) bool {
	x, err1 := a.Read()
	y, err2 := b.Read()
	return err1 == nil && err2 == nil && string(x) == string(y)
}

func indexOf[T any](list []T, match func(T) bool) int {
	for i, x := range list {
		if match(x) {
			return i
		}
	}
	return -1
}

// includes reports whether lab a includes lab b, directly or through the
// labs it includes.
func (m *merger) includes(a, b string) bool {
	seen := map[string]bool{}
	var walk func(n string) bool
	walk = func(n string) bool {
		if seen[n] {
			return false
		}
		seen[n] = true
		l, ok := m.c.labs[n]
		if !ok {
			return false
		}
		for _, inc := range l.Spec.Include {
			if inc == b || walk(inc) {
				return true
			}
		}
		return false
	}
	return b != "" && walk(a)
}
