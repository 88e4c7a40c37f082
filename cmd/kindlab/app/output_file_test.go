package app_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
)

// -o of kit save and bundle create is written beside the target and renamed
// over it, so a target that is not a regular file (a symlink, a device, a
// FIFO, a socket) would be replaced: refused before any work, exit 2, one
// line, and the node is left as it was.
func TestOutputFileNotRegularRefused(t *testing.T) {
	dir := isolate(t)
	victim := filepath.Join(dir, "victim.txt")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.tar")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.tar")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock.tar")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nodes := map[string]string{link: "symbolic link", fifo: "FIFO", sock: "socket"}
	// A character device like /dev/full (1,7), where the process may make one.
	dev := filepath.Join(dir, "full")
	if err := syscall.Mknod(dev, syscall.S_IFCHR|0o666, int(1<<8|7)); err == nil {
		nodes[dev] = "character device"
	} else if os.Geteuid() == 0 {
		t.Fatalf("mknod as root: %v", err)
	}
	for node, kind := range nodes {
		before, _ := os.Lstat(node)
		for _, args := range [][]string{
			{"kit", "save", "base", "-o", node},
			{"bundle", "create", "base", "-o", node},
		} {
			code, out, errOut := run(t, args...)
			if code != cli.ExitUsage {
				t.Errorf("%v: exit %d, want 2 (%s%s)", args, code, out, errOut)
			}
			if strings.Count(errOut, "ERROR") != 1 || !strings.Contains(errOut, "--output "+node+": is a "+kind+", not a regular file") {
				t.Errorf("%v: want one ERROR line naming --output and %q, got %q", args, kind, errOut)
			}
		}
		after, err := os.Lstat(node)
		if err != nil || after.Mode() != before.Mode() {
			t.Errorf("%s was replaced: %v %v -> %v", node, err, before.Mode(), after)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the symlink's target was written: %q", b)
	}
}

// A directory of the output that this process cannot write is refused
// before any work (access(2): root is refused only where writes fail for
// root too, a read-only mount).
func TestOutputFileDirNotWritable(t *testing.T) {
	dir := filepath.Join(isolate(t), "ro")
	if err := os.Mkdir(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// Root writes through modes; /proc/sys is read-only to root in
		// containers (where CI runs), so it is the directory root cannot write.
		dir = "/proc/sys"
	}
	if err := os.WriteFile(filepath.Join(dir, "probe"), nil, 0o644); err == nil {
		t.Fatalf("%s is writable here; the test needs a directory this process cannot write", dir)
	}
	out := filepath.Join(dir, "kit.tar")
	code, _, errOut := run(t, "kit", "save", "base", "-o", out)
	if code != cli.ExitUsage || strings.Count(errOut, "ERROR") != 1 || !strings.Contains(errOut, "--output "+out+": directory "+dir+" is not writable") {
		t.Errorf("exit %d, %q", code, errOut)
	}
}
