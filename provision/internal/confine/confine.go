// Package confine is the one file layer for trees that come from someone
// else: a bundle's lab, a kit, a lab file's references. It bounds what
// reading an archive may cost (Limits, Counter), checks a tree's entries
// before anything is written (Check: unique paths, valid names, symlinks
// that stay inside their tree even through other symlinks), and writes a
// checked tree through Go's os.Root (Extract), so that no path, `..` or
// symlink leaves the directory whatever the order of entries.
package confine

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

// Limits bound an archive from someone else. A size in a header is a claim:
// it is compared with these before anything is allocated, and the bytes
// actually read are counted against them as they stream.
type Limits struct {
	// File is the largest one entry may be, in bytes.
	File int64
	// Total is the most all entries together may be, in bytes, after
	// decompression (a gzip bomb stops here).
	Total int64
	// Held is the most this process keeps in memory of the entries it needs
	// whole (a bundle's lab tree), in bytes.
	Held int64
	// Entries is the most entries an archive may have.
	Entries int
}

// ErrTooLarge is wrapped by every error about an archive over its Limits.
var ErrTooLarge = errors.New("over the size limit")

// TooLarge reports what went over which limit, in one line.
func TooLarge(what string, limit int64, flag string) error {
	msg := fmt.Sprintf("%s is larger than the limit of %s", what, Bytes(limit))
	if flag != "" {
		msg += fmt.Sprintf(" (raise it with %s if the file is trusted)", flag)
	}
	return fmt.Errorf("%s: %w", msg, ErrTooLarge)
}

// Bytes prints a size the way kubectl prints quantities (Ki, Mi, Gi, Ti).
func Bytes(n int64) string {
	units := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi"}
	i := 0
	for n >= 1024 && n%1024 == 0 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%d%s", n, units[i])
}

// Counter is a reader that fails once more than Max bytes came through it,
// with the error Over returns. It counts what was really read, not what a
// header claimed.
type Counter struct {
	R    io.Reader
	Max  int64
	N    int64
	Over func() error
}

// Read reads from R and counts.
func (c *Counter) Read(p []byte) (int, error) {
	if c.N > c.Max {
		return 0, c.Over()
	}
	// Ask for at most one byte more than allowed: enough to know it is over.
	if rest := c.Max - c.N + 1; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := c.R.Read(p)
	c.N += int64(n)
	if c.N > c.Max {
		return n, c.Over()
	}
	return n, err
}

// ReadAll reads r whole, failing with over() once it passes max bytes. It
// never allocates from a claimed size: the buffer grows with what arrives.
func ReadAll(r io.Reader, max int64, over func() error) ([]byte, error) {
	return io.ReadAll(&Counter{R: r, Max: max, Over: over})
}

// Entry is one member of a tree: a regular file, a directory or a symlink.
type Entry struct {
	// Path is slash-separated and relative to the tree's root.
	Path string
	Dir  bool
	// Link is a symlink's target; "" for anything else.
	Link string
}

