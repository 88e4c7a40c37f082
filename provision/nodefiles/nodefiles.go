// Package nodefiles delivers the files a lab's nodes need (the apiserver's
// authentication config, the CRI shim's binary and systemd files) through
// the Docker engine itself, so they reach nodes on any engine, local or
// remote: a named volume per cluster, filled through the Engine API.
//
// Why not a volume in kind's extraMounts: kind v0.31.0 makes every
// hostPath that is not absolute absolute against the working directory of
// the process creating the cluster (pkg/cluster/internal/providers/docker/
// provision.go planCreation, fs.IsAbs then filepath.Abs), so a volume name
// reaches `docker run --volume` as /cwd/NAME, a bind mount of a path that
// does not exist. kind has no other way to add a volume to its nodes, and
// its Create both starts the nodes and runs kubeadm init, so files cannot
// be copied into the nodes in between either. What kind passes unchanged
// is an absolute path, and bind mounts are resolved on the engine's host:
// the volume's own directory there (its Mountpoint, e.g.
// /var/lib/docker/volumes/NAME/_data) is such a path on every engine, so
// the kind config's mounts point into it.
package nodefiles

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Labels of a node-files volume. LabelCluster is kind's own cluster label,
// so `docker volume ls --filter label=io.x-k8s.kind.cluster=NAME` shows it
// beside the nodes; LabelNodeFiles (value: the cluster) is what down
// selects on, so nothing else carrying kind's label is ever removed.
const (
	LabelCluster   = "io.x-k8s.kind.cluster"
	LabelNodeFiles = "dev.kindlab.node-files"
)

// fillPath is where the short-lived filler container mounts the volume.
const fillPath = "/kindlab-node-files"

// API is the part of the Engine API client this package uses
// (*client.Client implements it).
type API interface {
	VolumeCreate(ctx context.Context, options volume.CreateOptions) (volume.Volume, error)
	VolumeInspect(ctx context.Context, volumeID string) (volume.Volume, error)
	VolumeList(ctx context.Context, options volume.ListOptions) (volume.ListResponse, error)
	VolumeRemove(ctx context.Context, volumeID string, force bool) error
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	CopyToContainer(ctx context.Context, id, dstPath string, content io.Reader, opts container.CopyToContainerOptions) error
	ContainerRemove(ctx context.Context, id string, options container.RemoveOptions) error
}

// File is one file to put in the volume.
type File struct {
	// Name is its slash-separated path inside the volume, relative
	// (e.g. "apiserver/authentication-config.yaml").
	Name string
	// Mode is its permission bits (0o644, 0o755 for executables).
	Mode int64
	// Content is the file's bytes, unless Source names a file on this
	// machine to stream instead (the CRI shim binary, tens of MB).
	Content []byte
	Source  string
}

// Volume is a filled node-files volume.
type Volume struct {
	Name string
	// Mountpoint is the volume's directory on the engine's host, an
	// absolute path the nodes bind-mount from.
	Mountpoint string
}

// VolumeName is the cluster's node-files volume: one per cluster, so two
// labs never share files and down removes exactly its own.
func VolumeName(cluster string) string { return cluster + "-kindlab-node-files" }

// Deliver creates the cluster's volume (empty, labelled) and copies files
// into it through a container created, never started, from image (one the
// engine has: the node image), then removes that container. A volume of
// that name left by an earlier run of the same cluster is replaced. On an
// error nothing it created is left except the volume, which Remove takes.
func Deliver(ctx context.Context, api API, cluster, image string, files []File) (Volume, error) {
	name := VolumeName(cluster)
	// An old volume (a crashed up, an older kindlab) must not lend stale
	// files; the cluster does not exist yet, so nothing uses it.
	if err := api.VolumeRemove(ctx, name, true); err != nil && !errdefsNotFound(err) {
		return Volume{}, fmt.Errorf("remove the old node-files volume %s: %w", name, err)
	}
	v, err := api.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: map[string]string{
		LabelCluster:   cluster,
		LabelNodeFiles: cluster,
	}})
	if err != nil {
		return Volume{}, fmt.Errorf("create the node-files volume %s: %w", name, err)
	}
	if err := fill(ctx, api, name, image, files); err != nil {
		return Volume{}, err
	}
	if v.Mountpoint == "" {
		// Older engines fill it in on inspect only.
		if v, err = api.VolumeInspect(ctx, name); err != nil {
			return Volume{}, fmt.Errorf("inspect the node-files volume %s: %w", name, err)
		}
	}
	if !path.IsAbs(v.Mountpoint) {
		return Volume{}, fmt.Errorf("node-files volume %s: the engine reports mountpoint %q, not an absolute path on its host (driver %s); kind can only bind-mount such a path",
			name, v.Mountpoint, v.Driver)
	}
	return Volume{Name: name, Mountpoint: v.Mountpoint}, nil
}

