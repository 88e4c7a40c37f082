package app_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/image"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"golang.org/x/sys/unix"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/bundle"
	"github.com/kindlab/kindlab/provision/kit"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry/offlineimage"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/render"
)

// Bad input to kit and bundle, whatever the verb: a file that is missing,
// not a kit or bundle, truncated, tampered with or of a newer format, a kit
// of another lab than --lab, a bad flag. Each is one ERROR line naming the
// file or flag, exit 2, and nothing loaded or written.
func TestKitAndBundleBadInputExitTwo(t *testing.T) {
	c := registrytest.Docker(t) // a real kit is saved from, and loaded into, the engine
	ctx := context.Background()
	dir := isolate(t)

	// A real kit of a small node image, then the image removed, so that a
	// load that went ahead would show.
	tag := fmt.Sprintf("kindlab.local/kit-cli-%x:v1", rand.Uint32())
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	if err := offlineimage.Load(ctx, c, img, tag); err != nil {
		t.Fatal(err)
	}
	removeImage := func() { c.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true}) }
	t.Cleanup(removeImage)
	good := filepath.Join(dir, "good.tar")
	plan := &render.Plan{Lab: "kittest", NodeImage: tag, Resolved: &lab.Resolved{}}
	if _, err := kit.Save(ctx, kit.SaveOptions{Plan: plan, Output: good, Docker: c, CacheDir: filepath.Join(dir, "cache")}); err != nil {
		t.Fatal(err)
	}
	removeImage()

	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	truncatedKit := write("truncated.tar", data[:len(data)/2])
	notKit := write("not-a-kit.tar", []byte("just text, not a tar archive at all......"))
	// A lab file given by mistake: a short one (less than a tar header)
	// and one longer than a header.
	var yamlKits []string
	for _, l := range []string{"all-features.yaml", "image-volume.yaml"} {
		b, err := os.ReadFile("../../../labs/" + l)
		if err != nil {
			t.Fatal(err)
		}
		yamlKits = append(yamlKits, write(l, b))
	}
	tamperedKit := filepath.Join(dir, "tampered.tar")
	tamper(t, good, tamperedKit)
	newerKit := write("newer.tar", rewriteTar(t, data, func(name string, b []byte) []byte {
		if name == kit.ManifestFile {
			return bytes.Replace(b, []byte(`"format": 1`), []byte(`"format": 99`), 1)
		}
		return b
	}))
	missing := filepath.Join(dir, "missing.tar")

	goodBundle := replayableBundle(t, dir)
	bdata, err := os.ReadFile(goodBundle)
	if err != nil {
		t.Fatal(err)
	}
	truncatedBundle := write("truncated.tar.gz", bdata[:len(bdata)*2/3])
	newerBundle := write("newer.tar.gz", rewriteBundle(t, bdata, func(name string, b []byte) []byte {
		if name == bundle.ManifestFile {
			var m map[string]any
			json.Unmarshal(b, &m)
			m["formatVersion"] = 7
			b, _ = json.Marshal(m)
		}
		return b
	}))
	tamperedBundle := write("tampered.tar.gz", rewriteBundle(t, bdata, func(name string, b []byte) []byte {
		if strings.HasPrefix(name, bundle.LabDir+"/") && len(b) > 0 {
			b = bytes.Clone(b)
			b[len(b)/2] ^= 0x20
		}
		return b
	}))
	plainText := write("not-a-bundle.tar.gz", []byte("not gzip"))
	// A FIFO blocks a plain open until a writer comes, and no signal
	// ends that: refused as not a regular file instead.
	fifo := filepath.Join(dir, "fifo.tar")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		args []string
		want string // in the one ERROR line
	}{
		// kit load / inspect: the file
		{[]string{"kit", "load", missing}, "kit " + missing + ": no such file"},
		{[]string{"kit", "load", notKit}, "kit " + notKit},
		{[]string{"kit", "load", truncatedKit}, "kit " + truncatedKit + ": truncated"},
		{[]string{"kit", "load", tamperedKit}, "damaged or tampered"},
		{[]string{"kit", "load", newerKit}, "kit " + newerKit + ": format 99"},
		{[]string{"kit", "load", good, "--lab", "all-features"}, `holds lab "kittest", not "all-features"`},
		{[]string{"kit", "inspect", missing}, "kit " + missing},
		{[]string{"kit", "inspect", notKit}, "kit " + notKit + ": not a kit (not a tar archive)"},
		{[]string{"kit", "inspect", yamlKits[0]}, "kit " + yamlKits[0] + ": not a kit (not a tar archive)"},
		{[]string{"kit", "inspect", yamlKits[1]}, "kit " + yamlKits[1] + ": not a kit (not a tar archive)"},
		{[]string{"kit", "load", yamlKits[1]}, "kit " + yamlKits[1] + ": not a kit (not a tar archive)"},
		{[]string{"kit", "inspect", truncatedKit}, "truncated"},
		{[]string{"kit", "inspect", newerKit}, "format 99"},
		{[]string{"kit", "inspect", fifo}, "kit " + fifo + ": is a FIFO"},
		{[]string{"kit", "load", fifo}, "kit " + fifo + ": is a FIFO"},
		{[]string{"bundle", "replay", fifo, "--yes"}, fifo + ": cannot read it: it is a FIFO"},
		{[]string{"migrate", "apparmor", fifo}, fifo + ": cannot read it: it is a FIFO"},
		// kit: flags and arguments
		{[]string{"kit", "load"}, "accepts 1 arg"},
		{[]string{"kit", "load", good, "--lab", "Not_A_Lab"}, "--lab"},
		{[]string{"kit", "load", good, "--registry-port", "0"}, "--registry-port 0"},
		{[]string{"kit", "load", good, "-o", "yaml"}, "--output"},
		{[]string{"kit", "load", good, "--bogus"}, "unknown flag: --bogus"},
		{[]string{"kit", "save", "all-features"}, "--output"},
		{[]string{"kit", "save", "all-features", "-o", filepath.Join(dir, "k.tar"), "--platform", "amd64"}, "--platform"},
		{[]string{"kit", "save", "no-such-lab", "-o", filepath.Join(dir, "k.tar")}, "no-such-lab"},
		{[]string{"kit", "save", "all-features", "-o", filepath.Join(dir, "no-dir", "k.tar")}, "--output " + filepath.Join(dir, "no-dir", "k.tar") + ": directory"},
		{[]string{"kit", "save", "all-features", "-o", dir}, "is a directory"},
		// bundle replay / create
		{[]string{"bundle", "replay", missing}, missing + ": cannot read it: no such file"},
		{[]string{"bundle", "replay", plainText}, plainText + ": not a kindlab bundle"},
		{[]string{"bundle", "replay", truncatedBundle}, truncatedBundle + ": corrupt or truncated bundle"},
		{[]string{"bundle", "replay", tamperedBundle}, tamperedBundle + ": "},
		{[]string{"bundle", "replay", newerBundle}, "bundle format version 7 is newer"},
		{[]string{"bundle", "replay", goodBundle, "--name", "Not_A_Name"}, "--name"},
		{[]string{"bundle", "replay", goodBundle, "--wait-lock", "-1s"}, "--wait-lock"},
		{[]string{"bundle", "replay"}, "accepts 1 arg"},
		{[]string{"bundle", "create"}, "--name"},
		{[]string{"bundle", "create", "no-such-lab"}, "no-such-lab"},
		{[]string{"bundle", "create", "nftables"}, `cluster "nftables" was not brought up by kindlab`},
		{[]string{"bundle", "create", "nftables", "-o", filepath.Join(dir, "no-dir", "b.tar.gz")}, "--output"},
	} {
		code, _, errOut := run(t, tc.args...)
		if code != cli.ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, cli.ExitUsage, strings.TrimSpace(errOut))
		}
		line := lastLine(errOut)
		if strings.Count(errOut, "ERROR") != 1 || !strings.HasPrefix(line, "ERROR: ") || !strings.Contains(line, tc.want) {
			t.Errorf("%v: want one ERROR line with %q, got %q", tc.args, tc.want, errOut)
		}
	}
	if _, err := c.ImageInspect(ctx, tag); err == nil {
		t.Error("a refused kit loaded its node image")
	}
	for _, f := range []string{"k.tar", "b.tar.gz", "state/clusters"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("a refused command wrote %s", f)
		}
	}
}

// rewriteTar passes each member of a tar through f.
func rewriteTar(t *testing.T, data []byte, f func(name string, b []byte) []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		b = f(hdr.Name, b)
		hdr.Size = int64(len(b))
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	tw.Close()
	return buf.Bytes()
}

// rewriteBundle passes each file of a .tar.gz bundle through f.
func rewriteBundle(t *testing.T, data []byte, f func(name string, b []byte) []byte) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gw := gzip.NewWriter(&buf)
	gw.Write(rewriteTar(t, plain, f))
	gw.Close()
	return buf.Bytes()
}
