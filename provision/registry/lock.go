package registry

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kindlab/kindlab/provision/internal/filelock"
)

// lock serialises kindlab processes on this machine that create or remove
// the same registry: Docker lets two racing creates make two networks of
// one name, and a create that loses a race must not delete the winner's
// container. Processes against a remote engine from other machines are not
// covered; Ensure's conflict handling and network de-duplication are.
func lock(ctx context.Context, name string) (unlock func(), err error) {
	p := filepath.Join(os.TempDir(), "kindlab-registry-"+name+".lock")
	f, err := filelock.Lock(ctx, p, -1, nil)
	if err != nil {
		return nil, fmt.Errorf("wait for another kindlab using registry %s (lock %s): %w", name, p, err)
	}
	return func() { _ = filelock.Unlock(f) }, nil
}
