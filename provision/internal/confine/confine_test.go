package confine

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckRefusesEveryWayOut(t *testing.T) {
	file := func(p string) Entry { return Entry{Path: p} }
	link := func(p, to string) Entry { return Entry{Path: p, Link: to} }
	cases := []struct {
		name    string
		entries []Entry
		want    string // "" = accepted
	}{
		{"plain tree", []Entry{{Path: "lab/disk", Dir: true}, file("lab/disk/a.yaml"), link("lab/disk/b", "a.yaml")}, ""},
		{"link to a sibling dir", []Entry{file("lab/disk/x/f"), link("lab/disk/y", "x"), link("lab/disk/z", "y/f")}, ""},
		{"dotdot path", []Entry{file("lab/../x")}, "not a path inside the archive"},
		{"absolute path", []Entry{file("/etc/passwd")}, "not a path inside the archive"},
		{"backslash", []Entry{file(`lab\..\x`)}, "not a path inside the archive"},
		{"NUL", []Entry{file("lab/a\x00b")}, "not a path inside the archive"},
		{"duplicate", []Entry{link("lab/disk/d", "a"), file("lab/disk/d")}, `"lab/disk/d" appears twice`},
		{"below a link", []Entry{link("lab/disk/d", "."), file("lab/disk/d/x")}, `lies below the symlink "lab/disk/d"`},
		{"absolute link", []Entry{link("lab/disk/d", "/etc")}, "is absolute"},
		{"plain escape", []Entry{link("lab/disk/d", "../../x")}, "leaves lab/disk"},
		{"escape into the other tree", []Entry{link("lab/disk/d", "../builtin/x")}, "leaves lab/disk"},
		{"above the archive", []Entry{link("lab/disk/d", "../../../../etc/passwd")}, "goes above the archive's root"},
		// Issue 12: inside by its text, outside on disk.
		{"chain that looks inside", []Entry{link("lab/disk/c", "."), link("lab/disk/d", "c/c/c/c/../../../../x")}, "goes above the archive's root"},
		{"chain through a dir link", []Entry{link("lab/disk/up", ".."), link("lab/disk/d", "up/up/x")}, "leaves lab/disk"},
		{"loop", []Entry{link("lab/disk/a", "b"), link("lab/disk/b", "a")}, "too many levels of symbolic links"},
		{"link at tree root", []Entry{link("lab/disk", ".")}, "is not inside a tree"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.entries, 2)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused a safe tree: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("want one line with %q, got %v", tc.want, err)
			}
		})
	}
}

// Extract alone holds the line even for a tree Check would refuse: os.Root
// neither creates nor follows anything outside the directory.
func TestExtractStaysInsideWithoutCheck(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(parent, "outside")
	entries := []Entry{
		{Path: "c", Link: "."},
		{Path: "d", Link: "c/c/../../outside"},
		{Path: "d"}, // a second entry of the same path, as a file
		{Path: "e", Link: outside},
		{Path: "e/x"},
	}
	err := Extract(dir, entries, func(string) []byte { return []byte("pwned") })
	if err == nil {
		t.Fatal("Extract wrote through a link that leaves the root")
	}
	if _, err := os.Lstat(outside); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("something was written outside the root: %v", err)
	}
}

// FuzzCheckExtract: whatever entries arrive, a tree Check accepts extracts
// with nothing outside the directory, and every path in it resolves inside.
func FuzzCheckExtract(f *testing.F) {
	f.Add("lab/disk/c\x01.\nlab/disk/d\x01c/c/../../x\nlab/disk/d\n")
	f.Add("lab/disk/a\nlab/disk/b\x01a\nlab/disk/x\x02\nlab/disk/x/y\n")
	f.Add("lab/disk/up\x01..\nlab/disk/d\x01up/up/up/etc\n")
	f.Fuzz(func(t *testing.T, spec string) {
		var entries []Entry
		for _, line := range strings.Split(spec, "\n") {
			if line == "" || len(entries) > 64 {
				continue
			}
			p, link, _ := strings.Cut(line, "\x01")
			e := Entry{Path: strings.TrimSuffix(p, "\x02"), Link: link, Dir: strings.HasSuffix(p, "\x02")}
			entries = append(entries, e)
		}
		if Check(entries, 2) != nil {
			return
		}
		parent := t.TempDir()
		dir := filepath.Join(parent, "root")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = Extract(dir, entries, func(string) []byte { return []byte("x") })
		got, _ := os.ReadDir(parent)
		if len(got) != 1 {
			t.Fatalf("Extract created %d entries beside its root", len(got)-1)
		}
		real, _ := filepath.EvalSymlinks(dir)
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			r, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil // dangling inside: harmless
			}
			if r != real && !strings.HasPrefix(r, real+string(filepath.Separator)) {
				t.Fatalf("accepted link %s resolves outside the root to %s", p, r)
			}
			return nil
		})
	})
}

func TestCounterStopsABomb(t *testing.T) {
	// 64 MiB of zeros gzip to about 64 KiB.
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(make([]byte, 64<<20))
	zw.Close()
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	c := &Counter{R: zr, Max: 1 << 20, Over: func() error { return TooLarge("the test archive unpacked", 1<<20, "--max-total-size") }}
	n, err := io.Copy(io.Discard, c)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("copied %d bytes, err %v: want ErrTooLarge", n, err)
	}
	if n > 1<<20+1 {
		t.Fatalf("read %d bytes past a limit of 1 MiB", n)
	}
	if want := "the test archive unpacked is larger than the limit of 1Mi (raise it with --max-total-size if the file is trusted)"; !strings.Contains(err.Error(), want) {
		t.Fatalf("got %q", err)
	}
}

func TestReadAllNeverTrustsAClaim(t *testing.T) {
	_, err := ReadAll(strings.NewReader(strings.Repeat("x", 100)), 10, func() error { return TooLarge("x", 10, "") })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v", err)
	}
	b, err := ReadAll(strings.NewReader("abc"), 10, nil)
	if err != nil || string(b) != "abc" {
		t.Fatalf("got %q %v", b, err)
	}
}

// Found by the hostile review: long link targets and deep paths cost CPU
// (43 s for 20 links of 32 KB), and a file with children slipped past Check.
func TestCheckBoundsCost(t *testing.T) {
	long := strings.Repeat("a/", 20000)
	cases := []struct {
		entries []Entry
		want    string
	}{
		{[]Entry{{Path: "lab/disk/l", Link: long}}, "has a target of 40000 bytes, longer than 4096"},
		{[]Entry{{Path: "lab/disk/" + strings.Repeat("d/", 300) + "f"}}, "longer than an archive's paths may be"},
		{[]Entry{{Path: "lab/disk/x"}, {Path: "lab/disk/x/y"}}, `"lab/disk/x/y" lies below the file "lab/disk/x"`},
	}
	for _, c := range cases {
		if err := Check(c.entries, 2); err == nil || !strings.Contains(err.Error(), c.want) || len(err.Error()) > 300 {
			t.Errorf("want a short error with %q, got %.300v", c.want, err)
		}
	}
}
