package state

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A holder's lines reach its progress file as it writes them, through
// Tee, whatever the writer it tees; the next holder starts the file
// afresh; the file keeps the last holder's lines after it ends; a reader
// follows it by offset.
func TestTeeWritesTheProgressFile(t *testing.T) {
	s := Store{Root: t.TempDir()}
	ctx := context.Background()
	l, err := s.Lock(ctx, "lab", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var term bytes.Buffer
	w := l.Tee(&term)
	if l.Tee(w) != w {
		t.Errorf("Tee of its own tee is not that tee: lines would be written twice")
	}
	fmt.Fprintf(w, " • Creating cluster lab\n")
	lines, next, err := ReadProgress(s.ProgressFile("lab"), 0)
	if err != nil || len(lines) != 1 || lines[0] != " • Creating cluster lab" {
		t.Fatalf("after one line: %q, %v", lines, err)
	}
	fmt.Fprintf(l.Tee(nil), " ✓ Creating cluster lab (1.0s)\n ✓ half")
	lines, next, err = ReadProgress(s.ProgressFile("lab"), next)
	if err != nil || len(lines) != 1 || lines[0] != " ✓ Creating cluster lab (1.0s)" {
		t.Fatalf("from offset %d: %q, %v (a line without its newline waits)", next, lines, err)
	}
	if term.String() != " • Creating cluster lab\n" {
		t.Errorf("the terminal got %q", term.String())
	}
	l.Unlock()
	fmt.Fprintf(w, "after unlock\n")
	if b, _ := os.ReadFile(s.ProgressFile("lab")); strings.Contains(string(b), "after unlock") {
		t.Errorf("written after Unlock: %q", b)
	}

	l2, err := s.Lock(ctx, "lab", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Unlock()
	if b, _ := os.ReadFile(s.ProgressFile("lab")); len(b) != 0 {
		t.Errorf("the next holder's progress file starts with %q", b)
	}
	fmt.Fprintln(l2.Tee(nil), "second")
	// A reader still at the last holder's offset starts over.
	lines, _, err = ReadProgress(s.ProgressFile("lab"), next+100)
	if err != nil || len(lines) != 1 || lines[0] != "second" {
		t.Errorf("after a new holder: %q, %v", lines, err)
	}
}

// Writing never fails the holder: a progress file that cannot be made (a
// directory in its place) or that is gone leaves the terminal's lines
// as they are, without an error.
func TestTeeNeverFails(t *testing.T) {
	s := Store{Root: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(s.ProgressFile("lab"), "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(context.Background(), "lab", LockOptions{})
	if err != nil {
		t.Fatalf("a progress file that cannot be made failed the lock: %v", err)
	}
	defer l.Unlock()
	var term bytes.Buffer
	if n, err := fmt.Fprintf(l.Tee(&term), "line\n"); err != nil || n != 5 || term.String() != "line\n" {
		t.Errorf("write: %d %v %q", n, err, term.String())
	}

	// /dev/full: every write fails with ENOSPC, as on a full disk.
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	l.progress = &progressFile{f: full}
	term.Reset()
	for i := 0; i < 3; i++ {
		if _, err := fmt.Fprintf(l.Tee(&term), "line %d\n", i); err != nil {
			t.Fatalf("a full disk failed the write: %v", err)
		}
	}
	if term.String() != "line 0\nline 1\nline 2\n" || l.progress.f != nil {
		t.Errorf("terminal %q, progress file still written: %v", term.String(), l.progress.f != nil)
	}
}

// A progress file is read as untrusted: a bounded chunk per call, long
// lines cut, control characters and escape sequences dropped, no more
// than ProgressLinesPerRead lines, and nothing but a regular file opened
// (a FIFO would block a reader, a symbolic link lead elsewhere).
func TestReadProgressDoesNotTrustTheFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.progress")

	// One line of 1 MiB without a newline: read a chunk at a time, cut.
	if err := os.WriteFile(file, bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	lines, next, err := ReadProgress(file, 0)
	if err != nil || next != ProgressReadChunk || len(lines) != 1 || len([]rune(lines[0])) != ProgressLineRunes+1 || !strings.HasSuffix(lines[0], "…") {
		t.Fatalf("a huge line: next %d, %d line(s) %v", next, len(lines), err)
	}
	// Its rest is skipped, a chunk at a time, up to the next line.
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "x\nafter\n")
	f.Close()
	var calls int
	for lines = nil; len(lines) == 0 && calls < 100; calls++ {
		if lines, next, err = ReadProgress(file, next); err != nil {
			t.Fatal(err)
		}
	}
	if len(lines) != 1 || lines[0] != "after" || next != 1<<20+8 {
		t.Fatalf("after the huge line: %q at %d after %d calls", lines, next, calls)
	}
	t.Logf("the rest of a 1 MiB line skipped in %d calls", calls)

	// Many short lines: the last ProgressLinesPerRead, after a count.
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "l%d\n", i)
	}
	// Colour, a cursor move, a title sequence, a bell, a tab, bad UTF-8.
	b.WriteString("\x1b[32m ✓ done\x1b[0m\x1b[2K\x1b]0;title\x07\a\tok \xff\n")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	lines, next, err = ReadProgress(file, 0)
	if err != nil || next != int64(b.Len()) || len(lines) != ProgressLinesPerRead+1 {
		t.Fatalf("1001 lines: next %d of %d, %d lines, %v", next, b.Len(), len(lines), err)
	}
	if lines[0] != "(901 more lines not shown)" || lines[1] != "l901" {
		t.Errorf("first lines %q", lines[:2])
	}
	if last := lines[len(lines)-1]; last != " ✓ done ok \uFFFD" {
		t.Errorf("cleaned line %q", last)
	}

	// A FIFO: refused at once, not waited on.
	fifo := filepath.Join(dir, "fifo.progress")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, _, err := ReadProgress(fifo, 0); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("a FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadProgress blocked on a FIFO")
	}
	// A symbolic link to a readable file: refused, not followed.
	link := filepath.Join(dir, "link.progress")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	if lines, _, err := ReadProgress(link, 0); err == nil || len(lines) != 0 {
		t.Errorf("a symbolic link was followed: %d lines, %v", len(lines), err)
	}
	// Missing: nothing yet.
	if lines, next, err := ReadProgress(filepath.Join(dir, "none"), 7); err != nil || lines != nil || next != 7 {
		t.Errorf("missing file: %q %d %v", lines, next, err)
	}
}

// Taking the lock replaces whatever is at the progress file's path: a
// symbolic link planted there is removed, not written through.
func TestLockReplacesAPlantedProgressLink(t *testing.T) {
	s := Store{Root: t.TempDir()}
	target := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(target, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(s.ProgressFile("lab")), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, s.ProgressFile("lab")); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(context.Background(), "lab", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(l.Tee(nil), "progress")
	l.Unlock()
	if b, _ := os.ReadFile(target); string(b) != "keep\n" {
		t.Errorf("the link's target was written: %q", b)
	}
	if fi, err := os.Lstat(s.ProgressFile("lab")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("progress file: %v %v", fi, err)
	}
}
