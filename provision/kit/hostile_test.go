package kit_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/provision/kit"
)

type member struct {
	name string
	typ  byte
	data string
	link string
}

func writeTar(t testing.TB, members []member) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := &tar.Header{Name: m.name, Typeflag: m.typ, Size: int64(len(m.data)), Mode: 0o644, Linkname: m.link}
		if m.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(m.data))
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "kit.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A kit is an OCI layout from someone else: a path that leaves it, the
// same path twice (a later entry silently replacing a verified one), and
// links, devices or FIFOs are refused in one line before anything else.
func TestHostileKitsAreRefused(t *testing.T) {
	layout := member{name: "oci-layout", typ: tar.TypeReg, data: `{"imageLayoutVersion":"1.0.0"}`}
	cases := []struct {
		name    string
		members []member
		want    string
	}{
		{"dotdot", []member{layout, {name: "../../etc/cron.d/x", typ: tar.TypeReg, data: "x"}}, `holds "../../etc/cron.d/x", which is not a path inside a kit`},
		{"absolute", []member{layout, {name: "/etc/passwd", typ: tar.TypeReg, data: "x"}}, "not a path inside a kit"},
		{"duplicate", []member{layout, {name: "index.json", typ: tar.TypeReg, data: "{}"}, {name: "index.json", typ: tar.TypeReg, data: "{}"}}, `holds "index.json" twice`},
		{"duplicate after clean", []member{layout, {name: "blobs/sha256/", typ: tar.TypeDir}, {name: "blobs/sha256", typ: tar.TypeDir}}, `holds "blobs/sha256" twice`},
		{"symlink", []member{layout, {name: "index.json", typ: tar.TypeSymlink, link: "/etc/shadow"}}, `entry "index.json" has tar type '2'; kits hold only files and directories`},
		{"hard link", []member{layout, {name: "index.json", typ: tar.TypeLink, link: "oci-layout"}}, "kits hold only files and directories"},
		{"fifo", []member{layout, {name: "x", typ: tar.TypeFifo}}, "kits hold only files and directories"},
		{"device", []member{layout, {name: "x", typ: tar.TypeChar}}, "kits hold only files and directories"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTar(t, tc.members)
			_, err := kit.Open(p)
			var ke *kit.Error
			if !errors.As(err, &ke) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") ||
				!strings.HasPrefix(err.Error(), "kit "+p+": ") {
				t.Fatalf("want one kit error line about %s containing %q, got %v", p, tc.want, err)
			}
		})
	}
}

// FuzzOpenKit: whatever the bytes, reading a kit's table of contents
// returns an error or a manifest, never a panic.
func FuzzOpenKit(f *testing.F) {
	f.Add([]byte("not a tar"))
	good := writeTar(f, []member{{name: "oci-layout", typ: tar.TypeReg, data: `{"imageLayoutVersion":"1.0.0"}`},
		{name: "index.json", typ: tar.TypeReg, data: `{"schemaVersion":2,"manifests":[]}`},
		{name: "kindlab-kit.json", typ: tar.TypeReg, data: `{"formatVersion":1,"lab":"x","images":[]}`}})
	if b, err := os.ReadFile(good); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "kit.tar")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := kit.Open(p); err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("a kit error of more than one line: %q", err)
		}
	})
}
