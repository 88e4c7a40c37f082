package kit

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"

	"github.com/kindlab/kindlab/provision/internal/atomicfile"
	"github.com/kindlab/kindlab/provision/registry"
)

// Docker is the part of the Engine API kits use.
type Docker interface {
	registry.Docker
	ImageSave(ctx context.Context, images []string, opts ...client.ImageSaveOption) (io.ReadCloser, error)
	Info(ctx context.Context) (system.Info, error)
	CopyToContainer(ctx context.Context, id, dstPath string, content io.Reader, opts container.CopyToContainerOptions) error
	ContainerStatPath(ctx context.Context, id, path string) (container.PathStat, error)
}

// dockerArchiveManifest is one entry of `docker save`'s manifest.json.
type dockerArchiveManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// fromDocker stores an image of the Docker engine in the cache as an OCI
// manifest over its uncompressed layers (what `docker save` gives; gzip
// would cost more time than the kit's size saves on a local disk) and
// returns the manifest's descriptor. The manifest is remembered by image
// ID, so an unchanged image is not saved from Docker twice.
func fromDocker(ctx context.Context, d Docker, cache blobCache, ref, imageID string) (v1.Descriptor, error) {
	id, err := v1.NewHash(imageID)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("image %s: id %q: %w", ref, imageID, err)
	}
	memo := filepath.Join(cache.dir, "docker", id.Hex)
	if b, err := os.ReadFile(memo); err == nil {
		var desc v1.Descriptor
		if json.Unmarshal(b, &desc) == nil && cache.complete(desc) {
			return desc, nil
		}
	}
	rc, err := d.ImageSave(ctx, []string{ref})
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("docker save %s: %w", ref, err)
	}
	defer rc.Close()
	stored := map[string]v1.Hash{}
	sizes := map[v1.Hash]int64{}
	links := map[string]string{}
	var manifests []dockerArchiveManifest
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("docker save %s: %w", ref, err)
		}
		name := path.Clean(hdr.Name)
		switch {
		case name == "manifest.json":
			if err := json.NewDecoder(tr).Decode(&manifests); err != nil {
				return v1.Descriptor{}, fmt.Errorf("docker save %s: manifest.json: %w", ref, err)
			}
		case hdr.Typeflag == tar.TypeSymlink:
			links[name] = path.Join(path.Dir(name), hdr.Linkname)
		case hdr.Typeflag == tar.TypeReg && (strings.HasSuffix(name, "/layer.tar") || strings.HasPrefix(name, "blobs/") ||
			// podman's API (containers/image's docker-archive writer) puts
			// each layer at the top as <diff_id>.tar, with <id>/layer.tar a
			// symlink to it.
			(!strings.Contains(name, "/") && (strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".tar")))):
			h, n, err := cache.write(tr)
			if err != nil {
				return v1.Descriptor{}, fmt.Errorf("docker save %s: %w", ref, err)
			}
			stored[name], sizes[h] = h, n
		}
	}
	if len(manifests) != 1 {
		return v1.Descriptor{}, fmt.Errorf("docker save %s: manifest.json lists %d images, want 1", ref, len(manifests))
	}
	lookup := func(p string) (v1.Hash, bool) {
		p = path.Clean(p)
		if to, ok := links[p]; ok {
			p = to
		}
		h, ok := stored[p]
		return h, ok
	}
	m := manifests[0]
	cfgHash, ok := lookup(m.Config)
	if !ok || cfgHash != id {
		return v1.Descriptor{}, fmt.Errorf("docker save %s: config %s is not image %s", ref, m.Config, imageID)
	}
	cfgFile, err := cache.configFile(cfgHash)
	if err != nil {
		return v1.Descriptor{}, err
	}
	if len(cfgFile.RootFS.DiffIDs) != len(m.Layers) {
		return v1.Descriptor{}, fmt.Errorf("docker save %s: %d layers for %d diff_ids", ref, len(m.Layers), len(cfgFile.RootFS.DiffIDs))
	}
	man := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: cfgHash, Size: sizes[cfgHash]},
	}
	for i, l := range m.Layers {
		h, ok := lookup(l)
		if !ok {
			return v1.Descriptor{}, fmt.Errorf("docker save %s: layer %s missing from the archive", ref, l)
		}
		// Docker's layer.tar is the uncompressed layer: its digest is the
		// diff_id, which is how the engine checks it on load.
		if h != cfgFile.RootFS.DiffIDs[i] {
			return v1.Descriptor{}, fmt.Errorf("docker save %s: layer %d has digest %s, config says %s", ref, i, h, cfgFile.RootFS.DiffIDs[i])
		}
		man.Layers = append(man.Layers, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Digest: h, Size: sizes[h]})
	}
	raw, err := json.Marshal(man)
	if err != nil {
		return v1.Descriptor{}, err
	}
	mh, err := cache.putBytes(raw)
	if err != nil {
		return v1.Descriptor{}, err
	}
	desc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: mh, Size: int64(len(raw)),
		Platform: &v1.Platform{OS: cfgFile.OS, Architecture: cfgFile.Architecture, Variant: cfgFile.Variant}}
	b, _ := json.Marshal(desc)
	if err := os.MkdirAll(filepath.Dir(memo), 0o755); err == nil {
		// A cache entry: written whole or not at all, so a concurrent
		// save reads a complete one or none.
		_ = atomicfile.WriteFile(memo, b, 0o644)
	}
	return desc, nil
}

