// Package atomicfile writes files so that no reader ever sees a part of
// one, and no failed write ever leaves a part behind: kindlab's state
// records, check results, image aliases, kubeconfig files it hands out and
// manifests it rewrites in place all go through it.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/sys/atomicwriter"
)

// WriteFile writes data to path with permissions perm (exactly: the umask
// does not apply). The data goes to a temporary file of a unique name in
// path's directory (os.CreateTemp, through moby's atomicwriter, as the
// docker CLI writes its config), is synced, and is renamed over path. So
// concurrent writers never share a temporary file, readers see the old
// content or the new one and nothing in between, and a write that fails
// (a full disk, RLIMIT_FSIZE) leaves path as it was and removes the
// temporary file.
//
// A path that is a symbolic link is written through, as os.WriteFile
// would: the file it points to is replaced and the link stays. The
// directory must exist. The replaced file gets the writing user as owner.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	target := path
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if target, err = filepath.EvalSymlinks(path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := atomicwriter.WriteFile(target, data, perm); err != nil {
		// The temporary file's name means nothing to the user; path does.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
