package artifact_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

const modelDir = "../../fixtures/image-volume/files/model"

func buildModel(t *testing.T) v1.Image {
	t.Helper()
	fsys, err := artifact.OpenDir(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := artifact.Build(fsys, artifact.BuildOptions{
		ArtifactType: "application/vnd.kindlab.model.v1",
		Annotations:  map[string]string{"org.opencontainers.image.title": "kindlab example model"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestPushReadBackWithSkopeo pushes the lab's model artifact to a real
// distribution registry and reads it back with skopeo, an independent client.
func TestPushReadBackWithSkopeo(t *testing.T) {
	reg := registrytest.StartDistribution(t)
	ctx := context.Background()
	ref := reg.Addr + "/kindlab/model:v1"

	img := buildModel(t)
	res, err := artifact.Push(ctx, img, ref, artifact.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Layers != 1 || res.LayersPushed != 1 || res.BlobBytesSent == 0 {
		t.Fatalf("first push: %+v, want 1 layer pushed and blob bytes sent", res)
	}

	var m struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		ArtifactType  string            `json:"artifactType"`
		Annotations   map[string]string `json:"annotations"`
		Config        struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"config"`
		Layers []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"layers"`
	}
	raw := registrytest.Skopeo(t, "inspect", "--tls-verify=false", "--raw", "docker://"+ref)
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, raw)
	}
	if got := "sha256:" + sha256hex(raw); got != res.Digest {
		t.Errorf("registry serves manifest %s, push reported %s", got, res.Digest)
	}
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("media types: manifest %q config %q, want OCI image manifest and config", m.MediaType, m.Config.MediaType)
	}
	if m.ArtifactType != "" {
		t.Errorf("artifactType field %q set: containerd mounts image-shaped objects only", m.ArtifactType)
	}
	if m.Annotations[artifact.AnnotationArtifactType] != "application/vnd.kindlab.model.v1" || m.Annotations["org.opencontainers.image.title"] != "kindlab example model" {
		t.Errorf("annotations %v", m.Annotations)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Fatalf("layers %+v, want one tar+gzip layer", m.Layers)
	}

	var cfg struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		RootFS       struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	rawCfg := registrytest.Skopeo(t, "inspect", "--tls-verify=false", "--config", "--raw", "docker://"+ref)
	if err := json.Unmarshal(rawCfg, &cfg); err != nil {
		t.Fatalf("config: %v\n%s", err, rawCfg)
	}
	if cfg.OS != "linux" || cfg.Architecture == "" || cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != 1 {
		t.Fatalf("config %s: want os linux, an architecture and one diff_id", rawCfg)
	}

	// diff_id must be the sha256 of the uncompressed layer as the registry
	// serves it: fetch the blobs with skopeo and hash them here.
	dir := t.TempDir()
	registrytest.Skopeo(t, "copy", "--src-tls-verify=false", "docker://"+ref, "dir:"+dir)
	blob, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(m.Layers[0].Digest, "sha256:")))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatalf("layer is not gzip: %v", err)
	}
	tarBytes, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if got := "sha256:" + sha256hex(tarBytes); got != cfg.RootFS.DiffIDs[0] {
		t.Errorf("diff_id %s, uncompressed layer hashes to %s", cfg.RootFS.DiffIDs[0], got)
	}
	want, err := os.ReadFile(filepath.Join(modelDir, "model.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(tarBytes))
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s carries host metadata: uid %d gid %d uname %q mtime %v", h.Name, h.Uid, h.Gid, h.Uname, h.ModTime)
		}
		if h.Name == "model.txt" {
			found = true
			got, _ := io.ReadAll(tr)
			if !bytes.Equal(got, want) || h.Mode != 0o644 {
				t.Errorf("model.txt in layer: mode %o, content %q; want 0644 and the fixture's content", h.Mode, got)
			}
		}
	}
	if !found {
		t.Error("model.txt missing from the layer")
	}

	// Same files, built again, pushed again: same digest, no blob bytes.
	res2, err := artifact.Push(ctx, buildModel(t), ref, artifact.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Digest != res.Digest {
		t.Errorf("rebuild changed the digest: %s then %s", res.Digest, res2.Digest)
	}
	if res2.BlobBytesSent != 0 || res2.LayersPushed != 0 || res2.LayersSkipped != 1 {
		t.Errorf("re-push of an unchanged artifact: %+v, want no blob bytes, 0 pushed, 1 skipped", res2)
	}
	raw2 := registrytest.Skopeo(t, "inspect", "--tls-verify=false", "--raw", "docker://"+ref)
	if !bytes.Equal(raw, raw2) {
		t.Error("manifest changed after re-push")
	}
}

