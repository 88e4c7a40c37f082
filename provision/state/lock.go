package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kindlab/kindlab/provision/internal/filelock"
	"github.com/kindlab/kindlab/provision/regular"
)

// ErrBusy is wrapped by the error Lock returns when another process holds
// the cluster (errors.Is); the error itself is a *BusyError.
var ErrBusy = errors.New("cluster busy")

// Holder is who holds a cluster's lock, as the holder wrote it into the
// lock file.
type Holder struct {
	PID int `json:"pid"`
	// Command is the holder's command line, e.g. "kindlab up one-node".
	Command string    `json:"command"`
	Since   time.Time `json:"since"`
}

// BusyError is a cluster another process is working on: up, down, reset
// or a bundle replay of it, or a fleet it belongs to.
type BusyError struct {
	Cluster string
	// Holder is zero when the holder could not be read (it had not yet
	// written itself into the lock file).
	Holder Holder
	// Waited is how long Lock waited before giving up (0: it did not).
	Waited time.Duration
	// File is the lock file.
	File string
}

func (e *BusyError) Error() string {
	who := "another kindlab process (lock " + e.File + ")"
	if e.Holder.PID > 0 {
		who = fmt.Sprintf("process %d (%s) since %s", e.Holder.PID, e.Holder.Command, e.Holder.Since.Local().Format(time.TimeOnly))
	}
	if e.Waited > 0 {
		return fmt.Sprintf("cluster %s is still held by %s after waiting %s; try again later, or wait longer with --wait-lock", e.Cluster, who, e.Waited.Round(time.Second))
	}
	return fmt.Sprintf("cluster %s is busy: held by %s; nothing was changed. Let it finish, or wait for it with --wait-lock DURATION (e.g. --wait-lock 10m)", e.Cluster, who)
}

// Is makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// LockOptions say how to take a cluster's lock.
type LockOptions struct {
	// Wait is how long to wait for a busy cluster: 0 fails at once with a
	// *BusyError, a negative value waits until the context is done.
	Wait time.Duration
	// Status, if set, is told once when Lock starts waiting, and for whom.
	Status io.Writer
}

// Lock is a cluster's lock, held.
type Lock struct {
	cluster string
	f       *os.File
	// progress is the holder's progress file (see Tee).
	progress *progressFile
}

// Cluster is the cluster the lock is for.
func (l *Lock) Cluster() string { return l.cluster }

// Unlock releases the lock; unlocking twice, or a nil Lock, is a no-op.
func (l *Lock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	if l.progress != nil {
		l.progress.close()
	}
	_ = filelock.Unlock(l.f)
	l.f = nil
}

// LockFile is the file a cluster's lock is taken on,
// <root>/locks/<cluster>.lock. It lives outside ClusterDir because Remove
// deletes that directory: a lock file deleted while held would let the
// next process lock a new file of the same name.
func (s Store) LockFile(cluster string) string {
	return filepath.Join(s.Root, "locks", cluster+".lock")
}

// Lock takes the cluster's lock, which every command that creates, changes
// or deletes a cluster holds from before it looks at anything until it is
// done (up, down, reset, bundle replay, and a fleet for all its members),
// so that two of them on one cluster never interleave: the second fails at
// once with a *BusyError naming the holder's pid and command, or waits
// (opts.Wait). It is an flock(2) on LockFile: a holder that dies releases
// it, so a stale file never blocks. The holder writes its pid, command line
// and start time into the file for the next one to name, and its progress
// lines into ProgressFile (through Tee), started afresh here.
//
// Locks are per open file: a second Lock of the same cluster in the same
// process is refused as busy too.
func (s Store) Lock(ctx context.Context, cluster string, opts LockOptions) (*Lock, error) {
	if cluster == "" || cluster == "." || cluster == ".." || strings.ContainsAny(cluster, `/\`) {
		return nil, fmt.Errorf("lock cluster %q: not a cluster name", cluster)
	}
	file := s.LockFile(cluster)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return nil, fmt.Errorf("lock cluster %s: %w", cluster, err)
	}
	start := time.Now()
	f, err := filelock.Lock(ctx, file, opts.Wait, func() {
		if opts.Status != nil {
			h := readHolder(file)
			who := "another kindlab process"
			if h.PID > 0 {
				who = fmt.Sprintf("process %d (%s)", h.PID, h.Command)
			}
			limit := "until interrupted"
			if opts.Wait > 0 {
				limit = "up to " + opts.Wait.String()
			}
			fmt.Fprintf(opts.Status, "Waiting for cluster %s, held by %s (%s)…\n", cluster, who, limit)
		}
	})
	if errors.Is(err, filelock.ErrLocked) {
		busy := &BusyError{Cluster: cluster, Holder: readHolder(file), File: file}
		if opts.Wait != 0 {
			busy.Waited = time.Since(start)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%w)", busy, context.Cause(ctx))
		}
		return nil, busy
	}
	var nr *regular.NotRegularError
	if errors.As(err, &nr) {
		// Someone planted it: taking it would write our holder line
		// through a symlink into its target.
		return nil, fmt.Errorf("lock cluster %s: %w", cluster, &BadFileError{File: file, Reason: "is a " + nr.Kind + ", not a regular file"})
	}
	if err != nil {
		return nil, fmt.Errorf("lock cluster %s: %w", cluster, err)
	}
	// The progress file starts afresh before the holder names itself: a
	// console that reads the new holder reads its lines, not the last one's.
	progress := openProgress(s.ProgressFile(cluster))
	if err := writeHolder(f); err != nil {
		progress.close()
		_ = filelock.Unlock(f)
		return nil, fmt.Errorf("lock cluster %s: %w", cluster, err)
	}
	return &Lock{cluster: cluster, f: f, progress: progress}, nil
}

// writeHolder replaces the previous holder's line with this process's.
// One write of a short line: a reader sees it whole or an empty file.
func writeHolder(f *os.File) error {
	b, err := json.Marshal(Holder{PID: os.Getpid(), Command: commandLine(), Since: time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err = f.WriteAt(append(b, '\n'), 0)
	return err
}

// readHolder reads who holds a lock. The holder writes itself just after
// taking it, so an empty file is read again for a moment before giving up.
func readHolder(file string) Holder {
	var h Holder
	for i := 0; i < 10; i++ {
		b, err := ReadFile(file)
		if err == nil && json.Unmarshal(b, &h) == nil && h.PID > 0 {
			return h
		}
		time.Sleep(20 * time.Millisecond)
	}
	return Holder{}
}

// commandLine is the process's command line with the program's base name,
// e.g. "kindlab up one-node", folded onto one line.
func commandLine() string {
	args := append([]string{filepath.Base(os.Args[0])}, os.Args[1:]...)
	return strings.Join(strings.Fields(strings.Join(args, " ")), " ")
}
