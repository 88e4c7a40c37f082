package registry_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// A pull-through cache with a real upstream (a second registry container
// standing in for docker.io, which these machines cannot reach): the first
// pull goes through to upstream, and once upstream is gone the cache still
// serves the image — each layer was downloaded once.
func TestPullThroughCache(t *testing.T) {
	c := registrytest.Docker(t)
	ctx := context.Background()
	o := registrytest.Options(t, c)
	upstream := o
	upstream.Name, upstream.HostPort = o.Name+"-upstream", registrytest.FreePort(t)
	t.Cleanup(func() { _ = registry.Remove(context.Background(), upstream, registry.RemoveOptions{DeleteData: true}) })
	if _, err := registry.Ensure(ctx, upstream); err != nil {
		t.Fatal(err)
	}
	img, err := artifact.Build(fstest.MapFS{"data.txt": {Data: []byte("from upstream " + o.Name)}}, artifact.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := artifact.Push(ctx, img, fmt.Sprintf("localhost:%d/library/app:v1", upstream.HostPort), artifact.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}

	p := registry.Proxy{Upstream: "kindlab-test.invalid", RemoteURL: fmt.Sprintf("http://%s:%d", upstream.Name, registry.ContainerPort)}
	st, err := registry.EnsureProxy(ctx, o, p)
	if err != nil {
		t.Fatal(err)
	}
	if st.HostPort != 0 {
		t.Errorf("the cache is published on the host (port %d); only nodes need it", st.HostPort)
	}
	proxies, err := registry.Proxies(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	endpoint := proxies[p.Upstream]
	if want := fmt.Sprintf("%s:%d", registry.ProxyName(o.Name, p.Upstream), registry.ContainerPort); endpoint != want {
		t.Fatalf("Proxies = %v, want %s → %s", proxies, p.Upstream, want)
	}
	// The host reaches the cache where nodes do: its address on the network.
	ins, err := c.ContainerInspect(ctx, registry.ProxyName(o.Name, p.Upstream))
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("%s:%d", ins.NetworkSettings.Networks[o.Network].IPAddress, registry.ContainerPort)
	pull := func() error {
		ref, err := name.ParseReference(addr+"/library/app@"+pushed.Digest, name.Insecure)
		if err != nil {
			return err
		}
		im, err := remote.Image(ref, remote.WithContext(ctx))
		if err != nil {
			return err
		}
		ls, err := im.Layers()
		if err != nil {
			return err
		}
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := waitFor(ctx, pull); err != nil {
		t.Fatalf("pull through the cache: %v", err)
	}
	// distribution's proxy streams a blob to the client and stores it in
	// the background: wait until every layer is in the cache's storage, or
	// a loaded machine removes the upstream before the cache has it.
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		blob := fmt.Sprintf("/var/lib/registry/docker/registry/v2/blobs/sha256/%s/%s/data", d.Hex[:2], d.Hex)
		if err := waitFor(ctx, func() error {
			_, err := c.ContainerStatPath(ctx, registry.ProxyName(o.Name, p.Upstream), blob)
			return err
		}); err != nil {
			t.Fatalf("the cache never stored %s: %v", d, err)
		}
	}
	if err := registry.Remove(ctx, upstream, registry.RemoveOptions{DeleteData: true}); err != nil {
		t.Fatal(err)
	}
	if err := pull(); err != nil {
		t.Fatalf("with upstream gone the cache no longer serves the image: %v", err)
	}

	// hosts.toml for that upstream lists the local mirror path, then the cache.
	toml := registry.MirrorHostsTOML(p.Upstream, "kind-registry:5000", []string{endpoint})
	if i, j := strings.Index(toml, "/v2/mirror/"+p.Upstream), strings.Index(toml, endpoint); i < 0 || j < i {
		t.Errorf("hosts.toml does not put the mirror before the cache:\n%s", toml)
	}

	removed, err := registry.RemoveProxies(ctx, o, registry.RemoveOptions{DeleteData: true})
	if err != nil || len(removed) != 1 {
		t.Fatalf("RemoveProxies = %v, %v", removed, err)
	}
	if _, err := c.ContainerInspect(ctx, removed[0]); err == nil {
		t.Error("the cache container is still there")
	}
}

// waitFor retries f while the cache container starts (it is not published
// on the host, so Ensure does not wait for it to answer).
func waitFor(ctx context.Context, f func() error) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = f(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return err
}