// TestBuildDeterministic: the digest depends on content only, not on the
// file system the files come from (disk, embedded) nor on host metadata.
func TestBuildDeterministic(t *testing.T) {
	content, err := os.ReadFile(filepath.Join(modelDir, "model.txt"))
	if err != nil {
		t.Fatal(err)
	}
	disk := buildModel(t)
	mem, err := artifact.Build(fstest.MapFS{"model.txt": {Data: content, Mode: 0o600, ModTime: time.Now()}}, artifact.BuildOptions{
		ArtifactType: "application/vnd.kindlab.model.v1",
		Annotations:  map[string]string{"org.opencontainers.image.title": "kindlab example model"},
	})
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := disk.Digest()
	d2, _ := mem.Digest()
	if d1 != d2 {
		t.Fatalf("disk build %s != in-memory build %s of the same files", d1, d2)
	}

	// Touching a file on disk (mtime, mode) changes nothing.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a/b.txt"), "b")
	writeFile(t, filepath.Join(dir, "c.txt"), "c")
	build := func() v1.Hash {
		fsys, err := artifact.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		img, err := artifact.Build(fsys, artifact.BuildOptions{LayerPerEntry: true})
		if err != nil {
			t.Fatal(err)
		}
		h, _ := img.Digest()
		return h
	}
	before := build()
	if err := os.Chtimes(filepath.Join(dir, "c.txt"), time.Now().Add(time.Hour), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "a/b.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if after := build(); after != before {
		t.Errorf("mtime/mode change altered the digest: %s -> %s", before, after)
	}
	writeFile(t, filepath.Join(dir, "c.txt"), "changed")
	if after := build(); after == before {
		t.Error("content change kept the digest")
	}
}

func TestLayerPerEntry(t *testing.T) {
	fsys := fstest.MapFS{
		"b/x.bin": {Data: []byte("x")},
		"b/y.bin": {Data: []byte("y")},
		"a.txt":   {Data: []byte("a")},
		"c/d/e":   {Data: []byte("e")},
	}
	img, err := artifact.Build(fsys, artifact.BuildOptions{LayerPerEntry: true})
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	var got []string
	for _, l := range layers {
		rc, _ := l.Uncompressed()
		tr := tar.NewReader(rc)
		var names []string
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			names = append(names, h.Name)
		}
		rc.Close()
		got = append(got, strings.Join(names, ","))
	}
	want := []string{"a.txt", "b/,b/x.bin,b/y.bin", "c/,c/d/,c/d/e"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("layers %q, want %q", got, want)
	}
}

func TestBadInput(t *testing.T) {
	empty := t.TempDir()
	onlyDirs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(onlyDirs, "a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "secret"), "s")
	escape := t.TempDir()
	writeFile(t, filepath.Join(escape, "ok.txt"), "ok")
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(escape, "abs")); err != nil {
		t.Fatal(err)
	}
	// Looks inside lexically (d/../secret), resolves outside on disk.
	sneaky := t.TempDir()
	root := filepath.Join(sneaky, "root")
	writeFile(t, filepath.Join(root, "ok.txt"), "ok")
	writeFile(t, filepath.Join(sneaky, "secret"), "s")
	if err := os.Symlink(".", filepath.Join(root, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d/../secret", filepath.Join(root, "e")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "f")
	writeFile(t, file, "f")

	for _, tc := range []struct {
		name, dir, want string
	}{
		{"missing", filepath.Join(empty, "nope"), "does not exist"},
		{"empty", empty, "is empty"},
		{"only directories", onlyDirs, "is empty"},
		{"a file", file, "is a file"},
		{"absolute symlink out", escape, "leaves the artifact directory"},
		{"symlink out through a symlink", root, "leaves the artifact directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := artifact.OpenDir(tc.dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("OpenDir: %v, want one line containing %q", err, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name string
		fsys fs.FS
		opts artifact.BuildOptions
		want string
	}{
		{"lexical symlink out", fstest.MapFS{"x": {Data: []byte("x")}, "l": {Data: []byte("../../etc/passwd"), Mode: fs.ModeSymlink}}, artifact.BuildOptions{}, "leaves the artifact directory"},
		{"empty fs", fstest.MapFS{}, artifact.BuildOptions{}, "is empty"},
		{"bad artifact type", fstest.MapFS{"x": {}}, artifact.BuildOptions{ArtifactType: "model"}, "want a media type"},
		{"bad annotation", fstest.MapFS{"x": {}}, artifact.BuildOptions{Annotations: map[string]string{"a b": "c"}}, "annotation key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := artifact.Build(tc.fsys, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build: %v, want %q", err, tc.want)
			}
		})
	}

	img := buildModel(t)
	for _, ref := range []string{"localhost:5001/Kindlab/model:v1", "localhost:5001/kindlab/model:", "localhost:5001/kindlab/model", "::"} {
		_, err := artifact.Push(context.Background(), img, ref, artifact.PushOptions{})
		if err == nil || !strings.Contains(err.Error(), "reference") {
			t.Errorf("Push to %q: %v, want a reference error", ref, err)
		}
	}
}

