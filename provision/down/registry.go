package down

import (
	"context"
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/regular"
)

// ReleaseRegistry removes the shared registry's container once no kind
// cluster on the engine is wired to it (registry.Users), keeping the
// volume that holds what was pushed; it returns what it did ("" for
// nothing). Fleets take their clusters down keeping the registry, then
// call it once. port is the one the labs recorded; the registry is found
// by its name.
func ReleaseRegistry(ctx context.Context, p *cluster.Provider, port int) (string, error) {
	return releaseRegistry(ctx, registry.Options{Docker: p.Engine().Client(), HostPort: port})
}

// releaseRegistry is ReleaseRegistry for any registry (o.Name: tests run
// their own).
//
// Why the volume stays: the registry's content is expensive to make again
// (`make offline-images` builds agnhost and the device plugin from source;
// `kit load` content exists nowhere else on the machine) and cheap to keep,
// and the next `up` creates the container on the same named volume, so
// up -> down -> up pushes nothing again. The tools kindlab's users know do
// the same or worse: kind's local-registry script runs registry:2 with no
// volume and has no teardown (the image's anonymous volume lives until
// `docker rm -v`); ctlptl's `delete cluster` leaves the registry alone and
// its registry Delete removes the container only (ContainerRemove without
// RemoveVolumes, pkg/registry/registry.go), orphaning that anonymous
// volume silently; k3d added --keep-registry-volume (k3d PR #199) and users
// keep pull-through caches on named volumes to survive `cluster delete`
// (k3d issue #1368). kindlab keeps a named, labelled volume and says so,
// and `kindlab registry down --delete-data` (or --volumes) deletes it, as
// `docker compose down -v` does.
func releaseRegistry(ctx context.Context, o registry.Options) (string, error) {
	users, err := registry.Users(ctx, o.Docker, o.Name)
	if err != nil {
		return "", fmt.Errorf("keep the registry: %w", err)
	}
	if len(users) > 0 {
		return "", nil
	}
	st, err := registry.Inspect(ctx, o)
	if err != nil || st.Absent() {
		return "", err
	}
	if err := registry.Remove(ctx, o, registry.RemoveOptions{}); err != nil {
		return "", err
	}
	return fmt.Sprintf("Removed registry %s (no kind cluster on the engine is wired to it); kept its data on volume %s for the next up (`kindlab registry down --delete-data` deletes it)",
		st.Name, st.Volume), nil
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
