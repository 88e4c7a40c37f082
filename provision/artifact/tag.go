package artifact

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TagDigest is the digest ref's tag points at in its registry (over HTTP,
// as ParseReference allows for local registries), "" when the tag does not
// exist. Other errors are the registry's, wrapped with ref.
func TagDigest(ctx context.Context, ref string) (string, error) {
	r, err := ParseReference(ref, true)
	if err != nil {
		return "", err
	}
	desc, err := remote.Head(r, remote.WithContext(ctx), remote.WithTransport(DefaultTransport()))
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read tag %s: %w", ref, err)
	}
	return desc.Digest.String(), nil
}
