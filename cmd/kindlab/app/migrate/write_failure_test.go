package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// fsizeEnv makes the test binary, run again by a test, be `kindlab migrate`
// under RLIMIT_FSIZE of that many bytes: no file it writes may grow past
// that (writes beyond fail with EFBIG; Go ignores SIGXFSZ).
const fsizeEnv = "KINDLAB_MIGRATE_TEST_FSIZE"

func TestMain(m *testing.M) {
	if v := os.Getenv(fsizeEnv); v != "" {
		n, _ := strconv.ParseUint(v, 10, 64)
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			fmt.Fprintln(os.Stderr, "setrlimit:", err)
			os.Exit(3)
		}
		s := cli.StdStreams()
		os.Exit(cli.Execute(context.Background(), NewCommand(s), s, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// manifests is n pods with the deprecated annotation, so that the migrated
// file (each pod gains a securityContext) is larger than the original.
func manifests(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		if i > 0 {
			b.WriteString("---\n")
		}
		b.WriteString(strings.Replace(legacy, "name: p\n", fmt.Sprintf("name: p%d\n", i), 1))
	}
	return b.Bytes()
}

// assertUntouched checks that a failed -w left file exactly as it was
// (content and mode) and nothing else in its directory.
func assertUntouched(t *testing.T, file string, want []byte, mode os.FileMode, others ...string) {
	t.Helper()
	got, err := os.ReadFile(file)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s changed by a failed write (%v): %d bytes, want the original %d", file, err, len(got), len(want))
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != mode {
		t.Errorf("%s mode changed: %v (%v), want %v", file, st.Mode().Perm(), err, mode)
	}
	entries, _ := os.ReadDir(filepath.Dir(file))
	keep := map[string]bool{filepath.Base(file): true}
	for _, o := range others {
		keep[o] = true
	}
	for _, e := range entries {
		if !keep[e.Name()] {
			t.Errorf("left beside %s: %s", filepath.Base(file), e.Name())
		}
	}
}

// `migrate apparmor -w` whose write fails (here: the file size limit)
// leaves the original file whole, with its mode, and no temporary file;
// it says so in one line and exits 1. A file migrated before it stays
// migrated: each file is replaced whole or not at all.
func TestAppArmorWriteFailureLeavesTheFile(t *testing.T) {
	dir := t.TempDir()
	small, big := filepath.Join(dir, "small.yaml"), filepath.Join(dir, "big.yaml")
	bigIn := manifests(200)
	if err := os.WriteFile(small, []byte(legacy), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, bigIn, 0o600); err != nil {
		t.Fatal(err)
	}
	// Room for the small file's migration, not for the big one's.
	limit := len(bigIn) / 2
	cmd := exec.Command(os.Args[0], "apparmor", "-w", small, big)
	cmd.Env = append(os.Environ(), fsizeEnv+"="+strconv.Itoa(limit))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != cli.ExitError {
		t.Fatalf("migrate -w under a %d-byte file size limit: %v, want exit 1\n%s", limit, err, stderr.String())
	}
	last := strings.TrimSpace(stderr.String())
	last = last[strings.LastIndex(last, "\n")+1:]
	if !strings.HasPrefix(last, "ERROR: write "+big+": file too large (the file is unchanged)") {
		t.Errorf("error line %q", last)
	}
	assertUntouched(t, big, bigIn, 0o600, "small.yaml")
	if got, _ := os.ReadFile(small); !strings.Contains(string(got), "localhostProfile: my-profile") {
		t.Errorf("the small file, written before the failure, is not migrated:\n%s", got)
	}
}

// The same on a full disk: a 64 KiB tmpfs holds a 58 KiB manifest whose
// migrated form (13% larger) does not fit at all. Written in place it
// would be cut off part way; replaced whole, the original stays. Mounting
// needs root.
func TestAppArmorWriteOntoFullDiskLeavesTheFile(t *testing.T) {
	if os.Geteuid() != 0 {
		registrytest.SkipOrFail(t, "mounting a small tmpfs to fill needs root")
	}
	full := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "kindlab-test-full", full).CombinedOutput(); err != nil {
		registrytest.SkipOrFail(t, fmt.Sprintf("mount tmpfs: %v: %s", err, out))
	}
	t.Cleanup(func() { _ = exec.Command("umount", full).Run() })
	file := filepath.Join(full, "pods.yaml")
	n := 1
	for len(manifests(n)) < 58<<10 {
		n++
	}
	in := manifests(n)
	if err := os.WriteFile(file, in, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := run(t, "", "apparmor", "-w", file)
	if err == nil || cli.CodeOf(err) != cli.ExitError || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("migrate -w onto a full disk: %v (exit %d), stderr %q", err, cli.CodeOf(err), errOut)
	}
	assertUntouched(t, file, in, 0o644)
}
