package registry

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/errdefs"
)

// UsersDocker is the part of the Engine API Users needs.
type UsersDocker interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	CopyFromContainer(ctx context.Context, id, srcPath string) (io.ReadCloser, container.PathStat, error)
}

// maxHostsTOML bounds what Users reads of one hosts.toml: kindlab writes
// a few hundred bytes; anything bigger is not a wiring it made.
const maxHostsTOML = 64 << 10

// Users lists, sorted, the kind clusters on the engine whose nodes are
// wired to the registry container named name (Options.Name's default when
// ""): a node counts when a hosts.toml under CertsDir sends pulls to
// http://NAME:5000, as WireNodes and Up write it. It is the one
// answer to "who still pulls from it" for `down` and `registry down`.
//
// The engine is asked, not kindlab's records: a cluster brought up with
// another KINDLAB_STATE_DIR, by another user, or by a script following
// kind's local-registry guide uses the registry just the same. Every kind
// node container counts, stopped ones too (they pull again once started),
// and the files are read through the Engine API's archive endpoint
// (`docker cp`), which needs neither a running node nor a kubeconfig. A
// node that vanishes meanwhile (a concurrent delete) is not a user; any
// other failure to read is returned, so a caller removes nothing on doubt.
func Users(ctx context.Context, d UsersDocker, name string) ([]string, error) {
	if name == "" {
		name = ContainerName
	}
	cs, err := d.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", kindClusterLabel))})
	if err != nil {
		return nil, fmt.Errorf("list kind nodes: %w", err)
	}
	want := fmt.Sprintf("http://%s:%d", name, ContainerPort)
	wired := map[string]bool{}
	for _, c := range cs {
		cluster := c.Labels[kindClusterLabel]
		if cluster == "" || wired[cluster] {
			continue
		}
		ok, err := nodeWired(ctx, d, c.ID, want)
		if err != nil {
			return nil, fmt.Errorf("read the registry wiring of kind cluster %s (node %s): %w", cluster, nodeName(c), err)
		}
		if ok {
			wired[cluster] = true
		}
	}
	out := make([]string, 0, len(wired))
	for n := range wired {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// nodeWired reads the node's CertsDir as a tar stream and reports whether
// one of its hosts.toml files names endpoint (an http://host:port URL).
func nodeWired(ctx context.Context, d UsersDocker, id, endpoint string) (bool, error) {
	rc, _, err := d.CopyFromContainer(ctx, id, CertsDir)
	if errdefs.IsNotFound(err) {
		return false, nil // no certs.d (never wired), or the node is gone
	}
	if err != nil {
		return false, fmt.Errorf("copy %s: %w", CertsDir, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read %s: %w", CertsDir, err)
		}
		if h.Typeflag != tar.TypeReg || path.Base(h.Name) != "hosts.toml" {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxHostsTOML))
		if err != nil {
			return false, fmt.Errorf("read %s: %w", h.Name, err)
		}
		// The URL is a TOML key: quoted, and either the whole host
		// ("http://kind-registry:5000") or a path on it (a mirror's
		// "http://kind-registry:5000/v2/mirror/…").
		s := string(b)
		if strings.Contains(s, `"`+endpoint+`"`) || strings.Contains(s, `"`+endpoint+`/`) {
			return true, nil
		}
	}
}

func nodeName(c container.Summary) string {
	if len(c.Names) > 0 {
		return strings.TrimPrefix(c.Names[0], "/")
	}
	return shortID(c.ID)
}
