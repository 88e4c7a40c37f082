package down

import (
	"context"
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/internal/regular"
	"github.com/kindlab/kindlab/provision/registry"
)

// ReleaseRegistry removes the shared registry, and what was pushed to it,
// once no running lab uses it any more; it returns what it removed ("" for
// nothing). Fleets take their clusters down keeping the registry, then
// call it once.
func ReleaseRegistry(ctx context.Context, p *cluster.Provider, port int) (string, error) {
	n, err := registryUsers(ctx, p, port)
	if err != nil || n > 0 {
		return "", err
	}
	d := p.Engine().Client()
	st, err := registry.Inspect(ctx, registry.Options{HostPort: port, Docker: d})
	if err != nil || st.Absent() {
		return "", err
	}
	// A loaded kit's images cannot be pushed again from lab files: the
	// next up of the lab needs them, so only the container goes.
	keep := registry.HoldsKits(ctx, registry.Options{Docker: d}, d)
	if err := registry.Remove(ctx, registry.Options{HostPort: port, Docker: d}, registry.RemoveOptions{DeleteData: !keep}); err != nil {
		return "", err
	}
	if keep {
		return fmt.Sprintf("Removed registry %s (no other lab uses it); kept volume %s: it holds a loaded kit (`kindlab registry down --delete-data` removes it)",
			registry.ContainerName, st.Volume), nil
	}
	return "Removed registry " + registry.ContainerName + " (no other lab uses it)", nil
}

// maxKubeconfig bounds the kubeconfig file RemoveEmptyKubeconfig reads, in
// bytes; one cluster's file is a few KiB.
const maxKubeconfig = 16 << 20

// RemoveEmptyKubeconfig deletes a kubeconfig file that holds no context,
// cluster or user any more (kind leaves the emptied file behind). A file
// that is missing, or still holds something, is left alone; one that is
// not a regular file (a symlink, a FIFO, a device) or is over 16 MiB is
// left alone too, and kept says so.
func RemoveEmptyKubeconfig(path string) (removed bool, kept string, err error) {
	b, err := regular.ReadFile(path, maxKubeconfig)
	var nr *regular.NotRegularError
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, "", nil
	case errors.As(err, &nr):
		return false, fmt.Sprintf("Left kubeconfig file %s: a %s, not a file kindlab wrote", path, nr.Kind), nil
	case errors.Is(err, regular.ErrTooLarge):
		return false, fmt.Sprintf("Left kubeconfig file %s: over %d MiB, not a file kindlab wrote", path, maxKubeconfig>>20), nil
	case err != nil:
		return false, "", fmt.Errorf("read kubeconfig %s: %w", path, err)
	}
	cfg, err := clientcmd.Load(b)
	if err != nil {
		return false, "", fmt.Errorf("read kubeconfig %s: %w", path, err)
	}
	if len(cfg.Contexts)+len(cfg.Clusters)+len(cfg.AuthInfos) > 0 {
		return false, "", nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, "", fmt.Errorf("remove emptied kubeconfig: %w", err)
	}
	return true, "", nil
}