// TestProgress uses go-containerregistry's in-process registry: what is
// checked is the callback's bookkeeping, which a second real server would
// not exercise any differently.
func TestProgress(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	fsys := fstest.MapFS{}
	for i := range 3 {
		fsys[fmt.Sprintf("part%d/data", i)] = &fstest.MapFile{Data: bytes.Repeat([]byte{byte(i)}, 1<<20)}
	}
	img, err := artifact.Build(fsys, artifact.BuildOptions{LayerPerEntry: true})
	if err != nil {
		t.Fatal(err)
	}
	ref := strings.TrimPrefix(srv.URL, "http://") + "/p/q:v1"
	var mu sync.Mutex
	var last artifact.Progress
	calls := 0
	res, err := artifact.Push(context.Background(), img, ref, artifact.PushOptions{Progress: func(p artifact.Progress) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if p.LayersDone < last.LayersDone {
			t.Errorf("layers done went back: %d after %d", p.LayersDone, last.LayersDone)
		}
		last = p
	}})
	if err != nil {
		t.Fatal(err)
	}
	if calls < 2 || last.LayersDone != 3 || last.LayersTotal != 3 || last.BytesDone != res.Size || last.BytesSent != res.BytesSent {
		t.Errorf("last progress %+v after %d calls; result %+v", last, calls, res)
	}
}

// TestRegistryGoesAway kills the real registry in the middle of a blob
// upload. Push must retry, then fail with one clear line, and leave no tag.
// When the registry comes back within the retries, the push completes.
func TestRegistryGoesAway(t *testing.T) {
	reg := registrytest.StartDistribution(t)
	fsys := fstest.MapFS{"blob": {Data: randomBytes(32 << 20)}}
	img, err := artifact.Build(fsys, artifact.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fast := remote.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Steps: 3}

	t.Run("gone for good", func(t *testing.T) {
		ref := reg.Addr + "/gone/model:v1"
		var once sync.Once
		kill := &killAfter{inner: artifact.DefaultTransport(), after: 8 << 20, kill: func() { once.Do(reg.Stop) }}
		_, err := artifact.Push(context.Background(), img, ref, artifact.PushOptions{Transport: kill, Backoff: fast})
		if err == nil {
			t.Fatal("push succeeded with the registry killed mid-upload")
		}
		if !strings.Contains(err.Error(), "is not answering") || strings.Contains(err.Error(), "\n") {
			t.Errorf("error %q: want one line saying the registry is not answering", err)
		}
		reg.Start(t)
		out, serr := osexec("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+ref)
		if serr == nil {
			t.Errorf("a failed push left a manifest behind: %s", out)
		}
	})

	t.Run("comes back", func(t *testing.T) {
		ref := reg.Addr + "/back/model:v1"
		restarted := make(chan error, 1)
		var killed atomic.Bool
		var once sync.Once
		kill := &killAfter{inner: artifact.DefaultTransport(), after: 8 << 20, kill: func() {
			once.Do(func() {
				killed.Store(true)
				reg.Stop()
				go func() {
					time.Sleep(200 * time.Millisecond)
					restarted <- reg.Restart()
				}()
			})
		}}
		res, err := artifact.Push(context.Background(), img, ref, artifact.PushOptions{Transport: kill, Backoff: remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Steps: 4}})
		if !killed.Load() {
			t.Fatal("the registry was never killed: the test proved nothing")
		}
		select {
		case rerr := <-restarted:
			if rerr != nil {
				t.Fatal(rerr)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("registry restart did not finish")
		}
		if err != nil {
			t.Fatalf("push did not survive a registry restart: %v", err)
		}
		d, _ := img.Digest()
		if res.Digest != d.String() {
			t.Errorf("digest %s, want %s", res.Digest, d)
		}
		registrytest.Skopeo(t, "inspect", "--tls-verify=false", "--raw", "docker://"+ref)
	})
}

// killAfter calls kill once the bodies it has carried pass after bytes.
type killAfter struct {
	inner http.RoundTripper
	after int64
	sent  atomic.Int64
	kill  func()
}

func (k *killAfter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		req = req.Clone(req.Context())
		req.Body = &killBody{ReadCloser: req.Body, k: k}
	}
	return k.inner.RoundTrip(req)
}

type killBody struct {
	io.ReadCloser
	k *killAfter
}

func (b *killBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.k.sent.Add(int64(n)) > b.k.after {
		b.k.kill()
	}
	return n, err
}

func writeFile(t testing.TB, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
