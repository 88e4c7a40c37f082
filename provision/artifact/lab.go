package artifact

import (
	"bytes"
	"context"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
)

// LabResult is one lab artifact pushed.
type LabResult struct {
	Name string `json:"name"`
	// Reference is what the lab names (and pods pull); PushedTo is where it
	// went from the host, which differs when the registry port was moved.
	Reference string `json:"reference"`
	Result
	PushedTo string `json:"pushedTo"`
}

// PushLab builds and pushes a lab's artifacts to the shared registry on
// 127.0.0.1:hostPort (0 means the default), in order. Each comes from its
// directory inside the lab's file system, so built-in labs embedded in the
// binary work the same as labs on disk. progress, if set, is called per
// artifact with the reference being pushed.
func PushLab(ctx context.Context, arts []lab.ResolvedArtifact, hostPort int, progress func(ref string, p Progress)) ([]LabResult, error) {
	var out []LabResult
	for _, a := range arts {
		img, err := BuildLab(a)
		if err != nil {
			return out, err
		}
		to := registry.PushReference(a.Reference, hostPort)
		var opts PushOptions
		if progress != nil {
			opts.Progress = func(p Progress) { progress(to, p) }
		}
		res, err := Push(ctx, img, to, opts)
		if err != nil {
			return out, fmt.Errorf("artifact %s: %w", a.Name, err)
		}
		out = append(out, LabResult{Name: a.Name, Reference: a.Reference, Result: *res, PushedTo: to})
	}
	return out, nil
}

// BuildLab builds one of a lab's artifacts from its directory inside the
// lab's file system, so built-in labs embedded in the binary work the same
// as labs on disk.
func BuildLab(a lab.ResolvedArtifact) (v1.Image, error) {
	fsys, err := a.Dir.Sub()
	if dir, ok := a.Dir.DiskPath(); ok {
		// On disk, symlinks must be checked against the real file system.
		fsys, err = OpenDir(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("artifact %s: source %s: %w", a.Name, a.Dir.Display, err)
	}
	img, err := Build(fsys, BuildOptions{ArtifactType: a.ArtifactType, Annotations: a.Annotations, NoHidden: true})
	if err != nil {
		return nil, fmt.Errorf("artifact %s: source %s: %w", a.Name, a.Dir.Display, err)
	}
	return img, nil
}

// ImportLab builds a lab's artifacts and writes them into the registry
// through the Engine API (registry.Import) instead of pushing over HTTP:
// on a remote engine the registry's port is published on that machine's
// loopback, not this one's, while the API reaches it.
func ImportLab(ctx context.Context, arts []lab.ResolvedArtifact, opts registry.Options, cp registry.Copier) ([]LabResult, error) {
	var imgs []registry.ImportImage
	blobs := map[v1.Hash]func() (io.Reader, error){}
	var out []LabResult
	for _, a := range arts {
		img, err := BuildLab(a)
		if err != nil {
			return nil, err
		}
		repo, err := registry.LocalRepository(a.Reference)
		if err != nil {
			return nil, fmt.Errorf("artifact %s: %w", a.Name, err)
		}
		raw, err := img.RawManifest()
		if err != nil {
			return nil, err
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, err
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			return nil, err
		}
		blobs[d] = func() (io.Reader, error) { return bytes.NewReader(raw), nil }
		blobs[m.Config.Digest] = func() (io.Reader, error) { return bytes.NewReader(cfg), nil }
		ls, err := img.Layers()
		if err != nil {
			return nil, err
		}
		res := LabResult{Name: a.Name, Reference: a.Reference, PushedTo: "engine API → " + repo}
		for i, l := range ls {
			l := l
			blobs[m.Layers[i].Digest] = func() (io.Reader, error) { return l.Compressed() }
			res.Size += m.Layers[i].Size
		}
		res.Digest, res.Layers, res.LayersPushed = d.String(), len(ls), len(ls)
		imgs = append(imgs, registry.ImportImage{
			Repository: repo, Tag: registry.ReferenceTag(a.Reference), Root: d,
			Manifests: []v1.Descriptor{{MediaType: m.MediaType, Digest: d, Size: int64(len(raw))}},
			Blobs:     append([]v1.Descriptor{m.Config}, m.Layers...),
		})
		out = append(out, res)
	}
	_, err := registry.Import(ctx, opts, cp, "", imgs, func(d v1.Descriptor) (io.Reader, error) {
		open, ok := blobs[d.Digest]
		if !ok {
			return nil, fmt.Errorf("no blob %s", d.Digest)
		}
		return open()
	})
	return out, err
}
