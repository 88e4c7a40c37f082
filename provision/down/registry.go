package down

import (
	"context"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/registry"
)

// releaseRegistry removes the shared registry, and what was pushed to it,
// once no running lab uses it any more.
func releaseRegistry(ctx context.Context, p *cluster.Provider, port int) (string, error) {
	n, err := registryUsers(ctx, p, port)
	if err != nil || n > 0 {
		return "", err
	}
	st, err := registry.Inspect(ctx, registry.Options{HostPort: port})
	if err != nil || st.Absent() {
		return "", err
	}
	if err := registry.Remove(ctx, registry.Options{HostPort: port}, registry.RemoveOptions{DeleteData: true}); err != nil {
		return "", err
	}
	return "Removed registry " + registry.ContainerName + " (no other lab uses it)", nil
}
