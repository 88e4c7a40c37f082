package state

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// plant writes what a hostile user of the state directory may leave as a
// cluster's record: a symlink to /dev/zero (an unbounded read), a FIFO (a
// read that blocks), a file over MaxStateFile, JSON that does not parse, a
// record of another cluster than its directory.
func plant(t *testing.T, s Store) map[string]string {
	t.Helper()
	file := func(cluster string) string {
		dir := s.ClusterDir(cluster)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, recordFile)
	}
	if err := os.Symlink("/dev/zero", file("zero")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(file("fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file("huge"), []byte(`{"cluster":"huge","lab":"`+strings.Repeat("x", MaxStateFile)+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file("badjson"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file("rh-junk"), []byte(`{"cluster":"rh-victim","fleet":"F"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"zero":    "is a symbolic link, not a regular file",
		"fifo":    "is a FIFO, not a regular file",
		"huge":    "larger than 1024 KiB",
		"badjson": "not a kindlab record",
		"rh-junk": `records cluster "rh-victim", not "rh-junk"`,
	}
}

// within fails the test if f takes longer than d: a blocking read must
// show as a failure, not a hung test.
func within(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still reading after %s", d)
	}
}

func TestHostileRecordsAreRefusedOneByOne(t *testing.T) {
	s := Store{Root: t.TempDir()}
	want := plant(t, s)
	if err := s.Save(Record{Cluster: "good", Lab: "base"}); err != nil {
		t.Fatal(err)
	}
	within(t, 5*time.Second, func() {
		recs, bad, err := s.List()
		if err != nil {
			t.Errorf("List: %v", err)
			return
		}
		if len(recs) != 1 || recs[0].Cluster != "good" {
			t.Errorf("List: good records %+v, want only good", recs)
		}
		if len(bad) != len(want) {
			t.Errorf("List: %d bad records, want %d: %v", len(bad), len(want), bad)
		}
		for cluster, reason := range want {
			_, err := s.Load(cluster)
			file := filepath.Join(s.ClusterDir(cluster), recordFile)
			var bf *BadFileError
			if !errors.Is(err, ErrBadStateFile) || !errors.As(err, &bf) || bf.File != file || !strings.Contains(err.Error(), reason) {
				t.Errorf("Load(%s): %v, want a *BadFileError of %s: %s", cluster, err, file, reason)
			}
		}
	})
	// Check results and lock holders are read the same way.
	within(t, 5*time.Second, func() {
		if err := syscall.Mkfifo(filepath.Join(s.ClusterDir("good"), checksFile), 0o644); err != nil {
			t.Error(err)
			return
		}
		if _, err := s.LoadChecks("good"); !errors.Is(err, ErrBadStateFile) {
			t.Errorf("LoadChecks of a FIFO: %v, want ErrBadStateFile", err)
		}
		if err := os.MkdirAll(filepath.Join(s.Root, "locks"), 0o755); err != nil {
			t.Error(err)
			return
		}
		if err := os.Symlink("/dev/zero", s.LockFile("zero")); err != nil {
			t.Error(err)
			return
		}
		if h := readHolder(s.LockFile("zero")); h.PID != 0 {
			t.Errorf("holder of a lock file linked to /dev/zero: %+v", h)
		}
	})
}

// A lock file planted as a symlink is refused, not followed: taking it
// would write the holder's line into the link's target.
func TestLockFileSymlinkRefused(t *testing.T) {
	s := Store{Root: t.TempDir()}
	victim := filepath.Join(s.Root, "victim.txt")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Root, "locks"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, s.LockFile("x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(s.Root, "none"), s.LockFile("dangling")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(s.LockFile("fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for cluster, kind := range map[string]string{"x": "symbolic link", "dangling": "symbolic link", "fifo": "FIFO"} {
		within(t, 5*time.Second, func() {
			l, err := s.Lock(context.Background(), cluster, LockOptions{})
			if err == nil {
				l.Unlock()
			}
			if !errors.Is(err, ErrBadStateFile) || !strings.Contains(err.Error(), s.LockFile(cluster)+": is a "+kind) {
				t.Errorf("Lock(%s): %v, want ErrBadStateFile naming the %s", cluster, err, kind)
			}
		})
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(s.Root, "none")); err == nil {
		t.Error("the dangling link's target was created")
	}
}
