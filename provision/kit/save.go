package kit

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
)

// SaveOptions say what goes into a kit.
type SaveOptions struct {
	// Plan is the lab rendered with the flags up would get (node image,
	// image overrides, registry port).
	Plan *render.Plan
	// RegistryImage is the registry image ("" = registry.DefaultImage).
	RegistryImage string
	// Platforms default to the Docker engine's.
	Platforms []v1.Platform
	// Output is the kit file.
	Output string
	// Docker is the engine (the command's engine.Engine client); required.
	Docker Docker
	// CacheDir defaults to CacheDir().
	CacheDir string
	// Store, if set, resolves images an earlier kit load tagged (Alias).
	Store *state.Store
	// Progress, if set, gets a line per image.
	Progress func(string)
}

// SaveResult is what a save did.
type SaveResult struct {
	Manifest
	File string `json:"file"`
	// Unchanged says the kit file already held exactly this content and
	// was left as it was.
	Unchanged bool `json:"unchanged"`
}

// source is one image as the kit will hold it.
type source struct {
	entry Entry
	root  v1.Descriptor
	// blobs are every blob under root the kit carries, root included.
	blobs []v1.Descriptor
}

// Save writes the kit for a lab.
func Save(ctx context.Context, opts SaveOptions) (*SaveResult, error) {
	if opts.Plan == nil || opts.Output == "" {
		return nil, errors.New("kit save: a lab and an output file are required")
	}
	if opts.Docker == nil {
		return nil, errors.New("kit save: no Docker engine given (SaveOptions.Docker is nil)")
	}
	if opts.CacheDir == "" {
		d, err := CacheDir()
		if err != nil {
			return nil, err
		}
		opts.CacheDir = d
	}
	if opts.RegistryImage == "" {
		opts.RegistryImage = registry.DefaultImage
	}
	if len(opts.Platforms) == 0 {
		p, err := enginePlatform(ctx, opts.Docker)
		if err != nil {
			return nil, err
		}
		opts.Platforms = []v1.Platform{p}
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string) {}
	}
	cache := blobCache{dir: opts.CacheDir}
	port := 0
	if opts.Plan.Registry != nil {
		port = opts.Plan.Registry.HostPort
	}
	g := &gatherer{ctx: ctx, d: opts.Docker, cache: cache, platforms: opts.Platforms, port: port, store: opts.Store}

	var srcs []source
	add := func(role, nm, ref string, fromDocker bool) error {
		progress(fmt.Sprintf("%s %s", role, ref))
		s, err := g.image(role, nm, ref, fromDocker)
		if err != nil {
			return err
		}
		srcs = append(srcs, s)
		return nil
	}
	for _, ref := range opts.Plan.NodeImages() {
		if err := add(RoleNode, "", ref, true); err != nil {
			return nil, err
		}
	}
	if opts.Plan.Registry != nil {
		if err := add(RoleRegistry, "", opts.RegistryImage, true); err != nil {
			return nil, err
		}
	}
	for _, im := range opts.Plan.Images {
		if err := add(RoleWorkload, im.Name, im.Reference, false); err != nil {
			return nil, err
		}
	}
	for _, a := range opts.Plan.Resolved.Artifacts {
		progress(fmt.Sprintf("%s %s", RoleArtifact, a.Reference))
		img, err := artifact.BuildLab(a)
		if err != nil {
			return nil, err
		}
		s, err := g.fromImage(img, Entry{Role: RoleArtifact, Name: a.Name, Reference: a.Reference})
		if err != nil {
			return nil, fmt.Errorf("artifact %s: %w", a.Name, err)
		}
		srcs = append(srcs, s)
	}

	man := Manifest{Format: FormatVersion, Lab: opts.Plan.Lab, Platforms: platformStrings(opts.Platforms)}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	var blobs []v1.Descriptor
	seen := map[v1.Hash]bool{}
	for _, s := range srcs {
		man.Entries = append(man.Entries, s.entry)
		d := s.root
		d.Platform = nil
		d.Annotations = map[string]string{
			"org.opencontainers.image.ref.name": s.entry.Reference,
			annotationRole:                      s.entry.Role,
		}
		idx.Manifests = append(idx.Manifests, d)
		for _, b := range s.blobs {
			if !seen[b.Digest] {
				seen[b.Digest] = true
				blobs = append(blobs, b)
				man.Size += b.Size
			}
		}
	}
	manBytes, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, err
	}
	idxBytes, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	res := &SaveResult{Manifest: man, File: opts.Output}
	if unchanged(opts.Output, manBytes, idxBytes, blobs) {
		res.Unchanged = true
		return res, nil
	}
	progress(fmt.Sprintf("writing %s (%d MiB)", opts.Output, man.Size>>20))
	if err := writeKit(opts.Output, manBytes, idxBytes, blobs, cache); err != nil {
		return nil, err
	}
	return res, nil
}

const ociLayoutFile = `{"imageLayoutVersion":"1.0.0"}`

