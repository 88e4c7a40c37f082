package reset

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/registry"
)

// pushArtifacts starts the registry if it went, and pushes every artifact
// again. The push replaces a tag that points elsewhere (go-containerregistry
// skips the manifest only when the tag already has its digest); the tag is
// read before, to say what was put back, and after, to prove it. On a
// remote engine both go through the Engine API (opts.RemoteEngine).
func pushArtifacts(ctx context.Context, opts Options) ([]Artifact, error) {
	ro := registry.Options{HostPort: opts.RegistryPort, Image: opts.RegistryImage, Docker: opts.Docker}
	if _, err := registry.Ensure(ctx, ro); err != nil {
		return nil, err
	}
	read := func(ref string) (string, error) { return tagDigest(ctx, ref) }
	push := func() ([]artifact.LabResult, error) {
		return artifact.PushLab(ctx, opts.Lab.Artifacts, opts.RegistryPort, nil)
	}
	if e := opts.RemoteEngine; e != nil {
		read = func(ref string) (string, error) { return registry.TagDigest(ctx, ro, e, ref) }
		push = func() ([]artifact.LabResult, error) { return artifact.ImportLab(ctx, opts.Lab.Artifacts, ro, e) }
	}
	before := map[string]string{}
	for _, a := range opts.Lab.Artifacts {
		d, err := read(registry.PushReference(a.Reference, opts.RegistryPort))
		if err != nil {
			return nil, fmt.Errorf("artifact %s: %w", a.Name, err)
		}
		before[a.Name] = d
	}
	pushed, err := push()
	if err != nil {
		return nil, err
	}
	var out []Artifact
	for _, r := range pushed {
		now, err := read(registry.PushReference(r.Reference, opts.RegistryPort))
		if err != nil {
			return nil, fmt.Errorf("artifact %s: %w", r.Name, err)
		}
		if now != r.Digest {
			return nil, fmt.Errorf("artifact %s: %s points at %s after the push, not %s", r.Name, r.PushedTo, now, r.Digest)
		}
		a := Artifact{Reference: r.Reference, Digest: r.Digest, Restored: before[r.Name] != r.Digest}
		if a.Restored {
			a.Was = before[r.Name]
		}
		out = append(out, a)
	}
	return out, nil
}

// tagDigest is the digest a tag points at, "" when it does not exist.
func tagDigest(ctx context.Context, ref string) (string, error) {
	r, err := artifact.ParseReference(ref, true)
	if err != nil {
		return "", err
	}
	desc, err := remote.Head(r, remote.WithContext(ctx), remote.WithTransport(artifact.DefaultTransport()))
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read tag %s: %w", ref, err)
	}
	return desc.Digest.String(), nil
}
