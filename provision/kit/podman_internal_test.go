package kit

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// TestFromPodmanArchive reads an image out of podman's Docker-compatible
// API (podman system service): its `docker save` archive keeps each layer
// at the top as <diff_id>.tar with <id>/layer.tar a symlink to it, unlike
// dockerd's. The kit's manifest must name every layer by its diff_id.
// Skipped without a podman service unless KINDLAB_REQUIRE_PODMAN=1.
func TestFromPodmanArchive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := engine.Open(ctx, engine.WithProvider(engine.ProviderPodman))
	if err == nil {
		defer e.Close()
		err = e.Ping(ctx)
	}
	if err != nil {
		if os.Getenv("KINDLAB_REQUIRE_PODMAN") == "1" {
			t.Fatalf("podman required: %v", err)
		}
		t.Skipf("no podman service: %v", err)
	}
	c := e.Client()
	tag := registrytest.BusyboxImage(t, c) // loaded into podman through its API
	t.Cleanup(func() { _, _ = c.ImageRemove(context.Background(), tag, image.RemoveOptions{}) })
	id, _, err := e.ImageID(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	cache := blobCache{dir: t.TempDir()}
	desc, err := fromDocker(ctx, c, cache, tag, id)
	if err != nil {
		t.Fatalf("save %s from podman: %v", tag, err)
	}
	f, err := cache.open(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := v1.ParseManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := cache.configFile(m.Config.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.Digest.String() != id || len(m.Layers) != 1 || len(cfg.RootFS.DiffIDs) != 1 || m.Layers[0].Digest != cfg.RootFS.DiffIDs[0] || !cache.complete(desc) {
		t.Errorf("manifest %+v for image %s (diff_ids %v)", m, id, cfg.RootFS.DiffIDs)
	}
}