// Check verifies a tree's entries before anything is written: every path
// is a valid unrooted path (no "..", no backslash, no absolute), no path
// appears twice, nothing lies below a symlink, and every symlink resolves
// (following the tree's other symlinks, as the kernel would) to somewhere
// inside the subtree named by its path's first depth components — so a link
// in lab/disk/… must stay in lab/disk. Links are refused when absolute, when
// they leave, or when they loop.
func Check(entries []Entry, depth int) error {
	links := map[string]string{}
	seen := make(map[string]bool, len(entries))
	files := map[string]bool{}
	for _, e := range entries {
		// Bounded before anything walks them: a path or link target longer
		// than the kernel's PATH_MAX would cost time, not name a file.
		if len(e.Path) > maxPath || strings.Count(e.Path, "/") > maxDepth {
			return fmt.Errorf("a path of %d bytes is longer than an archive's paths may be (%d bytes, %d levels)", len(e.Path), maxPath, maxDepth)
		}
		if len(e.Link) > maxPath {
			return fmt.Errorf("symlink %q has a target of %d bytes, longer than %d", e.Path, len(e.Link), maxPath)
		}
		if !ValidPath(e.Path) {
			return fmt.Errorf("%q is not a path inside the archive", e.Path)
		}
		if seen[e.Path] {
			return fmt.Errorf("%q appears twice (an archive where a later entry replaces an earlier one is refused)", e.Path)
		}
		seen[e.Path] = true
		switch {
		case e.Link != "":
			links[e.Path] = e.Link
		case !e.Dir:
			files[e.Path] = true
		}
	}
	for _, e := range entries {
		for d := path.Dir(e.Path); d != "."; d = path.Dir(d) {
			if _, ok := links[d]; ok {
				return fmt.Errorf("%q lies below the symlink %q", e.Path, d)
			}
			if files[d] {
				return fmt.Errorf("%q lies below the file %q", e.Path, d)
			}
		}
	}
	names := make([]string, 0, len(links))
	for p := range links {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		target := links[p]
		parts := strings.Split(p, "/")
		if len(parts) <= depth {
			return fmt.Errorf("symlink %q -> %q is not inside a tree", p, target)
		}
		root := strings.Join(parts[:depth], "/")
		if path.IsAbs(target) {
			return fmt.Errorf("symlink %q -> %q is absolute: links must stay inside %s", p, target, root)
		}
		real, err := Resolve(links, path.Dir(p)+"/"+target)
		if err != nil {
			return fmt.Errorf("symlink %q -> %q: %v", p, target, err)
		}
		if real != root && !strings.HasPrefix(real, root+"/") {
			return fmt.Errorf("symlink %q -> %q leaves %s (it resolves to %s)", p, target, root, real)
		}
	}
	return nil
}

// maxHops is the kernel's limit on symlinks followed in one lookup (ELOOP);
// maxPath is PATH_MAX; maxDepth bounds how many levels a path may have.
const (
	maxHops  = 40
	maxPath  = 4096
	maxDepth = 256
)

// Resolve walks p component by component as the kernel would, replacing
// every symlink of links met on the way by its target, and returns the
// path it really names, relative to the tree's root. It fails when the walk
// goes above the root, meets an absolute link, or follows more than 40
// links.
func Resolve(links map[string]string, p string) (string, error) {
	todo := strings.Split(p, "/")
	var done []string
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				return "", errors.New("it goes above the archive's root")
			}
			done = done[:len(done)-1]
			continue
		}
		done = append(done, c)
		t, ok := links[strings.Join(done, "/")]
		if !ok {
			continue
		}
		if hops++; hops > maxHops {
			return "", errors.New("too many levels of symbolic links")
		}
		if path.IsAbs(t) {
			return "", fmt.Errorf("it passes through the absolute symlink %s -> %s", strings.Join(done, "/"), t)
		}
		done = done[:len(done)-1]
		todo = append(strings.Split(t, "/"), todo...)
	}
	return strings.Join(done, "/"), nil
}

// ValidPath says whether p names something inside an archive: unrooted,
// slash-separated, no "." or ".." element, no backslash, no NUL.
func ValidPath(p string) bool {
	return fs.ValidPath(p) && p != "." && !strings.ContainsAny(p, "\\\x00")
}

// Extract writes a tree that Check accepted under dir, every write through
// an os.Root opened on dir: whatever the entries say, nothing is created,
// written or followed outside it. content returns a regular file's bytes.
// Files are written 0644 and directories 0755.
func Extract(dir string, entries []Entry, content func(p string) []byte) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, e := range entries {
		if d := path.Dir(e.Path); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("extract %s: %w", e.Path, err)
			}
		}
		switch {
		case e.Link != "":
			err = root.Symlink(e.Link, e.Path)
		case e.Dir:
			err = root.MkdirAll(e.Path, 0o755)
		default:
			// O_EXCL: an entry never writes through something already there.
			var f *os.File
			f, err = root.OpenFile(e.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err == nil {
				_, err = f.Write(content(e.Path))
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
		}
		if err != nil {
			return fmt.Errorf("extract %s: %w", e.Path, err)
		}
	}
	return nil
}
