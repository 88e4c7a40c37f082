package kit_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kindlab/kindlab/provision/kit"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/offlineimage"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
)

var hostArch = runtime.GOARCH

// platformImage is a small random image whose config says os/arch.
func platformImage(t *testing.T, arch string) v1.Image {
	t.Helper()
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// upstreamIndex pushes a two-platform index (the host's and another) to
// repo on the source registry and returns its digest and the other
// platform's child digest.
func upstreamIndex(t *testing.T, addr, repo string) (v1.Hash, v1.Hash) {
	t.Helper()
	other := "arm64"
	if hostArch == "arm64" {
		other = "amd64"
	}
	mine, theirs := platformImage(t, hostArch), platformImage(t, other)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: mine, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: hostArch}}},
		mutate.IndexAddendum{Add: theirs, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}})
	ref, err := name.ParseReference(addr+"/"+repo+":1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	td, _ := theirs.Digest()
	return d, td
}

// uniqueDockerImage loads a fresh image into the engine under a tag only
// this test uses, and removes it when the test ends.
func uniqueDockerImage(t *testing.T, c *client.Client) (string, string) {
	t.Helper()
	tag := fmt.Sprintf("kindlab.local/kittest-%x:v1", rand.Uint32())
	if err := offlineimage.Load(context.Background(), c, platformImage(t, hostArch), tag); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeImage(c, tag) })
	ins, err := c.ImageInspect(context.Background(), tag)
	if err != nil {
		t.Fatal(err)
	}
	return tag, ins.ID
}

func removeImage(c *client.Client, ref string) {
	_, _ = c.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true, PruneChildren: true})
}

func artifacts() []lab.ResolvedArtifact {
	fsys := fstest.MapFS{"model/model.txt": {Data: []byte("a model the kit carries\n")}}
	return []lab.ResolvedArtifact{{
		Artifact: lab.Artifact{Name: "model", Reference: "localhost:5001/kindlab/model:v1"},
		Dir:      lab.File{FS: fsys, Path: "model", Display: "model/"},
	}}
}

