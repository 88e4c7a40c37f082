package conformance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"sigs.k8s.io/yaml"

	"github.com/kindlab/kindlab/provision/registry"
)

// Upstream's e2e framework v1.31.14 names its agnhost image
// <promoterE2eRegistry>/agnhost:2.52 (test/utils/image/manifest.go), with
// promoterE2eRegistry registry.k8s.io/e2e-test-images unless a
// --kube-test-repo-list file remaps it. Tags only, never digests.
const (
	AgnhostName     = "agnhost"
	AgnhostVersion  = "2.52"
	UpstreamE2EHost = "registry.k8s.io/e2e-test-images"
)

// RepoList is e2e.test's --kube-test-repo-list file (the fields of
// test/utils/image.RegistryList that kindlab remaps).
type RepoList struct {
	PromoterE2eRegistry string `json:"promoterE2eRegistry,omitempty"`
}

// Images is how upstream's tests get their images on a lab.
type Images struct {
	// Agnhost is the image the tests will run as agnhost, as nodes name
	// it: <PromoterE2eRegistry>/agnhost:2.52.
	Agnhost string `json:"agnhost"`
	// From is the lab's agnhost reference it stands for.
	From string `json:"from"`
	// RepoList is the --kube-test-repo-list content (nil: upstream's
	// registries as they are).
	RepoList *RepoList `json:"repoList,omitempty"`
	// Tagged says the local registry was given Agnhost's tag for From's
	// digest, so nodes resolve it through their mirror of Agnhost's host.
	Tagged bool `json:"tagged"`
}

// PrepareAgnhost makes the agnhost a lab runs (its images' "agnhost"
// reference, after the overrides it came up with, e.g.
// kindlab.local/e2e-test-images/agnhost:2.52-k8s-v1.31.14@sha256:… offline)
// the one upstream's tests pull. The tests ask for <dir>/agnhost:2.52 by
// tag, so: dir is the lab reference's repository without its last
// element (a --kube-test-repo-list remaps promoterE2eRegistry to it when it
// is not upstream's), and, when the lab's registry on
// localhost:registryPort holds the reference's digest (a kit or
// `make offline-images` put it there under mirror/<host>/…), that digest
// is tagged 2.52 there too, so nodes pull it offline through the mirror
// for <host> that up configured (registry.MirrorHosts). registryPort 0 (a
// lab without a registry) tags nothing: nodes then pull <dir>/agnhost:2.52
// from its registry.
//
// Errors: a reference that does not parse; a registry that answers but
// cannot tag.
func PrepareAgnhost(ctx context.Context, labRef string, registryPort int) (*Images, error) {
	ref, err := name.ParseReference(labRef, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("agnhost image %q: %w", labRef, err)
	}
	repo := ref.Context()
	host := repo.RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	dir := host
	if d := path.Dir(repo.RepositoryStr()); d != "." {
		dir += "/" + d
	}
	img := &Images{Agnhost: dir + "/" + AgnhostName + ":" + AgnhostVersion, From: labRef}
	if dir != UpstreamE2EHost {
		img.RepoList = &RepoList{PromoterE2eRegistry: dir}
	}
	if registryPort == 0 {
		return img, nil
	}
	// The lab's image, as the local registry keeps it (tag and digest).
	local, err := registry.LocalReference(labRef, registryPort)
	if err != nil {
		return nil, err
	}
	src, err := name.ParseReference(local, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("agnhost image %q in the local registry: %w", local, err)
	}
	dst, err := registry.LocalReference(img.Agnhost, registryPort)
	if err != nil {
		return nil, err
	}
	dstTag, err := name.NewTag(dst, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("agnhost tag %q: %w", dst, err)
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(http.DefaultTransport), remote.WithUserAgent("kindlab")}
	desc, err := remote.Get(src, opts...)
	if err != nil {
		// Not in the local registry: the nodes pull it from its own
		// registry (online), which serves the tag itself.
		if isNotFound(err) {
			return img, nil
		}
		return nil, fmt.Errorf("agnhost image %s in the lab's registry: %w", local, err)
	}
	if src.Context().String() == dstTag.Context().String() {
		// Same repository: a tag is one manifest PUT, no blob moves.
		if err := remote.Tag(dstTag, desc, opts...); err != nil {
			return nil, fmt.Errorf("tag %s as %s: %w", local, dst, err)
		}
	} else {
		idx, ierr := desc.ImageIndex()
		if desc.MediaType.IsIndex() && ierr == nil {
			err = remote.WriteIndex(dstTag, idx, opts...)
		} else {
			im, ierr := desc.Image()
			if ierr != nil {
				return nil, fmt.Errorf("agnhost image %s: %w", local, ierr)
			}
			err = remote.Write(dstTag, im, opts...)
		}
		if err != nil {
			return nil, fmt.Errorf("copy %s to %s: %w", local, dst, err)
		}
	}
	img.Tagged = true
	return img, nil
}

func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// RepoListYAML is the --kube-test-repo-list file for l.
func RepoListYAML(l *RepoList) ([]byte, error) {
	return yaml.Marshal(l)
}
