package lab

import (
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
}

// NewCatalog returns an empty catalog.
func NewCatalog() *Catalog {
	return &Catalog{labs: map[string]*Lab{}, docs: map[string]*document{}}
}

// AddBuiltin adds every *.yaml directly under dir in fsys as a built-in lab.
func (c *Catalog) AddBuiltin(fsys fs.FS, dir string) error {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return fmt.Errorf("read built-in labs: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || !isYAML(e.Name()) {
			continue
		}
		p := path.Join(dir, e.Name())
		if _, err := c.add(fsys, p, "builtin:"+p, true); err != nil {
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

// AddFile adds one lab file from disk and returns it.
func (c *Catalog) AddFile(file string) (*Lab, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, &Error{File: file, Msg: err.Error()}
	}
	fsys, p := diskFS(abs)
	for _, l := range c.labs {
		if l.Origin.FS == fsys && l.Origin.Path == p {
			return l, nil // the same file named twice (./labs and --file)
		}
	}
	return c.add(fsys, p, file, false)
}

func (c *Catalog) add(fsys fs.FS, p, display string, builtin bool) (*Lab, error) {
	data, err := fs.ReadFile(fsys, p)
	if err != nil {
		return nil, &Error{File: display, Msg: fmt.Sprintf("cannot read lab file: %v", unwrapPathError(err))}
	}
	doc, err := parse(data, Origin{FS: fsys, Path: p, Display: display})
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
	return fmt.Sprintf("unknown lab %q (known: %s; or pass a lab file with --file)", e.Name, strings.Join(e.Known, ", "))
}

func isYAML(n string) bool { return strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") }

// rootFS is one fs.FS for the whole disk, so that a lab's relative paths
// may reach sibling directories (labs/ -> ../fixtures/) while checks on the
// resolved path still refuse to leave the tree.
var rootFS = os.DirFS("/")

func diskFS(abs string) (fs.FS, string) {
	return rootFS, strings.TrimPrefix(filepath.ToSlash(abs), "/")
}
