package kit_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/kindlab/kindlab/provision/kit"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry/offlineimage"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
)

// benchSize is the image the kit benchmarks carry: big enough that disk
// throughput, not per-call overhead, decides.
const benchSize = 512 << 20

// BenchmarkDiskWrite is the baseline: writing benchSize bytes sequentially
// to the directory kits go to, then fsync, as a kit save does.
func BenchmarkDiskWrite(b *testing.B) {
	dir := b.TempDir()
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	b.SetBytes(benchSize)
	for i := 0; i < b.N; i++ {
		f, err := os.Create(filepath.Join(dir, "baseline"))
		if err != nil {
			b.Fatal(err)
		}
		for n := 0; n < benchSize; n += len(buf) {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		os.Remove(f.Name())
	}
}

// benchImage loads a benchSize image of random (incompressible) layers
// into the engine, standing in for a node image.
func benchImage(b *testing.B) (string, *render.Plan) {
	c := registrytest.Docker(b)
	img, err := random.Image(benchSize/8, 8)
	if err != nil {
		b.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", hostArch
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		b.Fatal(err)
	}
	tag := fmt.Sprintf("kindlab.local/kitbench-%x:v1", mrand.Uint32())
	if err := offlineimage.Load(context.Background(), c, img, tag); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { removeImage(c, tag) })
	return tag, &render.Plan{Lab: "kitbench", NodeImage: tag, Resolved: &lab.Resolved{}}
}

// BenchmarkSave is a first save: from `docker save` through the cache into
// the kit file (two writes of every byte, as a save from Docker needs).
func BenchmarkSave(b *testing.B) {
	_, plan := benchImage(b)
	dir := b.TempDir()
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cache := filepath.Join(dir, fmt.Sprint("cache", i))
		out := filepath.Join(dir, "kit.tar")
		if _, err := kit.Save(context.Background(), kit.SaveOptions{Plan: plan, Output: out, CacheDir: cache}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(cache)
		os.Remove(out)
		b.StartTimer()
	}
}

// BenchmarkSaveUnchanged is saving the same lab again: nothing is read from
// Docker and the kit is not rewritten.
func BenchmarkSaveUnchanged(b *testing.B) {
	_, plan := benchImage(b)
	dir := b.TempDir()
	opts := kit.SaveOptions{Plan: plan, Output: filepath.Join(dir, "kit.tar"), CacheDir: filepath.Join(dir, "cache")}
	if _, err := kit.Save(context.Background(), opts); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := kit.Save(context.Background(), opts)
		if err != nil || !res.Unchanged {
			b.Fatalf("second save: unchanged=%v err=%v", res != nil && res.Unchanged, err)
		}
	}
}

// BenchmarkLoad is verifying the kit and loading its image into an engine
// that does not have it.
func BenchmarkLoad(b *testing.B) {
	tag, plan := benchImage(b)
	c := registrytest.Docker(b)
	dir := b.TempDir()
	out := filepath.Join(dir, "kit.tar")
	if _, err := kit.Save(context.Background(), kit.SaveOptions{Plan: plan, Output: out, CacheDir: filepath.Join(dir, "cache")}); err != nil {
		b.Fatal(err)
	}
	store := state.Store{Root: b.TempDir()}
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		removeImage(c, tag)
		b.StartTimer()
		if _, err := kit.Load(context.Background(), kit.LoadOptions{File: out, Docker: c, Store: store}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDockerSave is the engine's own `docker save` of the same image
// to a file: what a kit save from Docker cannot be faster than.
func BenchmarkDockerSave(b *testing.B) {
	tag, _ := benchImage(b)
	c := registrytest.Docker(b)
	dir := b.TempDir()
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dockerSave(b, c, tag, filepath.Join(dir, "save.tar"))
	}
}

// BenchmarkDockerLoad is the engine's own `docker load` of that file into
// an engine without the image: what a kit load cannot be faster than.
func BenchmarkDockerLoad(b *testing.B) {
	tag, _ := benchImage(b)
	c := registrytest.Docker(b)
	file := filepath.Join(b.TempDir(), "save.tar")
	dockerSave(b, c, tag, file)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		removeImage(c, tag)
		f, err := os.Open(file)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		resp, err := c.ImageLoad(context.Background(), f)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		f.Close()
	}
}

func dockerSave(b *testing.B, c *client.Client, tag, file string) {
	rc, err := c.ImageSave(context.Background(), []string{tag})
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	f, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	f.Close()
}
