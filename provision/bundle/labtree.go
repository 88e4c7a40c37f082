package bundle

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kindlab/kindlab/provision/internal/confine"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/workload"
)

// treeEntry is one file, directory or symlink of the lab tree.
type treeEntry struct {
	path string // inside the bundle
	data []byte
	link string
	dir  bool
}

type treeSource struct {
	tree    string // "builtin" or "disk"
	fsys    fs.FS
	p       string
	dir     bool
	display string
}

// collectLab gathers what resolving the lab again needs: every lab file it
// merges and everything each of them refers to (the authentication config,
// artifact sources, workload manifests), so a replay does not depend on the
// lab existing on the replaying machine. It returns the entries and the
// bundle paths of the lab files, includes first.
//
// Relative references must still resolve, so each file keeps its place
// relative to the others: built-in labs keep their paths in the binary
// (lab/builtin/labs/…, lab/builtin/fixtures/…), labs on disk their paths
// below the deepest directory they all share (lab/disk/…).
func collectLab(c *lab.Catalog, r *lab.Resolved) ([]treeEntry, []string, error) {
	var labFiles, refs []treeSource
	for _, name := range r.Labs {
		l, ok := c.Get(name)
		if !ok {
			return nil, nil, fmt.Errorf("lab %s: not in the catalog the lab was resolved from", name)
		}
		tree := "disk"
		if strings.HasPrefix(l.Origin.Display, "builtin:") {
			tree = "builtin"
		}
		labFiles = append(labFiles, treeSource{tree: tree, fsys: l.Origin.FS, p: l.Origin.Path, display: l.Origin.Display})
		add := func(rel string, dir bool) error {
			p, err := l.Origin.Resolve(rel)
			if err != nil {
				return fmt.Errorf("%s: %w", l.Origin.Display, err)
			}
			refs = append(refs, treeSource{tree: tree, fsys: l.Origin.FS, p: p, dir: dir, display: rel})
			return nil
		}
		if a := l.Spec.APIServer.AuthenticationConfig; a != "" {
			if err := add(a, false); err != nil {
				return nil, nil, err
			}
		}
		for _, a := range l.Spec.Artifacts {
			if err := add(a.Source, true); err != nil {
				return nil, nil, err
			}
		}
		for _, w := range l.Spec.Workloads {
			if err := add(w.Path, true); err != nil {
				return nil, nil, err
			}
		}
	}
	var diskDirs []string
	for _, s := range append(append([]treeSource{}, labFiles...), refs...) {
		if s.tree != "disk" {
			continue
		}
		d := s.p
		if !s.dir {
			d = path.Dir(s.p)
		}
		diskDirs = append(diskDirs, d)
	}
	root := commonDir(diskDirs)
	where := func(s treeSource, p string) string {
		if s.tree == "disk" && root != "." {
			p = strings.TrimPrefix(p, root+"/")
		}
		return path.Join(LabDir, s.tree, p)
	}

	seen := map[string]bool{}
	var out []treeEntry
	addEntry := func(e treeEntry) {
		if !seen[e.path] {
			seen[e.path] = true
			out = append(out, e)
		}
	}
	var labPaths []string
	for _, s := range labFiles {
		b, err := fs.ReadFile(s.fsys, s.p)
		if err != nil {
			return nil, nil, fmt.Errorf("read lab file %s: %w", s.display, err)
		}
		bp := where(s, s.p)
		labPaths = append(labPaths, bp)
		addEntry(treeEntry{path: bp, data: b})
	}
	for _, s := range refs {
		if !s.dir {
			b, err := fs.ReadFile(s.fsys, s.p)
			if err != nil {
				return nil, nil, fmt.Errorf("read %s: %w", s.display, err)
			}
			addEntry(treeEntry{path: where(s, s.p), data: b})
			continue
		}
		err := fs.WalkDir(s.fsys, s.p, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			// A lab refers only to its own files, never to dotfiles (lab.
			// Origin.Resolve; artifact.BuildOptions.NoHidden): a bundle
			// handed to a stranger must not carry a .ssh or .env from a
			// folder the lab names.
			if p != s.p && strings.HasPrefix(d.Name(), ".") {
				return fmt.Errorf("%s is hidden: a bundle carries only a lab's own files, not dotfiles (move it out of %s)", strings.TrimPrefix(p, s.p+"/"), s.display)
			}
			switch {
			case d.IsDir():
				addEntry(treeEntry{path: where(s, p), dir: true})
			case d.Type()&fs.ModeSymlink != 0:
				// Artifact directories may hold symlinks; they are part of
				// the artifact and its digest.
				target, err := fs.ReadLink(s.fsys, p)
				if err != nil {
					return err
				}
				addEntry(treeEntry{path: where(s, p), link: target})
			case d.Type().IsRegular():
				b, err := fs.ReadFile(s.fsys, p)
				if err != nil {
					return err
				}
				addEntry(treeEntry{path: where(s, p), data: b})
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", s.display, err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, labPaths, nil
}

func treeEntries(tree []treeEntry) []confine.Entry {
	out := make([]confine.Entry, len(tree))
	for i, e := range tree {
		out[i] = confine.Entry{Path: e.path, Dir: e.dir, Link: e.link}
	}
	return out
}

// commonDir is the deepest directory every one of dirs is in ("." for none).
func commonDir(dirs []string) string {
	if len(dirs) == 0 {
		return "."
	}
	common := strings.Split(dirs[0], "/")
	for _, d := range dirs[1:] {
		parts := strings.Split(d, "/")
		n := 0
		for n < len(common) && n < len(parts) && common[n] == parts[n] {
			n++
		}
		common = common[:n]
	}
	if len(common) == 0 {
		return "."
	}
	return strings.Join(common, "/")
}

// redactManifest redacts the Kubernetes objects of a manifest file of the
// lab as Object does (Secrets, env passwords, last-applied JSON, …); other
// files, and manifests with nothing to redact, come back unchanged (the text
// rules still apply to them when they are written). A file with a redacted
// object is written again from its objects, so its comments are lost, which
// a bug report can afford and a leaked credential cannot.
func redactManifest(name string, b []byte) ([]byte, map[string]int) {
	switch path.Ext(name) {
	case ".yaml", ".yml", ".json":
	default:
		return b, nil
	}
	objs, err := workload.Decode(b)
	if err != nil {
		return b, nil // not a manifest; the text rules still apply
	}
	found := map[string]int{}
	for _, o := range objs {
		merge(found, Object(o))
	}
	if total(found) == 0 {
		return b, nil
	}
	var out bytes.Buffer
	for i, o := range objs {
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			// Redacted in memory but not writable: the file must not go
			// out as it was.
			return []byte("# " + Redacted + ": " + name + " held secrets and could not be written back redacted\n"), found
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(y)
	}
	return out.Bytes(), found
}

// extractLab writes the bundle's lab tree under dir and returns the paths of
// the lab files there, includes first. Open has checked the tree (unique
// paths, links that stay in their tree); the writes still go through an
// os.Root on dir, so nothing can land outside it whatever the entries say.
func (b *Bundle) extractLab(dir string) ([]string, error) {
	var entries []confine.Entry
	for _, f := range b.Manifest.Files {
		if strings.HasPrefix(f.Path, LabDir+"/") {
			entries = append(entries, confine.Entry{Path: f.Path, Dir: f.Dir, Link: f.Link})
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("extract the bundle's lab: %w", err)
	}
	if err := confine.Extract(dir, entries, func(p string) []byte { return b.files[p] }); err != nil {
		return nil, badf(b.Path, "%v", err)
	}
	var out []string
	for _, p := range b.Manifest.Lab.Files {
		if !confine.ValidPath(p) || !strings.HasPrefix(p, LabDir+"/") {
			return nil, badf(b.Path, "%s names the lab file %q, which is not in its lab tree", ManifestFile, p)
		}
		out = append(out, filepath.Join(dir, filepath.FromSlash(p)))
	}
	return out, nil
}
