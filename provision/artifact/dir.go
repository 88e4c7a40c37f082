package artifact

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// OpenDir opens an artifact directory on disk for Build. Beyond Build's own
// lexical check it resolves every symlink on the real disk, because a link
// through another link (d -> ., e -> d/../x) can leave the directory while
// looking like it stays inside.
func OpenDir(dir string) (fs.FS, error) {
	info, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("artifact directory %s does not exist", dir)
		}
		return nil, fmt.Errorf("artifact directory %s: %w", dir, err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("artifact directory %s is a file: give the directory that holds the artifact's files", dir)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("artifact directory %s: %w", dir, err)
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("artifact directory %s: %w", dir, err)
	}
	files := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read artifact directory %s: %w", dir, err)
		}
		if !d.IsDir() {
			files++
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		target, _ := os.Readlink(p)
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return fmt.Errorf("symlink %s -> %s in %s does not resolve: %w", rel, target, dir, err)
		}
		if real != root && !strings.HasPrefix(real, root+string(filepath.Separator)) {
			return fmt.Errorf("symlink %s -> %s leaves the artifact directory %s (resolves to %s)", rel, target, dir, real)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if files == 0 {
		return nil, fmt.Errorf("artifact directory %s is empty: it needs at least one file", dir)
	}
	return os.DirFS(root), nil
}
