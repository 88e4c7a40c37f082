package lab

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Catalog is every lab kindlab knows in one run: the built-in ones, then
// ./labs/*.yaml, then files named with --file. A lab on disk shadows a
// built-in lab of the same name (so lab authors see their edits without a
// rebuild); two labs of the same name on disk are an error.
type Catalog struct {
	labs map[string]*Lab
	docs map[string]*document
	// shadowed maps a lab name to the built-in lab a disk lab of that name
	// hides (its Origin.Display, "builtin:labs/<file>").
	shadowed map[string]string
	// roots holds one open os.Root per lab tree on disk, shared by the labs
	// in it; they stay open for the life of the catalog (one process run).
	roots map[string]*os.Root
	// builtinFS and builtinDir are what AddBuiltin added, for Builtins.
	builtinFS  fs.FS
	builtinDir string
}

// MaxFileSize bounds a lab file, and the authentication config it names,
// in bytes.
const MaxFileSize = 1 << 20

// NewCatalog returns an empty catalog.
func NewCatalog() *Catalog {
	return &Catalog{labs: map[string]*Lab{}, docs: map[string]*document{}, shadowed: map[string]string{}, roots: map[string]*os.Root{}}
}

// AddBuiltin adds every *.yaml directly under dir in fsys as a built-in lab.
func (c *Catalog) AddBuiltin(fsys fs.FS, dir string) error {
	c.builtinFS, c.builtinDir = fsys, dir
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return fmt.Errorf("read built-in labs: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || !isYAML(e.Name()) {
			continue
		}
		p := path.Join(dir, e.Name())
		if _, err := c.add(Origin{FS: fsys, Path: p, Display: "builtin:" + p}, true); err != nil {
			return err
		}
	}
	return nil
}

// AddDir adds every *.yaml directly under a directory on disk; a directory
// that does not exist adds nothing.
func (c *Catalog) AddDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read labs in %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() || !isYAML(e.Name()) {
			continue
		}
		if _, err := c.AddFile(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// AddFile adds one lab file from disk and returns it. The lab may refer
// only to files inside its tree (TreeRoot): its folder, or the folder above
// when the lab sits in a folder named labs/, so that a project's
// labs/x.yaml reaches ../fixtures/. A lab file from someone else therefore
// cannot read the rest of the machine, by `..`, an absolute path or a
// symlink.
func (c *Catalog) AddFile(file string) (*Lab, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, &Error{File: file, Msg: err.Error()}
	}
	return c.AddFileIn(TreeRoot(abs), file)
}

// TreeRoot is the directory a lab file on disk is confined to: its folder,
// or that folder's parent when the folder is named labs.
func TreeRoot(labFile string) string {
	dir := filepath.Dir(labFile)
	if filepath.Base(dir) == "labs" {
		return filepath.Dir(dir)
	}
	return dir
}

// AddFileIn adds one lab file from disk whose references must stay inside
// root, a directory that holds it (a replayed bundle's lab tree, say).
func (c *Catalog) AddFileIn(root, file string) (*Lab, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, &Error{File: file, Msg: err.Error()}
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, &Error{File: file, Msg: err.Error()}
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, &Error{File: file, Msg: fmt.Sprintf("the lab file is not inside its tree %s", root)}
	}
	p := filepath.ToSlash(rel)
	for _, l := range c.labs {
		if l.Origin.Root == root && l.Origin.Path == p {
			return l, nil // the same file named twice (./labs and --file)
		}
	}
	r, ok := c.roots[root]
	if !ok {
		if r, err = os.OpenRoot(root); err != nil {
			return nil, &Error{File: file, Msg: fmt.Sprintf("cannot read lab file: %v", unwrapPathError(err))}
		}
		c.roots[root] = r
	}
	return c.add(Origin{FS: r.FS(), Path: p, Display: file, Root: root}, false)
}

func (c *Catalog) add(o Origin, builtin bool) (*Lab, error) {
	display := o.Display
	// Bounded before it is read: a lab file may come from someone else, and
	// decoding YAML costs about a hundred times its size in memory.
	if info, err := fs.Stat(o.FS, o.Path); err == nil && (!info.Mode().IsRegular() || info.Size() > MaxFileSize) {
		return nil, &Error{File: display, Msg: fmt.Sprintf("want a regular file of at most %d KiB (a lab file is a page of YAML)", MaxFileSize>>10)}
	}
	data, err := fs.ReadFile(o.FS, o.Path)
	if err != nil {
		return nil, &Error{File: display, Msg: fmt.Sprintf("cannot read lab file: %v", unwrapPathError(err))}
	}
	doc, err := parse(data, o)
	if err != nil {
		return nil, err
	}
	if err := validateFile(doc); err != nil {
		return nil, err
	}
	name := doc.lab.Metadata.Name
	if prev, ok := c.labs[name]; ok {
		prevBuiltin := strings.HasPrefix(prev.Origin.Display, "builtin:")
		switch {
		case builtin && prevBuiltin, !builtin && !prevBuiltin:
			return nil, &Error{File: display, Line: doc.line("metadata.name"), Field: "metadata.name",
				Msg: fmt.Sprintf("lab %q is also defined in %s: lab names must be unique", name, prev.Origin.Display)}
		case builtin:
			// A byte-identical copy (kindlab's own labs/ in its source
			// tree) hides nothing worth a word.
			if disk, err := fs.ReadFile(prev.Origin.FS, prev.Origin.Path); err != nil || !bytes.Equal(disk, data) {
				c.shadowed[name] = display
			}
			return prev, nil // a disk lab added earlier shadows this one
		}
	}
	c.labs[name] = doc.lab
	c.docs[name] = doc
	return doc.lab, nil
}

// Get returns a lab by name.
func (c *Catalog) Get(name string) (*Lab, bool) {
	l, ok := c.labs[name]
	return l, ok
}

// Builtins is a catalog of c's built-in labs alone, so that a lab that
// came up built-in resolves as it did whatever ./labs holds now (a lab
// there may shadow it, or one it includes). Without built-in labs it is c.
func (c *Catalog) Builtins() (*Catalog, error) {
	if c.builtinFS == nil {
		return c, nil
	}
	b := NewCatalog()
	if err := b.AddBuiltin(c.builtinFS, c.builtinDir); err != nil {
		return nil, err
	}
	return b, nil
}

// Shadows reports the built-in lab (as "builtin:labs/<file>") that the
// disk lab of this name hides, if it hides one whose file differs.
func (c *Catalog) Shadows(name string) (string, bool) {
	b, ok := c.shadowed[name]
	return b, ok
}

// Names lists the labs, sorted.
func (c *Catalog) Names() []string { return sortedKeys(c.labs) }

// List returns the labs sorted by name.
func (c *Catalog) List() []*Lab {
	out := make([]*Lab, 0, len(c.labs))
	for _, n := range c.Names() {
		out = append(out, c.labs[n])
	}
	return out
}

// NotFound is returned when a lab name is not in the catalog.
type NotFound struct {
	Name  string
	Known []string
}

func (e *NotFound) Error() string {
	hint := ""
	if c := closest(e.Name, e.Known); c != "" && c != e.Name {
		hint = fmt.Sprintf(" (did you mean %q?)", c)
	}
	return fmt.Sprintf("unknown lab %q%s (known: %s; or pass a lab file with --file)", e.Name, hint, strings.Join(e.Known, ", "))
}

func isYAML(n string) bool { return strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") }