// writeKit writes the tar next to the target and renames it into place,
// so a failure (a full disk) never leaves a file that looks like a kit.
func writeKit(out string, manBytes, idxBytes []byte, blobs []v1.Descriptor, cache blobCache) (err error) {
	dir := filepath.Dir(out)
	f, err := os.CreateTemp(dir, "."+filepath.Base(out)+".*")
	if err != nil {
		return fmt.Errorf("write kit %s: %w", out, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("write kit %s: %w", out, err)
		}
	}()
	tw := tar.NewWriter(f)
	for _, file := range []struct {
		name string
		b    []byte
	}{{"oci-layout", []byte(ociLayoutFile)}, {ManifestFile, manBytes}, {"index.json", idxBytes}} {
		if err := writeTarFile(tw, file.name, int64(len(file.b)), bytes.NewReader(file.b)); err != nil {
			return err
		}
	}
	for _, b := range blobs {
		r, err := cache.open(b.Digest)
		if err != nil {
			return err
		}
		err = writeTarFile(tw, blobPath(b.Digest), b.Size, r)
		r.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), out)
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// unchanged reports whether out already is this kit: the same table of
// contents and index, and every blob present with its size (blob names
// are digests, and load verifies content).
func unchanged(out string, manBytes, idxBytes []byte, blobs []v1.Descriptor) bool {
	k, err := openKit(out)
	if err != nil {
		return false
	}
	defer k.Close()
	m, err1 := k.readSmall(ManifestFile)
	i, err2 := k.readSmall("index.json")
	if err1 != nil || err2 != nil || !bytes.Equal(m, manBytes) || !bytes.Equal(i, idxBytes) {
		return false
	}
	if len(k.entries) != len(blobs)+3 {
		return false
	}
	for _, b := range blobs {
		if s, ok := k.entries[blobPath(b.Digest)]; !ok || s.size != b.Size {
			return false
		}
	}
	return true
}

// gatherer fetches images into the cache.
type gatherer struct {
	ctx       context.Context
	d         Docker
	cache     blobCache
	platforms []v1.Platform
	port      int
	store     *state.Store
}

// image finds ref in the Docker engine (node and registry images) or in
// the local registry, then upstream, and caches what the kit needs.
func (g *gatherer) image(role, nm, ref string, tryDocker bool) (source, error) {
	e := Entry{Role: role, Name: nm, Reference: ref}
	if tryDocker {
		local := ref
		if g.store != nil {
			local = LocalImage(g.ctx, g.d, *g.store, ref)
		}
		ins, err := g.d.ImageInspect(g.ctx, local)
		if err == nil {
			p := v1.Platform{OS: ins.Os, Architecture: ins.Architecture, Variant: ins.Variant}
			if !platformMatches(g.platforms, p) {
				return source{}, fmt.Errorf("%s image %s in the Docker engine is %s, not one of the kit's platforms %v: pass --platform %s or the image for those platforms",
					role, ref, p.String(), platformStrings(g.platforms), p.String())
			}
			desc, err := fromDocker(g.ctx, g.d, g.cache, local, ins.ID)
			if err != nil {
				return source{}, err
			}
			return g.fromCachedManifest(desc, e)
		}
		if !errdefs.IsNotFound(err) {
			return source{}, fmt.Errorf("inspect %s: %w", ref, err)
		}
	}
	var errs []error
	for _, from := range g.candidates(ref) {
		r, err := name.ParseReference(from, insecureFor(from)...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		desc, err := remote.Get(r, remote.WithContext(g.ctx), remote.WithTransport(http.DefaultTransport))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", from, oneLine(err)))
			continue
		}
		if desc.MediaType.IsIndex() {
			ii, err := desc.ImageIndex()
			if err != nil {
				return source{}, err
			}
			return g.fromIndex(ii, e)
		}
		img, err := desc.Image()
		if err != nil {
			return source{}, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return source{}, fmt.Errorf("%s: config: %w", from, err)
		}
		if p := cf.Platform(); p != nil && !platformMatches(g.platforms, *p) {
			return source{}, fmt.Errorf("%s image %s is %s only, not one of the kit's platforms %v", role, ref, p.String(), platformStrings(g.platforms))
		}
		return g.fromImage(img, e)
	}
	return source{}, fmt.Errorf("%s image %s: not in the Docker engine, the local registry or upstream: %v", role, ref, errors.Join(errs...))
}

// candidates are where to fetch ref from: the local registry (where an
// earlier kit load or a build pushed it), then where it names.
func (g *gatherer) candidates(ref string) []string {
	var out []string
	if local, err := registry.LocalReference(ref, g.port); err == nil && local != ref {
		out = append(out, local)
	}
	return append(out, ref)
}

func insecureFor(ref string) []name.Option {
	if _, local, err := registry.Upstream(ref); err == nil && local {
		return []name.Option{name.Insecure}
	}
	return nil
}