// A kit round trip through real components: images from the Docker engine
// and from a registry go in; load puts the node image into Docker under a
// tag with an alias for its pinned reference, and the workload index (one
// platform of two, digest unchanged) and the artifact into a fresh
// registry container, where a client pulls them by their upstream names.
func TestSaveLoadRoundTrip(t *testing.T) {
	c := registrytest.Docker(t)
	ctx := context.Background()
	src := registrytest.StartDistribution(t)
	srcPort := portOf(t, src.Addr)

	// The node image comes from a registry, pinned by digest, as
	// kindest/node does: Docker cannot know it by that name after a load.
	nodeImg := platformImage(t, hostArch)
	nodeTag := "localhost:" + srcPort + "/kindlab/node:v1"
	nodeRef, _ := name.ParseReference(nodeTag, name.Insecure)
	if err := remote.Write(nodeRef, nodeImg); err != nil {
		t.Fatal(err)
	}
	nd, _ := nodeImg.Digest()
	nodePinned := nodeTag + "@" + nd.String()
	t.Cleanup(func() { removeImage(c, nodeTag) })

	// A workload image named after an upstream registry, found where an
	// earlier load or an offline build left it: the mirror path.
	idxDigest, otherChild := upstreamIndex(t, src.Addr, "mirror/kindlab.invalid/e2e/app")
	workload := "kindlab.invalid/e2e/app:1@" + idxDigest.String()

	regTag := registrytest.RegistryImage(t, c) // from the Docker engine
	dir := t.TempDir()
	out := filepath.Join(dir, "kit.tar")
	plan := &render.Plan{
		Lab:       "kittest",
		NodeImage: nodePinned,
		Registry:  &render.RegistryPlan{HostPort: mustAtoi(t, srcPort)},
		Images:    []lab.Image{{Name: "app", Reference: workload}},
		Resolved:  &lab.Resolved{Artifacts: artifacts()},
	}
	opts := kit.SaveOptions{Plan: plan, RegistryImage: regTag, Output: out, Docker: c, CacheDir: filepath.Join(dir, "cache")}
	res, err := kit.Save(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Unchanged || len(res.Entries) != 4 {
		t.Fatalf("first save: unchanged=%v entries=%+v", res.Unchanged, res.Entries)
	}
	members := tarMembers(t, out)
	if _, ok := members["blobs/sha256/"+otherChild.Hex]; ok {
		t.Errorf("the kit carries the other platform's manifest %s", otherChild)
	}
	if _, ok := members["blobs/sha256/"+idxDigest.Hex]; !ok {
		t.Errorf("the kit lacks the workload index %s", idxDigest)
	}

	// Saving again reads from the cache and leaves the file as it is.
	before, _ := os.Stat(out)
	res2, err := kit.Save(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(out)
	if !res2.Unchanged || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("second save of an unchanged lab rewrote the kit (unchanged=%v)", res2.Unchanged)
	}

	// A machine that has none of it: the node image is not in Docker, the
	// registry is a fresh container on a port of its own.
	removeImage(c, nodeTag)
	ro := registrytest.Options(t, c)
	store := state.Store{Root: t.TempDir()}
	lr, err := kit.Load(ctx, kit.LoadOptions{File: out, Lab: "kittest", Registry: ro, Docker: c, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if lr.BytesVerified == 0 || lr.BytesLoaded == 0 {
		t.Errorf("load reported %d bytes verified, %d loaded", lr.BytesVerified, lr.BytesLoaded)
	}
	nodeCfg, _ := nodeImg.ConfigName()
	ins, err := c.ImageInspect(ctx, nodeTag)
	if err != nil || ins.ID != nodeCfg.String() {
		t.Fatalf("after load the engine has %s as %q (%v), want image %s", nodeTag, ins.ID, err, nodeCfg)
	}
	if got := kit.LocalImage(ctx, c, store, nodePinned); got != nodeTag {
		t.Errorf("LocalImage(%s) = %s, want the loaded tag %s", nodePinned, got, nodeTag)
	}

	// The workload resolves by its upstream name's mirror path, by digest
	// and by tag, with its layers; the platform not carried is absent.
	local, err := registry.LocalReference(workload, ro.HostPort)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(local, name.Insecure)
	ii, err := remote.Index(ref)
	if err != nil {
		t.Fatalf("registry does not serve %s: %v", local, err)
	}
	if d, _ := ii.Digest(); d != idxDigest {
		t.Errorf("index digest %s, want %s", d, idxDigest)
	}
	im, _ := ii.IndexManifest()
	for _, child := range im.Manifests {
		img, err := remote.Image(ref.Context().Digest(child.Digest.String()))
		if child.Platform.Architecture != hostArch {
			if err == nil {
				t.Errorf("registry serves %s, a platform the kit does not carry", child.Digest)
			}
			continue
		}
		if err != nil {
			t.Fatalf("child %s: %v", child.Digest, err)
		}
		ls, _ := img.Layers()
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Errorf("layer of %s: %v", child.Digest, err)
			}
			rc.Close()
		}
	}
	tagRef, _ := name.ParseReference(fmt.Sprintf("localhost:%d/mirror/kindlab.invalid/e2e/app:1", ro.HostPort), name.Insecure)
	if d, err := remote.Head(tagRef); err != nil || d.Digest != idxDigest {
		t.Errorf("tag 1 of the workload: %v %v", d, err)
	}
	artRef, _ := name.ParseReference(fmt.Sprintf("localhost:%d/kindlab/model:v1", ro.HostPort), name.Insecure)
	if _, err := remote.Image(artRef); err != nil {
		t.Errorf("artifact: %v", err)
	}

	// This machine can make the kit again with its source gone: the node
	// image comes from Docker through the alias, the same image.
	src.Stop()
	again, err := kit.Save(ctx, kit.SaveOptions{Plan: &render.Plan{Lab: "kittest", NodeImage: nodePinned, Resolved: &lab.Resolved{}},
		Output: filepath.Join(dir, "again.tar"), Docker: c, CacheDir: filepath.Join(dir, "cache"), Store: &store})
	if err != nil {
		t.Fatalf("save after load, source gone: %v", err)
	}
	if fmt.Sprint(again.Entries[0].ImageIDs) != fmt.Sprint(res.Entries[0].ImageIDs) {
		t.Errorf("re-saved node image %v, first kit %v", again.Entries[0].ImageIDs, res.Entries[0].ImageIDs)
	}

	// The registry's data now must outlive the labs (down keeps it).
	if !registry.HoldsKits(ctx, ro, c) {
		t.Error("the registry does not say it holds a kit")
	}

	// Loading the same kit again loads nothing new into Docker.
	lr, err = kit.Load(ctx, kit.LoadOptions{File: out, Registry: ro, Docker: c, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range lr.Images {
		if im.Role == kit.RoleNode && !im.AlreadyThere {
			t.Errorf("second load loaded the node image again")
		}
	}
}

// A damaged, truncated, newer, foreign or wrong-platform kit is refused in
// one line that names the kit, and nothing is loaded.
func TestBadKits(t *testing.T) {
	c := registrytest.Docker(t)
	ctx := context.Background()
	tag, id := uniqueDockerImage(t, c)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.tar")
	plan := &render.Plan{Lab: "kittest", NodeImage: tag, Resolved: &lab.Resolved{}}
	if _, err := kit.Save(ctx, kit.SaveOptions{Plan: plan, Output: good, Docker: c, CacheDir: filepath.Join(dir, "cache")}); err != nil {
		t.Fatal(err)
	}
	removeImage(c, tag)
	store := state.Store{Root: t.TempDir()}

	// Flip one byte in the middle of the largest blob.
	tampered := filepath.Join(dir, "tampered.tar")
	rewrite(t, good, tampered, func(name string, b []byte) []byte {
		if strings.HasPrefix(name, "blobs/") && len(b) > 1000 {
			b = bytes.Clone(b)
			b[len(b)/2] ^= 0xff
		}
		return b
	})
	truncated := filepath.Join(dir, "truncated.tar")
	data, _ := os.ReadFile(good)
	if err := os.WriteFile(truncated, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	// Cut right after a member: tar's reader takes that for a whole
	// archive, so this was reported as "not a kindlab kit" (hostile review,
	// session 12).
	atBoundary := filepath.Join(dir, "truncated-at-a-member.tar")
	if err := os.WriteFile(atBoundary, data[:memberEnd(t, data, 1)], 0o644); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty.tar")
	if err := os.WriteFile(emptyFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	newer := filepath.Join(dir, "newer.tar")
	rewrite(t, good, newer, func(name string, b []byte) []byte {
		if name == kit.ManifestFile {
			return bytes.Replace(b, []byte(`"format": 1`), []byte(`"format": 99`), 1)
		}
		return b
	})

	// Found by the hostile review (session 12): a kit saved for this
	// platform whose node image has no image ID for it was told to save
	// again with --platform, which it had.
	noID := filepath.Join(dir, "no-image-id.tar")
	rewrite(t, good, noID, func(name string, b []byte) []byte {
		if name == kit.ManifestFile {
			return bytes.Replace(b, []byte(`"imageIDs"`), []byte(`"imageIDx"`), 1)
		}
		return b
	})

	for _, tc := range []struct {
		name, file, lab, want string
	}{
		{"tampered", tampered, "", "damaged or tampered"},
		{"no image ID for its platform", noID, "", "is saved for linux/" + hostArch + " but has no image ID of its node image " + tag + " for it: the kit was damaged or edited"},
		{"truncated", truncated, "", "truncated"},
		{"truncated after a member", atBoundary, "", "truncated: the file ends after "},
		{"empty file", emptyFile, "", "not a kit (an empty tar archive)"},
		{"newer format", newer, "", "format 99"},
		{"another lab", good, "all-features", `holds lab "kittest", not "all-features"`},
		{"not a kit", filepath.Join(dir, "cache", "docker"), "", "kit " + filepath.Join(dir, "cache", "docker")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kit.Load(ctx, kit.LoadOptions{File: tc.file, Lab: tc.lab, Docker: c, Store: store,
				Registry: registry.Options{HostPort: registrytest.FreePort(t), Name: "kindlab-test-unused"}})
			if err == nil {
				t.Fatal("load succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.file) {
				t.Errorf("error %q does not name the kit file", err)
			}
			if _, err := c.ImageInspect(ctx, tag); err == nil {
				t.Errorf("the node image was loaded from a bad kit")
			}
		})
	}

	// The good kit then loads: the image comes back with the same ID.
	if _, err := kit.Load(ctx, kit.LoadOptions{File: good, Docker: c, Store: store}); err != nil {
		t.Fatalf("good kit: %v", err)
	}
	if ins, err := c.ImageInspect(ctx, tag); err != nil || ins.ID != id {
		t.Errorf("after load %s is %q (%v), want %s", tag, ins.ID, err, id)
	}

	// A kit for another platform is refused by save when the engine's
	// image is not of that platform.
	other := "linux/arm64"
	if hostArch == "arm64" {
		other = "linux/amd64"
	}
	ps, _ := kit.ParsePlatforms([]string{other})
	tag2, _ := uniqueDockerImage(t, c)
	plan.NodeImage = tag2
	_, err := kit.Save(ctx, kit.SaveOptions{Plan: plan, Output: filepath.Join(dir, "other.tar"), Docker: c, Platforms: ps, CacheDir: filepath.Join(dir, "cache")})
	if err == nil || !strings.Contains(err.Error(), "--platform") {
		t.Errorf("save for %s of a %s image: %v", other, hostArch, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.tar")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed save left a kit file behind")
	}
}

func TestParsePlatforms(t *testing.T) {
	ps, err := kit.ParsePlatforms([]string{"linux/amd64,linux/arm64/v8", "linux/amd64"})
	if err != nil || len(ps) != 2 || ps[1].Variant != "v8" {
		t.Errorf("got %v %v", ps, err)
	}
	if _, err := kit.ParsePlatforms([]string{"amd64"}); err == nil || !strings.Contains(err.Error(), "--platform") {
		t.Errorf("bad platform: %v", err)
	}
}

// rewrite copies a kit tar, passing each member through f.
func rewrite(t *testing.T, from, to string, f func(name string, b []byte) []byte) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var buf bytes.Buffer
	tr, tw := tar.NewReader(in), tar.NewWriter(&buf)
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
	if err := os.WriteFile(to, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func tarMembers(t *testing.T, file string) map[string]int64 {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int64{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = hdr.Size
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	return addr[i+1:]
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A kit carrying the node image for another platform only is refused by
// load before anything is loaded, naming the platforms on both sides.
func TestKitForAnotherPlatform(t *testing.T) {
	c := registrytest.Docker(t)
	ctx := context.Background()
	src := registrytest.StartDistribution(t)
	idx, _ := upstreamIndex(t, src.Addr, "kindlab/node")
	other := "linux/arm64"
	if hostArch == "arm64" {
		other = "linux/amd64"
	}
	ps, _ := kit.ParsePlatforms([]string{other})
	dir := t.TempDir()
	out := filepath.Join(dir, "kit.tar")
	node := src.Addr + "/kindlab/node:1@" + idx.String()
	plan := &render.Plan{Lab: "kittest", NodeImage: node, Resolved: &lab.Resolved{}}
	if _, err := kit.Save(ctx, kit.SaveOptions{Plan: plan, Output: out, Docker: c, Platforms: ps, CacheDir: filepath.Join(dir, "cache")}); err != nil {
		t.Fatal(err)
	}
	_, err := kit.Load(ctx, kit.LoadOptions{File: out, Docker: c, Store: state.Store{Root: t.TempDir()}})
	if err == nil || !strings.Contains(err.Error(), other) || !strings.Contains(err.Error(), "linux/"+hostArch) {
		t.Fatalf("load of a %s kit on a linux/%s engine: %v", other, hostArch, err)
	}
	if _, err := c.ImageInspect(ctx, src.Addr+"/kindlab/node:1"); err == nil {
		t.Error("the node image was loaded anyway")
	}
}

// A kit never moves a Docker tag: when the tag its image is loaded under
// names another image in the engine (the user's own build, or any tag a
// crafted kit names), the kit's image gets a kit-<digest> tag of its own,
// and the user's tag still names the user's image.
func TestLoadNeverMovesATag(t *testing.T) {
	c := registrytest.Docker(t)
	ctx := context.Background()
	tag, kitID := uniqueDockerImage(t, c)
	dir := t.TempDir()
	out := filepath.Join(dir, "kit.tar")
	plan := &render.Plan{Lab: "kittest", NodeImage: tag, Resolved: &lab.Resolved{}}
	if _, err := kit.Save(ctx, kit.SaveOptions{Plan: plan, Output: out, Docker: c, CacheDir: filepath.Join(dir, "cache")}); err != nil {
		t.Fatal(err)
	}
	// The tag now names another image: the user's.
	if err := offlineimage.Load(ctx, c, platformImage(t, hostArch), tag); err != nil {
		t.Fatal(err)
	}
	ins, err := c.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	userID := ins.ID
	if userID == kitID {
		t.Fatal("the two images are the same; the test proves nothing")
	}
	res, err := kit.Load(ctx, kit.LoadOptions{File: out, Docker: c, Store: state.Store{Root: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 1 || res.Images[0].Into == tag || !strings.Contains(res.Images[0].Into, ":kit-") {
		t.Fatalf("loaded %+v, want the node image under a kit- tag of its own", res.Images)
	}
	t.Cleanup(func() { removeImage(c, res.Images[0].Into) })
	if ins, err := c.ImageInspect(ctx, tag); err != nil || ins.ID != userID {
		t.Errorf("%s names %s after the load (%v), want the user's %s", tag, ins.ID, err, userID)
	}
	if ins, err := c.ImageInspect(ctx, res.Images[0].Into); err != nil || ins.ID != kitID {
		t.Errorf("%s names %s (%v), want the kit's %s", res.Images[0].Into, ins.ID, err, kitID)
	}
}

// A save onto a full disk fails naming the kit and the cause, and leaves
// no file behind that could pass for a kit.
func TestSaveOntoFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		registrytest.SkipOrFail(t, "mounting a small tmpfs to fill needs root")
	}
	c := registrytest.Docker(t)
	tag, _ := uniqueDockerImage(t, c)
	full := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "kindlab-test-full", full).CombinedOutput(); err != nil {
		registrytest.SkipOrFail(t, fmt.Sprintf("mount tmpfs: %v: %s", err, out))
	}
	t.Cleanup(func() { _ = exec.Command("umount", full).Run() })
	out := filepath.Join(full, "kit.tar")
	plan := &render.Plan{Lab: "kittest", NodeImage: tag, Resolved: &lab.Resolved{}}
	_, err := kit.Save(context.Background(), kit.SaveOptions{Plan: plan, Output: out, Docker: c, CacheDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), out) {
		t.Fatalf("save onto a full disk: %v", err)
	}
	if entries, _ := os.ReadDir(full); len(entries) != 0 {
		t.Errorf("a failed save left %v behind", entries)
	}
}

// memberEnd is the offset in the tar archive data where its n-th regular
// file's padded content ends (n from 1).
func memberEnd(t *testing.T, data []byte, n int) int {
	t.Helper()
	r := bytes.NewReader(data)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("the kit has fewer than %d files: %v", n, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if n--; n == 0 {
			pos := len(data) - r.Len() // the reader has read this member's header
			return pos + int(hdr.Size+511)/512*512
		}
	}
}
