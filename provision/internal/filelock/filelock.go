// Package filelock takes exclusive advisory locks on files with flock(2).
// The kernel drops such a lock when the file is closed or the process
// holding it exits, however it exits (kill -9, a crash, a reboot): a lock
// file left behind by a dead process never blocks anyone, unlike a pid file.
package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/kindlab/kindlab/provision/regular"
)

// ErrLocked is returned by TryLock, and by Lock once it gives up, when
// another open file description (another process, or another Lock in this
// one) holds the lock.
var ErrLocked = errors.New("locked by another process")

// poll is how often Lock tries again while waiting. flock(2) itself could
// block, but not under a context that Ctrl-C cancels.
const poll = 50 * time.Millisecond

// TryLock opens path (creating it, mode 0666 before the umask, if missing) and takes an
// exclusive lock on it without waiting. It returns the open file, which
// holds the lock until Unlock (or exit); ErrLocked if someone else holds it.
// A path that is not a regular file (a symlink, whose target the holder
// would overwrite, a FIFO, a device) is refused with a
// *regular.NotRegularError, not followed.
func TryLock(path string) (*os.File, error) {
	f, err := regular.Open(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := flock(f); err != nil {
		f.Close()
		if errors.Is(err, ErrLocked) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// Lock is TryLock that waits while the lock is held: up to wait (0: not at
// all; negative: until ctx is done), calling busy once, when it first finds
// the lock held, so the caller can say who it is waiting for. It gives up
// with ErrLocked when wait runs out, and with ctx's error (wrapping
// ErrLocked too) when ctx is done first.
func Lock(ctx context.Context, path string, wait time.Duration, busy func()) (*os.File, error) {
	var deadline <-chan time.Time
	if wait >= 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	told := false
	for {
		f, err := TryLock(path)
		if !errors.Is(err, ErrLocked) {
			return f, err
		}
		if wait == 0 {
			return nil, ErrLocked
		}
		if !told && busy != nil {
			busy()
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrLocked, context.Cause(ctx))
		case <-deadline:
			return nil, ErrLocked
		case <-time.After(poll):
		}
	}
}

// Unlock releases the lock and closes f. Closing alone would release it
// too; the explicit unlock makes the release not depend on other copies
// of the descriptor (a child process that inherited it).
func Unlock(f *os.File) error {
	if f == nil {
		return nil
	}
	uerr := funlock(f)
	cerr := f.Close()
	return errors.Join(uerr, cerr)
}