func (g *gatherer) fromCachedManifest(desc v1.Descriptor, e Entry) (source, error) {
	f, err := g.cache.open(desc.Digest)
	if err != nil {
		return source{}, err
	}
	defer f.Close()
	m, err := v1.ParseManifest(f)
	if err != nil {
		return source{}, err
	}
	e.Digest, e.MediaType = desc.Digest.String(), string(desc.MediaType)
	e.ImageIDs = map[string]string{desc.Platform.String(): m.Config.Digest.String()}
	s := source{entry: e, root: desc, blobs: []v1.Descriptor{desc, m.Config}}
	s.blobs = append(s.blobs, m.Layers...)
	for _, b := range s.blobs {
		s.entry.Size += b.Size
	}
	return s, nil
}

// fromImage caches one image manifest with its config and layers.
func (g *gatherer) fromImage(img v1.Image, e Entry) (source, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return source{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return source{}, err
	}
	mh, err := g.cache.putBytes(raw)
	if err != nil {
		return source{}, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return source{}, err
	}
	if err := g.cache.put(m.Config.Digest, m.Config.Size, bytes.NewReader(cfg)); err != nil {
		return source{}, err
	}
	ls, err := img.Layers()
	if err != nil {
		return source{}, err
	}
	for i, l := range ls {
		d := m.Layers[i]
		if g.cache.has(d.Digest, d.Size) {
			continue
		}
		rc, err := l.Compressed()
		if err != nil {
			return source{}, fmt.Errorf("layer %s: %w", d.Digest, err)
		}
		err = g.cache.put(d.Digest, d.Size, rc)
		rc.Close()
		if err != nil {
			return source{}, fmt.Errorf("layer %s: %w", d.Digest, err)
		}
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	root := v1.Descriptor{MediaType: mt, Digest: mh, Size: int64(len(raw))}
	e.Digest, e.MediaType = mh.String(), string(mt)
	if e.Role == RoleNode || e.Role == RoleRegistry {
		cf, err := img.ConfigFile()
		if err == nil {
			e.ImageIDs = map[string]string{cf.Platform().String(): m.Config.Digest.String()}
		}
	}
	s := source{entry: e, root: root, blobs: append([]v1.Descriptor{root, m.Config}, m.Layers...)}
	for _, b := range s.blobs {
		s.entry.Size += b.Size
	}
	return s, nil
}

// fromIndex caches an index and its children for the kit's platforms. The
// index keeps its digest (pods and the lab pin it), so children for other
// platforms stay named in it but are not carried.
func (g *gatherer) fromIndex(ii v1.ImageIndex, e Entry) (source, error) {
	raw, err := ii.RawManifest()
	if err != nil {
		return source{}, err
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return source{}, err
	}
	ih, err := g.cache.putBytes(raw)
	if err != nil {
		return source{}, err
	}
	root := v1.Descriptor{MediaType: im.MediaType, Digest: ih, Size: int64(len(raw))}
	if root.MediaType == "" {
		root.MediaType = types.OCIImageIndex
	}
	s := source{root: root, blobs: []v1.Descriptor{root}}
	e.Digest, e.MediaType = ih.String(), string(root.MediaType)
	var have []string
	for _, child := range im.Manifests {
		if child.Platform == nil {
			continue
		}
		have = append(have, child.Platform.String())
		if !platformMatches(g.platforms, *child.Platform) || !child.MediaType.IsImage() {
			continue
		}
		img, err := ii.Image(child.Digest)
		if err != nil {
			return source{}, fmt.Errorf("%s (%s): %w", e.Reference, child.Platform, err)
		}
		cs, err := g.fromImage(img, Entry{Role: e.Role})
		if err != nil {
			return source{}, err
		}
		s.blobs = append(s.blobs, cs.blobs...)
		if e.Docker() {
			if e.ImageIDs == nil {
				e.ImageIDs = map[string]string{}
			}
			for p, id := range cs.entry.ImageIDs {
				e.ImageIDs[p] = id
			}
		}
	}
	if len(s.blobs) == 1 {
		return source{}, fmt.Errorf("%s image %s has no manifest for %v (it has %v): pass --platform with one of those",
			e.Role, e.Reference, platformStrings(g.platforms), have)
	}
	for _, b := range s.blobs {
		e.Size += b.Size
	}
	s.entry = e
	return s, nil
}

func enginePlatform(ctx context.Context, d Docker) (v1.Platform, error) {
	// Bounded: it is the first call to the engine, and an endpoint that
	// accepts connections but never answers would hold the kit's load.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := d.Info(ctx)
	if err != nil {
		if client.IsErrConnectionFailed(err) || errors.Is(err, context.DeadlineExceeded) {
			// Not the kit's fault: the caller's exit code says so (4).
			return v1.Platform{}, fmt.Errorf("ask the Docker engine its platform: %w: %s", engine.ErrNoEngine, engine.FirstLine(err.Error()))
		}
		return v1.Platform{}, fmt.Errorf("ask the Docker engine its platform: %w", err)
	}
	return v1.Platform{OS: info.OSType, Architecture: dockerArch(info.Architecture)}, nil
}

func oneLine(err error) string {
	s := err.Error()
	if i := bytes.IndexByte([]byte(s), '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
