package apparmor

import (
	"fmt"
	"os"

	"github.com/kindlab/kindlab/provision/internal/atomicfile"
)

// WriteInPlace replaces file with its migrated content (what Migrate
// returned for it), keeping the file's mode: the content is written whole
// beside it and renamed over it, so a write that fails (a full disk, a file
// size limit) leaves the original untouched and no temporary file behind.
// A symlink is written through to the file it names.
func WriteInPlace(file string, migrated []byte) error {
	info, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("rewrite %s: %w", file, err)
	}
	if err := atomicfile.WriteFile(file, migrated, info.Mode().Perm()); err != nil {
		return fmt.Errorf("%w (the file is unchanged)", err)
	}
	return nil
}
