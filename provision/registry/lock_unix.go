//go:build unix

package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lock serialises kindlab processes on this machine that create or remove
// the same registry: Docker lets two racing creates make two networks of
// one name, and a create that loses a race must not delete the winner's
// container. Processes against a remote engine from other machines are not
// covered; Ensure's conflict handling and network de-duplication are.
func lock(ctx context.Context, name string) (unlock func(), err error) {
	p := filepath.Join(os.TempDir(), "kindlab-registry-"+name+".lock")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for another kindlab using registry %s (lock %s): %w", name, p, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
