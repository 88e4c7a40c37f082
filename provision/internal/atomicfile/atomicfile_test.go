package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Writers of one file at once each succeed, the file is always one whole
// write, it gets exactly the mode asked for, and no temporary file stays.
func TestConcurrentWritersAndReaders(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	content := func(w int) []byte { return bytes.Repeat([]byte{byte('a' + w)}, 64<<10) }
	if err := WriteFile(file, content(0), 0o640); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if err := WriteFile(file, content(w), 0o640); err != nil {
					errs <- err
				}
				b, err := os.ReadFile(file)
				if err != nil || len(b) != 64<<10 || !bytes.Equal(b, bytes.Repeat(b[:1], len(b))) {
					errs <- fmt.Errorf("read %d bytes (%v): not one whole write", len(b), err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v (%v), want 0640", st.Mode().Perm(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left in the directory: %v", entries)
	}
}

// A symlink is written through: the file it names changes, the link stays.
// A directory that does not exist is an error naming the path.
func TestSymlinkAndMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	target, link := filepath.Join(dir, "target.yaml"), filepath.Join(dir, "link.yaml")
	if err := os.WriteFile(target, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("target.yaml", link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(link, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "new" {
		t.Errorf("target holds %q", b)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v %v", fi.Mode(), err)
	}
	missing := filepath.Join(dir, "no-such-dir", "f")
	if err := WriteFile(missing, []byte("x"), 0o644); err == nil || !errors.Is(err, fs.ErrNotExist) || !bytes.Contains([]byte(err.Error()), []byte(missing)) {
		t.Errorf("write into a missing directory: %v", err)
	}
}
