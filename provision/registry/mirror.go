package registry

import (
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// MirrorPrefix is the repository prefix under which the local registry
// keeps images of other registries (from a kit): registry.k8s.io/pause
// lives at mirror/registry.k8s.io/pause, so nodes pull upstream names,
// digests unchanged, from the local registry first.
const MirrorPrefix = "mirror"

// DefaultMirrors are the upstream registries every node resolves through
// the local registry (and a pull-through cache when one runs) before the
// internet.
var DefaultMirrors = []string{"docker.io", "registry.k8s.io"}

// dockerHub is what go-containerregistry calls Docker Hub; containerd and
// image names say docker.io.
const dockerHub = "index.docker.io"

// Upstream returns the registry host an image reference names, as
// containerd names it (docker.io, not index.docker.io), and whether it is
// the local registry itself.
func Upstream(ref string) (host string, local bool, err error) {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return "", false, fmt.Errorf("image %q: %w", ref, err)
	}
	host = r.Context().RegistryStr()
	if host == dockerHub {
		host = "docker.io"
	}
	h := host
	if i := strings.LastIndex(h, ":"); i > 0 {
		h = h[:i]
	}
	return host, h == "localhost" || h == "127.0.0.1", nil
}

// LocalRepository is where the local registry keeps ref's repository:
// its own path for localhost:PORT/... references, mirror/<host>/<path>
// for every other registry.
func LocalRepository(ref string) (string, error) {
	host, local, err := Upstream(ref)
	if err != nil {
		return "", err
	}
	r, _ := name.ParseReference(ref, name.WeakValidation)
	if local {
		return r.Context().RepositoryStr(), nil
	}
	return MirrorPrefix + "/" + host + "/" + r.Context().RepositoryStr(), nil
}

// LocalReference is ref as the local registry on 127.0.0.1:hostPort
// serves it (tag and digest kept).
func LocalReference(ref string, hostPort int) (string, error) {
	repo, err := LocalRepository(ref)
	if err != nil {
		return "", err
	}
	if hostPort == 0 {
		hostPort = DefaultHostPort
	}
	out := fmt.Sprintf("localhost:%d/%s", hostPort, repo)
	if tag := ReferenceTag(ref); tag != "" {
		out += ":" + tag
	}
	if _, digest, hasDigest := strings.Cut(ref, "@"); hasDigest {
		out += "@" + digest
	}
	return out, nil
}

// MirrorHosts are the upstream registries nodes resolve through the local
// registry: DefaultMirrors and every other registry refs name.
func MirrorHosts(refs []string) []string {
	set := map[string]bool{}
	for _, h := range DefaultMirrors {
		set[h] = true
	}
	for _, ref := range refs {
		if host, local, err := Upstream(ref); err == nil && !local {
			set[host] = true
		}
	}
	out := make([]string, 0, len(set))
	for h := range set {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// MirrorHostsTOML is containerd's hosts.toml for an upstream registry:
// the local registry's mirror/<host> path first (override_path makes the
// URL path the API root), then each pull-through cache, then upstream
// itself. containerd moves to the next host on a 404 or an error, so a kit
// image comes from the local registry, anything else from the cache or
// the internet.
func MirrorHostsTOML(upstream, endpoint string, proxies []string) string {
	server := "https://" + upstream
	if upstream == "docker.io" {
		server = "https://registry-1.docker.io"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server = %q\n\n", server)
	fmt.Fprintf(&b, "[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
		fmt.Sprintf("http://%s/v2/%s/%s", endpoint, MirrorPrefix, upstream))
	for _, p := range proxies {
		fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+p)
	}
	return b.String()
}

// ReferenceTag is the tag a reference names ("" for none): v1 in
// localhost:5001/kindlab/model:v1, 2.52 in registry.k8s.io/agnhost:2.52@sha256:….
func ReferenceTag(ref string) string {
	base, _, _ := strings.Cut(ref, "@")
	last := base[strings.LastIndex(base, "/")+1:]
	if i := strings.Index(last, ":"); i >= 0 {
		return last[i+1:]
	}
	return ""
}
