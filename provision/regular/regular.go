// Package regular opens files that kindlab wrote for itself (cluster
// records, lock files, check results, images.json) and that anyone who
// can write the state directory may have replaced: with a symlink (to
// /dev/zero, to a file elsewhere that a write would clobber), a FIFO (a
// read blocks forever), a device, or a file of gigabytes. Open refuses
// anything but a regular file without following or blocking on it;
// ReadFile also bounds what it reads.
package regular

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNotRegular is wrapped by Open's error for a path that exists and is
// not a regular file (a symlink, FIFO, socket, device or directory).
var ErrNotRegular = errors.New("not a regular file")

// NotRegularError is Open's refusal of a path that is not a regular
// file; Kind names what it is ("symbolic link", "FIFO", …).
type NotRegularError struct{ Path, Kind string }

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s: is a %s, not a regular file", e.Path, e.Kind)
}

// Is makes errors.Is(err, ErrNotRegular) true.
func (e *NotRegularError) Is(target error) bool { return target == ErrNotRegular }

// ErrTooLarge is wrapped by ReadFile's error for a file over its bound.
var ErrTooLarge = errors.New("file too large")

// Open opens path with flag (os.O_RDONLY, os.O_RDWR|os.O_CREATE, …) plus
// O_NOFOLLOW (a final symlink fails, ELOOP) and O_NONBLOCK (opening a FIFO
// does not wait for a writer), and then refuses, by fstat of what it
// opened, anything but a regular file. Only the last path element is
// checked: the state directory itself is the user's choice. A missing file
// is an error wrapping fs.ErrNotExist; a refused one is a
// *NotRegularError.
func Open(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, &NotRegularError{Path: path, Kind: "symbolic link"}
		}
		return nil, err
	}
	return onlyRegular(f, path)
}

// onlyRegular returns f if what it opened is a regular file, else closes
// it and returns a *NotRegularError.
func onlyRegular(f *os.File, path string) (*os.File, error) {
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, &NotRegularError{Path: path, Kind: Kind(st.Mode())}
	}
	return f, nil
}

// OpenInput opens, read-only, a file a user names as input (a kit, a
// bundle, a manifest), following symlinks as any command does, and
// refuses, by fstat of what it opened, anything but a regular file: a
// FIFO would block the read forever (and os.Open itself, which no signal
// interrupts), a device would be read without end. O_NONBLOCK only
// affects the open of a FIFO or device; reads of a regular file block as
// usual. A missing file is an error wrapping fs.ErrNotExist; a refused one
// is a *NotRegularError.
func OpenInput(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return onlyRegular(f, path)
}

// Cause is what to say of an error of Open or OpenInput after the path
// (which the caller names once): "it is a FIFO" for a *NotRegularError,
// the bare cause of an *os.PathError ("no such file or directory"), else
// err itself.
func Cause(err error) error {
	var nr *NotRegularError
	var pe *os.PathError
	switch {
	case errors.As(err, &nr):
		return fmt.Errorf("it is a %s", nr.Kind)
	case errors.As(err, &pe):
		return pe.Err
	}
	return err
}

// ReadFile reads a regular file of at most limit bytes (Open's checks,
// then the bound: a larger file is an error wrapping ErrTooLarge, after
// reading limit+1 bytes, never more).
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := Open(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := ReadAtMost(f, limit)
	if errors.Is(err, ErrTooLarge) {
		return nil, fmt.Errorf("%s: larger than %d bytes: %w", path, limit, ErrTooLarge)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// ReadAtMost reads r to its end if that is at most limit bytes, and is
// ErrTooLarge after reading limit+1 bytes otherwise (never more: standard
// input or a pipe may not end).
func ReadAtMost(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, ErrTooLarge
	}
	return b, nil
}

// Kind names the type of a file that is not regular, for error messages.
func Kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	default:
		return "special file (" + m.Type().String() + ")"
	}
}
