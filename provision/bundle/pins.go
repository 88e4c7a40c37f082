package bundle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/kit"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
)

// collectPins reads every pin of a lab as it runs. What cannot be read (no
// Docker engine, an apiserver that does not answer) is left empty and
// returned as a problem: the pins that can be read still matter. store
// finds images a kit loaded under a tag only.
func collectPins(ctx context.Context, e *engine.Engine, plan *render.Plan, cfg *rest.Config, v Versions, store state.Store) (Pins, []string) {
	var problems []string
	p := Pins{
		Kindlab:   v.Kindlab,
		Kind:      v.Kind,
		NodeImage: plan.NodeImage,
		Images:    append([]lab.Image(nil), plan.Images...),
	}
	if c := plan.CRIShim; c != nil {
		// The shim is the kindlab binary itself, so its version is the
		// kindlab pin; unit and socket say where it sat.
		p.CRIShim = fmt.Sprintf("%s: kubelet -> %s -> %s", c.Unit, c.Endpoint, c.RuntimeEndpoint)
	}
	if cfg != nil {
		ver, err := serverVersion(cfg)
		if err != nil {
			problems = append(problems, fmt.Sprintf("kubernetes version: %v", err))
		} else {
			p.Kubernetes = ver
		}
	}
	for _, ref := range plan.NodeImages() {
		id, digests, err := dockerImage(ctx, e, kit.LocalImage(ctx, dockerOf(e), store, ref))
		if err != nil {
			problems = append(problems, fmt.Sprintf("node image %s: %v", ref, err))
			continue
		}
		if p.NodeImageIDs == nil {
			p.NodeImageIDs = map[string]string{}
		}
		p.NodeImageIDs[ref] = id
		if ref == plan.NodeImage {
			p.NodeImageID, p.NodeImageRepoDigests = id, digests
		}
	}
	port := 0
	if plan.Registry != nil {
		port = plan.Registry.HostPort
		st, err := registry.Inspect(ctx, registry.Options{HostPort: port, Docker: dockerOf(e)})
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("registry: %v", err))
		case !st.Absent():
			p.RegistryImage = st.Image
			if id, _, err := dockerImage(ctx, e, kit.LocalImage(ctx, dockerOf(e), store, st.Image)); err == nil {
				p.RegistryImageID = id
			}
		}
	}
	for _, a := range plan.Resolved.Artifacts {
		pin := ArtifactPin{Name: a.Name, Reference: a.Reference}
		d, err := artifactDigest(a)
		if err != nil {
			problems = append(problems, err.Error())
		}
		pin.Digest = d
		if port != 0 {
			if rd, err := remoteDigest(ctx, registry.PushReference(a.Reference, port)); err == nil {
				pin.RegistryDigest = rd
			}
		}
		p.Artifacts = append(p.Artifacts, pin)
	}
	return p, problems
}

func serverVersion(cfg *rest.Config) (string, error) {
	c := rest.CopyConfig(cfg)
	c.Timeout = 15 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(c)
	if err != nil {
		return "", err
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return "", err
	}
	return v.GitVersion, nil
}

// errNoEngine is what a bundle records for the engine's pins when it was
// given no engine (Input.Engine nil).
var errNoEngine = errors.New("no container engine given")

// dockerImage returns an image's ID and repo digests in the Docker engine.
func dockerImage(ctx context.Context, e *engine.Engine, ref string) (string, []string, error) {
	if e == nil {
		return "", nil, errNoEngine
	}
	return e.ImageID(ctx, ref)
}

// dockerOf is the engine's client, or nil (a nil interface, not a nil
// pointer in one) without an engine.
func dockerOf(e *engine.Engine) registry.Docker {
	if e == nil {
		return nil
	}
	return e.Client()
}

// artifactDigest builds an artifact from the lab's files, as up does
// before pushing it: the build is deterministic, so this is the digest a
// replay of the same files pushes.
func artifactDigest(a lab.ResolvedArtifact) (string, error) {
	img, err := artifact.BuildLab(a)
	if err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("artifact %s: %w", a.Name, err)
	}
	return d.String(), nil
}

// remoteDigest asks a registry for a reference's manifest digest, without
// downloading it.
func remoteDigest(ctx context.Context, ref string) (string, error) {
	r, err := artifact.ParseReference(ref, true)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	d, err := remote.Head(r, remote.WithContext(ctx), remote.WithTransport(artifact.DefaultTransport()))
	if err != nil {
		return "", err
	}
	return d.Digest.String(), nil
}