func fill(ctx context.Context, api API, vol, image string, files []File) (err error) {
	resp, err := api.ContainerCreate(ctx,
		&container.Config{Image: image, Entrypoint: []string{"/bin/true"}, Labels: map[string]string{LabelNodeFiles: "filler"}},
		&container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: vol, Target: fillPath}}},
		nil, nil, "")
	if err != nil {
		return fmt.Errorf("create a container from %s to fill the node-files volume %s: %w", image, vol, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if rerr := api.ContainerRemove(rctx, resp.ID, container.RemoveOptions{Force: true}); rerr != nil && err == nil {
			err = fmt.Errorf("remove the container that filled the node-files volume %s: %w", vol, rerr)
		}
	}()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(pw, files)) }()
	if err := api.CopyToContainer(ctx, resp.ID, fillPath, pr, container.CopyToContainerOptions{}); err != nil {
		pr.CloseWithError(err)
		return fmt.Errorf("copy the node files into volume %s: %w", vol, err)
	}
	return nil
}

// writeTar writes files with their parent directories (0755, root-owned:
// the nodes' systemd refuses a unit in a directory others can write).
func writeTar(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	now := time.Now()
	dirs := map[string]bool{}
	for _, f := range files {
		name := path.Clean(f.Name)
		if path.IsAbs(name) || name == "." || strings.HasPrefix(name, "../") || name == ".." {
			return fmt.Errorf("node file %q: not a relative path inside the volume", f.Name)
		}
		var parents []string
		for d := path.Dir(name); d != "." && !dirs[d]; d = path.Dir(d) {
			parents = append(parents, d)
			dirs[d] = true
		}
		for i := len(parents) - 1; i >= 0; i-- {
			if err := tw.WriteHeader(&tar.Header{Name: parents[i] + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: now}); err != nil {
				return err
			}
		}
		if err := writeFile(tw, name, f, now); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeFile(tw *tar.Writer, name string, f File, now time.Time) error {
	mode := f.Mode
	if mode == 0 {
		mode = 0o644
	}
	if f.Source == "" {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(f.Content)), ModTime: now}); err != nil {
			return err
		}
		_, err := tw.Write(f.Content)
		return err
	}
	src, err := os.Open(f.Source)
	if err != nil {
		return fmt.Errorf("node file %s: %w", name, err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return fmt.Errorf("node file %s: %w", name, err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: st.Size(), ModTime: now}); err != nil {
		return err
	}
	// Exactly Size bytes: a file growing meanwhile must not break the tar.
	if n, err := io.CopyN(tw, src, st.Size()); err != nil {
		return fmt.Errorf("node file %s from %s: %d of %d bytes: %w", name, f.Source, n, st.Size(), err)
	}
	return nil
}

// Remove deletes every node-files volume of the cluster and returns their
// names. Call it once the nodes are gone: they bind-mount the volume's
// directory, which the engine does not count as a use.
func Remove(ctx context.Context, api API, cluster string) ([]string, error) {
	list, err := api.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelNodeFiles+"="+cluster))})
	if err != nil {
		return nil, fmt.Errorf("list the node-files volumes of %s: %w", cluster, err)
	}
	var removed []string
	for _, v := range list.Volumes {
		if err := api.VolumeRemove(ctx, v.Name, true); err != nil && !errdefsNotFound(err) {
			return removed, fmt.Errorf("remove the node-files volume %s: %w", v.Name, err)
		}
		removed = append(removed, v.Name)
	}
	return removed, nil
}

func errdefsNotFound(err error) bool { return errdefs.IsNotFound(err) }