func (c blobCache) configFile(h v1.Hash) (*v1.ConfigFile, error) {
	f, err := c.open(h)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cf, err := v1.ParseConfigFile(f)
	if err != nil {
		return nil, fmt.Errorf("image config %s: %w", h, err)
	}
	return cf, nil
}

// complete reports whether the manifest and every blob it names are cached.
func (c blobCache) complete(desc v1.Descriptor) bool {
	if !c.has(desc.Digest, desc.Size) {
		return false
	}
	f, err := c.open(desc.Digest)
	if err != nil {
		return false
	}
	defer f.Close()
	m, err := v1.ParseManifest(f)
	if err != nil {
		return false
	}
	if !c.has(m.Config.Digest, m.Config.Size) {
		return false
	}
	for _, l := range m.Layers {
		if !c.has(l.Digest, l.Size) {
			return false
		}
	}
	return true
}

// writeDockerArchive streams the `docker load` format (manifest.json,
// config, one layer.tar per layer; compressed layers are fine, the engine
// decompresses) for one image of the kit, tagged tag.
func writeDockerArchive(w io.Writer, tag string, m *v1.Manifest, open func(v1.Descriptor) (io.Reader, error)) error {
	tw := tar.NewWriter(w)
	am := dockerArchiveManifest{Config: m.Config.Digest.Hex + ".json", RepoTags: []string{tag}}
	var files []v1.Descriptor
	seen := map[v1.Hash]bool{}
	for _, l := range m.Layers {
		am.Layers = append(am.Layers, l.Digest.Hex+"/layer.tar")
		if !seen[l.Digest] {
			seen[l.Digest] = true
			files = append(files, l)
		}
	}
	b, err := json.Marshal([]dockerArchiveManifest{am})
	if err != nil {
		return err
	}
	if err := writeTarFile(tw, "manifest.json", int64(len(b)), strings.NewReader(string(b))); err != nil {
		return err
	}
	r, err := open(m.Config)
	if err != nil {
		return err
	}
	if err := writeTarFile(tw, am.Config, m.Config.Size, r); err != nil {
		return err
	}
	for _, l := range files {
		r, err := open(l)
		if err != nil {
			return err
		}
		if err := writeTarFile(tw, l.Digest.Hex+"/layer.tar", l.Size, r); err != nil {
			return err
		}
	}
	return tw.Close()
}

// writeTarFile writes one regular file with fixed metadata, so the same
// content always makes the same bytes.
func writeTarFile(tw *tar.Writer, name string, size int64, r io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Size: size, Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
		return err
	}
	n, err := io.Copy(tw, r)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("%s: %d bytes, want %d", name, n, size)
	}
	return nil
}

// engineImageTag is the tag an image is loaded under: the reference
// without its digest (a load cannot record one), or a tag made from the
// digest when the reference has none.
func engineImageTag(ref string, digest v1.Hash) string {
	base, _, _ := strings.Cut(ref, "@")
	if registry.ReferenceTag(ref) != "" {
		return base
	}
	return kitImageTag(ref, digest)
}

// kitImageTag is ref's repository with the tag kit-<12 hex of digest>, for
// a kit image whose own tag names another image in the engine.
func kitImageTag(ref string, digest v1.Hash) string {
	base, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndex(base, ":"); i > strings.LastIndex(base, "/") {
		base = base[:i]
	}
	return base + ":kit-" + digest.Hex[:12]
}
