package registrytest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/offlineimage"
)

// Docker returns the client of the engine the environment names, after
// waiting up to a minute for it to answer (CI starts it concurrently).
func Docker(t testing.TB) *client.Client {
	t.Helper()
	return Engine(t).Client()
}

// Engine opens the engine the environment names, as a command does, after
// waiting up to a minute for it to answer; it is closed when the test ends.
func Engine(t testing.TB) *engine.Engine {
	t.Helper()
	// The engine kindlab itself would use: DOCKER_HOST, else the docker context.
	e, err := engine.Open(context.Background())
	if err != nil {
		SkipOrFail(t, "docker client: "+err.Error())
	}
	c := e.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		_, err = c.Ping(ctx)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			e.Close()
			SkipOrFail(t, "no Docker engine answers at "+c.DaemonHost()+": "+err.Error())
		case <-time.After(time.Second):
		}
	}
	sweepStale(ctx, c)
	t.Cleanup(func() { e.Close() })
	return e
}

// RegistryImage loads the offline registry image and returns its tag.
func RegistryImage(t testing.TB, c *client.Client) string {
	t.Helper()
	if _, err := os.Stat(offlineimage.DefaultBinary); err != nil {
		SkipOrFail(t, offlineimage.DefaultBinary+" not installed (apt-get install docker-registry)")
	}
	tag, err := offlineimage.Ensure(context.Background(), c, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// BusyboxTag is a tiny image standing in for a kind node where a test needs
// sh, mkdir, cat, mv and wget: Debian's static busybox.
const BusyboxTag = "kindlab.local/registrytest-busybox:v1"

// BusyboxImage loads BusyboxTag and returns it.
func BusyboxImage(t testing.TB, c *client.Client) string {
	t.Helper()
	bin, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		SkipOrFail(t, "/usr/bin/busybox not installed (apt-get install busybox-static)")
	}
	img := BusyboxV1Image(t, bin, []string{"bin/", "etc/", "tmp/"}, []string{"sh", "mkdir", "cat", "mv", "wget", "sleep", "ls"})
	if err := offlineimage.Load(context.Background(), c, img, BusyboxTag); err != nil {
		t.Fatal(err)
	}
	return BusyboxTag
}

// BusyboxV1Image is a one-layer image of the static busybox binary bin at
// /bin/busybox, with the directories dirs and a symlink /bin/<applet> for
// each applet; its default command is `sleep 3600` and PATH is /bin. Every
// timestamp is the epoch, so the same inputs give the same digest.
func BusyboxV1Image(t testing.TB, bin []byte, dirs, applets []string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, d := range dirs {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch})
	}
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: epoch})
	_, _ = tw.Write(bin)
	for _, applet := range applets {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: epoch})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.Cmd = []string{"sleep", "3600"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// testPrefixes name every Docker object the registry tests create.
var testPrefixes = []string{"kindlab-test-", "kindlab-clitest-"}

// staleAfter is how old a test object must be before a later run removes
// it: far longer than any test, so concurrent runs never lose theirs.
const staleAfter = 30 * time.Minute

func isTestName(n string) bool {
	n = strings.TrimPrefix(n, "/")
	for _, p := range testPrefixes {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// sweepStale removes what killed test runs (go test -timeout) left behind.
func sweepStale(ctx context.Context, c *client.Client) {
	cutoff := time.Now().Add(-staleAfter)
	if cs, err := c.ContainerList(ctx, container.ListOptions{All: true}); err == nil {
		for _, ct := range cs {
			if len(ct.Names) > 0 && isTestName(ct.Names[0]) && time.Unix(ct.Created, 0).Before(cutoff) {
				_ = c.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
			}
		}
	}
	if ns, err := c.NetworkList(ctx, network.ListOptions{}); err == nil {
		for _, n := range ns {
			if isTestName(n.Name) && n.Created.Before(cutoff) {
				_ = c.NetworkRemove(ctx, n.ID)
			}
		}
	}
	if vs, err := c.VolumeList(ctx, volume.ListOptions{}); err == nil {
		for _, v := range vs.Volumes {
			if !isTestName(v.Name) {
				continue
			}
			if created, err := time.Parse(time.RFC3339, v.CreatedAt); err == nil && created.Before(cutoff) {
				_ = c.VolumeRemove(ctx, v.Name, false) // in use: kept
			}
		}
	}
}

// Options are a registry of the test's own: a unique container, volume and
// network (names the stale sweep knows) on a free loopback port, removed
// when the test ends.
func Options(t testing.TB, c *client.Client) registry.Options {
	t.Helper()
	id := fmt.Sprintf("%x", rand.Uint32())
	o := registry.Options{
		Docker:   c,
		Image:    RegistryImage(t, c),
		HostPort: FreePort(t),
		Name:     "kindlab-test-registry-" + id,
		Network:  "kindlab-test-net-" + id,
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = registry.RemoveProxies(ctx, o, registry.RemoveOptions{DeleteData: true})
		_ = registry.Remove(ctx, o, registry.RemoveOptions{DeleteData: true})
		_ = c.NetworkRemove(ctx, o.Network)
	})
	return o
}

// FreePort is a loopback port free just now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
