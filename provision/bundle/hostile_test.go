package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/provision/lab"
)

// forged is one entry of a bundle written by hand, as an attacker would.
type forged struct {
	name string
	data []byte
	link string
	dir  bool
	// size, when set, is what the tar header claims instead of len(data);
	// the archive then ends after the header.
	size int64
}

// forge writes a bundle from a good one's manifest and the entries given,
// listing each in bundle.json with its true size and sha256 (so only the
// hostile shape is wrong), plus extra manifest entries as given.
func forge(t *testing.T, good string, entries []forged, extra []FileEntry) string {
	t.Helper()
	b, err := Open(good)
	if err != nil {
		t.Fatal(err)
	}
	m := b.Manifest
	m.Files = nil
	var all []forged
	// Keep the good bundle's own files, then add the forged ones.
	if err := Walk(good, func(name string, data []byte) error {
		if name != ManifestFile {
			all = append(all, forged{name: name, data: data})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	all = append(all, entries...)
	for _, e := range all {
		fe := FileEntry{Path: e.name, Dir: e.dir, Link: e.link}
		if !e.dir && e.link == "" {
			sum := sha256.Sum256(e.data)
			fe.Size, fe.SHA256 = int64(len(e.data)), hex.EncodeToString(sum[:])
			if e.size != 0 {
				fe.Size = e.size
			}
		}
		m.Files = append(m.Files, fe)
	}
	m.Files = append(m.Files, extra...)
	raw, _ := json.Marshal(m)
	var buf bytes.Buffer
	gw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gw)
	tw.WriteHeader(&tar.Header{Name: ManifestFile, Typeflag: tar.TypeReg, Size: int64(len(raw)), Mode: 0o644})
	tw.Write(raw)
	for _, e := range all {
		h := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Size: int64(len(e.data)), Mode: 0o644}
		switch {
		case e.dir:
			h.Typeflag, h.Size = tar.TypeDir, 0
		case e.link != "":
			h.Typeflag, h.Size, h.Linkname = tar.TypeSymlink, 0, e.link
		case e.size != 0:
			h.Size = e.size
			tw.WriteHeader(h)
			gw.Close() // a header that lies, then nothing
			return writeForged(t, buf.Bytes())
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	gw.Close()
	return writeForged(t, buf.Bytes())
}

func writeForged(t *testing.T, data []byte) string {
	p := filepath.Join(t.TempDir(), "forged.tar.gz")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// relTo is a relative link target from the bundle entry at p (extracted
// under a temp dir) to an absolute path, through as many ".." as needed.
func escapeTo(target string) string {
	return strings.Repeat("../", 40) + strings.TrimPrefix(target, "/")
}

// The nine inputs of issue 12 that concern archives, each refused in one
// line before anything is written.
func TestHostileBundlesAreRefused(t *testing.T) {
	good := smallBundle(t)
	victim := filepath.Join(t.TempDir(), "authorized_keys")
	chain := "c/c/c/c/c/c/c/c/c/c/" + strings.Repeat("../", 10) + strings.Repeat("../", 40) + strings.TrimPrefix(victim, "/")
	cases := []struct {
		name    string
		entries []forged
		extra   []FileEntry
		limits  *Limits
		want    string
	}{
		{"link chain then the same path as a file", []forged{
			{name: "lab/builtin/c", link: "."},
			{name: "lab/builtin/d", link: chain},
		}, []FileEntry{{Path: "lab/builtin/d", Size: 3, SHA256: strings.Repeat("0", 64)}}, nil, `"lab/builtin/d" appears twice`},
		{"link chain alone", []forged{
			{name: "lab/builtin/c", link: "."},
			{name: "lab/builtin/d", link: chain},
		}, nil, nil, "goes above the archive's root"},
		{"chain that stays in the archive but leaves its tree", []forged{
			{name: "lab/builtin/up", link: ".."},
			{name: "lab/builtin/d", link: "up/up/logs"},
		}, nil, nil, "leaves lab/builtin"},
		{"artifact source swapped for the host's home", []forged{
			{name: "lab/builtin/fixtures/home", link: escapeTo("/root")},
		}, nil, nil, "goes above the archive's root"},
		{"absolute link", []forged{{name: "lab/builtin/etc", link: "/etc"}}, nil, nil, "is absolute"},
		{"link outside the lab tree", []forged{{name: "logs/x", link: "y"}}, nil, nil, "outside the lab tree"},
		{"path with dotdot", nil, []FileEntry{{Path: "lab/../../x", Size: 1}}, nil, "not a path inside the archive"},
		{"a header that claims 1 TiB", []forged{{name: "logs/huge.log", data: []byte("x"), size: 1 << 40}}, nil, nil,
			"larger than the limit of 1Gi"},
		{"a listed size that lies about the header", nil, []FileEntry{{Path: "logs/big.log", Size: 10, SHA256: strings.Repeat("0", 64)}}, nil,
			`entry "logs/big.log" is not listed|missing`},
		{"too many entries", nil, nil, &Limits{Entries: 3}, "more than the limit of 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := forge(t, good, tc.entries, tc.extra)
			var opts []OpenOption
			if tc.limits != nil {
				opts = append(opts, WithLimits(*tc.limits))
			}
			_, err := Open(p, opts...)
			assertBad(t, p, err, tc.want)
			if _, err := os.Lstat(victim); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("the victim file was written: %v", err)
			}
		})
	}
}

// Memory stays bounded whatever the archive claims or inflates to: a gzip
// bomb in the logs stops at the total limit, and a huge lab file (held in
// memory for replay) is refused from its listed size before it is read.
func TestBombsStopAtTheLimits(t *testing.T) {
	good := smallBundle(t)
	zeros := make([]byte, 128<<20)
	cases := []struct {
		name   string
		entry  forged
		limits Limits
		want   string
	}{
		{"bomb in the logs", forged{name: "logs/bomb.log", data: zeros}, Limits{Total: 64 << 20}, "the bundle's files (134"},
		{"bomb after the tar's end", forged{name: "zeros after the end marker", data: zeros}, Limits{Total: 64 << 20}, "the bundle unpacked is larger than the limit of 64Mi"},
		{"huge lab file", forged{name: "lab/builtin/huge.yaml", data: zeros}, Limits{Held: 16 << 20}, "what replay keeps in memory of it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p string
			if strings.HasPrefix(tc.entry.name, "zeros") {
				p = withTrailer(t, good, tc.entry.data)
			} else {
				p = forge(t, good, []forged{tc.entry}, nil)
			}
			if st, _ := os.Stat(p); st.Size() > 2<<20 {
				t.Fatalf("the bomb is %d bytes: not a bomb", st.Size())
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Open(p, WithLimits(tc.limits))
			runtime.ReadMemStats(&after)
			assertBad(t, p, err, tc.want)
			if got := after.TotalAlloc - before.TotalAlloc; got > 32<<20 {
				t.Fatalf("refusing it allocated %d MiB", got>>20)
			}
		})
	}
}

// withTrailer appends data after the tar end marker, inside the gzip
// stream: valid tar, valid gzip, and as large unpacked as data is.
func withTrailer(t *testing.T, good string, data []byte) string {
	f, err := os.Open(good)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := io.Copy(zw, zr); err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	zw.Close()
	return writeForged(t, buf.Bytes())
}

// Whatever Open let through, extraction goes through an os.Root: a tree
// that skipped Open's checks still cannot write outside its directory.
func TestExtractLabCannotLeaveItsDirectory(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "x")
	os.Mkdir(dir, 0o755)
	b := &Bundle{Path: "forged.tar.gz", files: map[string][]byte{"lab/builtin/d": []byte("ssh-ed25519 AAAA attacker\n")}}
	b.Manifest.Files = []FileEntry{
		{Path: "lab/builtin/c", Link: "."},
		{Path: "lab/builtin/d", Link: "c/c/c/../../../../../victim"},
		{Path: "lab/builtin/d"},
	}
	_, err := b.extractLab(dir)
	if err == nil || !errors.Is(err, ErrBadBundle) {
		t.Fatalf("got %v", err)
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 {
		t.Fatalf("extraction wrote beside its directory: %v", entries)
	}
}

// bundle create copies a lab tree: a link in it that leaves the tree is
// refused, the bundle is not written, and nothing lands outside the stage.
func TestCreateRefusesALabTreeWithALinkOut(t *testing.T) {
	root := t.TempDir()
	proj := filepath.Join(root, "proj")
	os.MkdirAll(filepath.Join(proj, "labs"), 0o755)
	os.MkdirAll(filepath.Join(proj, "fixtures", "art"), 0o755)
	mustWrite(t, filepath.Join(proj, "fixtures", "art", "model.txt"), "weights\n")
	// The link resolves inside the project here, but from the bundle's
	// copy (lab/disk/…) it climbs out of the lab tree.
	if err := os.Symlink("../../../proj/fixtures/art/model.txt", filepath.Join(proj, "fixtures", "art", "alias")); err != nil {
		t.Fatal(err)
	}
	base, _ := os.ReadFile("../../labs/base.yaml")
	mustWrite(t, filepath.Join(proj, "labs", "base.yaml"), string(base))
	mustWrite(t, filepath.Join(proj, "labs", "art.yaml"), `apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: art
spec:
  include: [base]
  artifacts:
  - name: model
    source: ../fixtures/art
    reference: localhost:5001/kindlab/model:v1
`)
	c := lab.NewCatalog()
	if err := c.AddDir(filepath.Join(proj, "labs")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "out.tar.gz")
	plan := planFor(t, c, "art", filepath.Join(root, "state"))
	_, err := Create(t.Context(), Input{Catalog: c, Plan: plan, Versions: Versions{Kindlab: "test"}}, out)
	if err == nil || !strings.Contains(err.Error(), `symlink "lab/disk/fixtures/art/alias" -> "../../../proj/fixtures/art/model.txt" leaves lab/disk`) {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a bundle was written: %v", err)
	}
}

// FuzzOpen: whatever the bytes, Open returns (no panic, memory bounded by
// small limits), and a bundle it accepts extracts only inside its dir.
func FuzzOpen(f *testing.F) {
	f.Add([]byte{0x1f, 0x8b})
	f.Add([]byte("not a bundle"))
	if good, err := os.ReadFile(filepath.Join("testdata", "fuzz-seed.tar.gz")); err == nil {
		f.Add(good)
	}
	lim := Limits{File: 1 << 20, Total: 4 << 20, Held: 1 << 20, Entries: 500}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "b.tar.gz")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := Open(p, WithLimits(lim))
		if err != nil {
			if !errors.Is(err, ErrBadBundle) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("not one ErrBadBundle line: %v", err)
			}
			return
		}
		out := filepath.Join(dir, "x")
		os.Mkdir(out, 0o755)
		b.extractLab(out)
		entries, _ := os.ReadDir(dir)
		if len(entries) != 2 {
			t.Fatalf("extraction wrote beside its directory: %v", entries)
		}
	})
}

// Replay extracts into the cluster's state directory, which does not exist
// yet: extraction makes it (the end-to-end replay found this).
func TestExtractLabMakesItsDirectory(t *testing.T) {
	b, err := Open(smallBundle(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "state", "clusters", "x", "bundle")
	files, err := b.extractLab(dir)
	if err != nil || len(files) == 0 {
		t.Fatalf("extract into a new directory: %v, %d lab files", err, len(files))
	}
	if _, err := os.Stat(files[0]); err != nil {
		t.Fatal(err)
	}
}
