// Podman: kindlab's second engine (KIND_EXPERIMENTAL_PROVIDER=podman or
// --provider podman).
//
// kind drives the podman CLI (sigs.k8s.io/kind v0.31.0
// pkg/cluster/internal/providers/podman); kindlab's own Engine API calls
// (registry, kits, artifacts, the node-files volume, doctor) go to podman's
// Docker-compatible API service (`podman system service`), so the same
// Docker client code serves both engines. Where the compatible API answers
// differently from dockerd, the difference is handled in this package.
package engine

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
)

// ProviderPodman is kind's podman provider (kindcluster.ProviderWithPodman).
const ProviderPodman = "podman"

// PodmanHostEnv is podman's own variable for the service it talks to
// (podman(1): "CONTAINER_HOST: Set default --url value to access Podman
// service. Automatically enables the --remote option"). The podman CLI
// that kind runs honours it too, so both reach the same engine.
const PodmanHostEnv = "CONTAINER_HOST"

// Where a podman endpoint came from (Endpoint.Source).
const (
	SourcePodmanEnv     = PodmanHostEnv
	SourcePodmanDefault = "podman default"
)

// PodmanDefaultRootSocket is rootful podman's API socket
// (podman-system-service(1); podman.socket's ListenStream).
const PodmanDefaultRootSocket = "unix:///run/podman/podman.sock"

// PodmanSocket is the API socket podman's own clients use when nothing
// names one: PodmanDefaultRootSocket for root, else
// $XDG_RUNTIME_DIR/podman/podman.sock (/run/user/UID when unset).
func PodmanSocket() string {
	uid := os.Geteuid()
	if uid == 0 {
		return PodmanDefaultRootSocket
	}
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = filepath.Join("/run/user", strconv.Itoa(uid))
	}
	return "unix://" + filepath.Join(dir, "podman", "podman.sock")
}

// podmanEndpointError is a CONTAINER_HOST kindlab cannot use.
type podmanEndpointError struct{ msg string }

func (e *podmanEndpointError) Error() string { return e.msg }

// resolvePodman is the podman engine: CONTAINER_HOST, else the local API
// socket (PodmanSocket). DOCKER_HOST and docker contexts do not apply: the
// podman CLI that kind runs does not read them, and a lab must not be split
// over two engines. ssh:// is refused: podman's ssh:// forwards a remote
// socket, which kindlab's ssh dialer (docker system dial-stdio) does not.
func resolvePodman() (Endpoint, error) {
	h := os.Getenv(PodmanHostEnv)
	if h == "" {
		return Endpoint{Host: PodmanSocket(), Source: SourcePodmanDefault, Podman: true}, nil
	}
	u, err := url.Parse(h)
	if err != nil || (u.Scheme != "unix" && u.Scheme != "tcp") {
		return Endpoint{}, &podmanEndpointError{fmt.Sprintf("%s=%q: kindlab reaches podman over unix:// or tcp:// only "+
			"(for ssh, forward the socket first: ssh -N -L /tmp/podman.sock:/run/podman/podman.sock HOST, then %s=unix:///tmp/podman.sock)",
			PodmanHostEnv, redact(h), PodmanHostEnv)}
	}
	return Endpoint{Host: h, Source: SourcePodmanEnv, Podman: true}, nil
}

func redact(h string) string {
	if u, err := url.Parse(h); err == nil && u.User != nil {
		return u.Redacted()
	}
	return h
}
