package registry

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ImportImage is one image (or index) to place in the registry.
type ImportImage struct {
	Repository string
	// Tag, if set, points at Root.
	Tag  string
	Root v1.Hash
	// Manifests are Root and each child manifest carried (an index may
	// name children for platforms that are not).
	Manifests []v1.Descriptor
	// Blobs are the configs and layers of the manifests carried.
	Blobs []v1.Descriptor
}

// Copier copies a tar stream into a container, as `docker cp` does.
type Copier interface {
	CopyToContainer(ctx context.Context, id, dstPath string, content io.Reader, opts container.CopyToContainerOptions) error
}

const (
	// storageRoot is distribution's filesystem driver layout under dataPath.
	storageRoot = "docker/registry/v2"
	// kitMarkers, beside it (distribution never looks there), holds one
	// file per kit imported: content no lab file can push again, so the
	// data outlives the labs (see HoldsKits).
	kitMarkers = "kindlab-kits"
)

// HoldsKits reports whether an offline kit was imported into the
// registry's data, which must then not be deleted with the last lab.
func HoldsKits(ctx context.Context, opts Options, stat interface {
	ContainerStatPath(ctx context.Context, id, path string) (container.PathStat, error)
}) bool {
	opts, err := opts.withDefaults()
	if err != nil {
		return false
	}
	_, err = stat.ContainerStatPath(ctx, opts.Name, dataPath+"/"+kitMarkers)
	return err == nil
}

// Import writes images straight into the running registry's storage, in
// distribution's filesystem layout, through the Engine API (one `docker cp`
// stream). Pushing cannot do this job: distribution 2.8 refuses an index
// whose children are not all present (MANIFEST_BLOB_UNKNOWN), and a kit
// carries an upstream index, digest unchanged, with only the platforms
// asked for. The caller verifies every blob's digest before it gets here;
// open returns a blob's content. Blobs the registry already serves for the
// repository are not sent again. kit, if set, names the offline kit the
// images come from, marking the data as holding one (HoldsKits).
func Import(ctx context.Context, opts Options, cp Copier, kit string, imgs []ImportImage, open func(v1.Descriptor) (io.Reader, error)) (int64, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return 0, err
	}
	st, c, err := inspect(ctx, opts)
	if err != nil {
		return 0, err
	}
	if !st.Running {
		return 0, fmt.Errorf("registry %s is %s: start it with `kindlab registry up`", opts.Name, st.State)
	}
	var jobs []v1.Descriptor
	queued := map[v1.Hash]bool{}
	for _, im := range imgs {
		for _, d := range append(append([]v1.Descriptor(nil), im.Manifests...), im.Blobs...) {
			if queued[d.Digest] {
				continue
			}
			queued[d.Digest] = true
			if localDaemon(opts.Docker) && blobServed(ctx, st.HostPort, im.Repository, d.Digest) {
				continue
			}
			jobs = append(jobs, d)
		}
	}
	// Counted by the writer while the engine reads: atomic, since a
	// failed copy returns before the writer has stopped.
	var sent atomic.Int64
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := func() error {
			for _, d := range jobs {
				r, err := open(d)
				if err != nil {
					return err
				}
				if err := tarFile(tw, fmt.Sprintf("%s/blobs/%s/%s/%s/data", storageRoot, d.Digest.Algorithm, d.Digest.Hex[:2], d.Digest.Hex), d.Size, r); err != nil {
					return err
				}
				sent.Add(d.Size)
			}
			for _, im := range imgs {
				repo := storageRoot + "/repositories/" + im.Repository
				for _, d := range im.Blobs {
					if err := tarLink(tw, fmt.Sprintf("%s/_layers/%s/%s/link", repo, d.Digest.Algorithm, d.Digest.Hex), d.Digest); err != nil {
						return err
					}
				}
				for _, d := range im.Manifests {
					if err := tarLink(tw, fmt.Sprintf("%s/_manifests/revisions/%s/%s/link", repo, d.Digest.Algorithm, d.Digest.Hex), d.Digest); err != nil {
						return err
					}
				}
				if im.Tag != "" {
					tag := repo + "/_manifests/tags/" + im.Tag
					if err := tarLink(tw, tag+"/current/link", im.Root); err != nil {
						return err
					}
					if err := tarLink(tw, fmt.Sprintf("%s/index/%s/%s/link", tag, im.Root.Algorithm, im.Root.Hex), im.Root); err != nil {
						return err
					}
				}
			}
			if kit != "" {
				if err := tarFile(tw, kitMarkers+"/"+kit, int64(len(kit)), strings.NewReader(kit)); err != nil {
					return err
				}
			}
			return tw.Close()
		}()
		pw.CloseWithError(err)
	}()
	if err := cp.CopyToContainer(ctx, c.ID, dataPath, pr, container.CopyToContainerOptions{}); err != nil {
		pr.CloseWithError(err)
		return sent.Load(), fmt.Errorf("import into registry %s: %w", opts.Name, err)
	}
	return sent.Load(), nil
}

func tarFile(tw *tar.Writer, name string, size int64, r io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Size: size, Mode: 0o644, Typeflag: tar.TypeReg, ModTime: time.Now()}); err != nil {
		return err
	}
	n, err := io.Copy(tw, r)
	if err == nil && n != size {
		err = fmt.Errorf("%d bytes, want %d", n, size)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func tarLink(tw *tar.Writer, name string, h v1.Hash) error {
	return tarFile(tw, name, int64(len(h.String())), strings.NewReader(h.String()))
}

// blobServed asks the registry whether it already serves a blob (or
// manifest) in a repository.
func blobServed(ctx context.Context, port int, repo string, h v1.Hash) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, fmt.Sprintf("http://127.0.0.1:%d/v2/%s/blobs/%s", port, repo, h), nil)
	if err != nil {
		return false
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TagReader reads a file out of a container, as `docker cp` does.
type TagReader interface {
	CopyFromContainer(ctx context.Context, id, srcPath string) (io.ReadCloser, container.PathStat, error)
}

// TagDigest is the digest the registry's tag ref (a reference the local
// registry serves, e.g. localhost:5001/kindlab/model:v1) points at, read
// from its storage through the Engine API (distribution's filesystem
// layout: repositories/<repo>/_manifests/tags/<tag>/current/link); "" when
// the tag does not exist. It is how a tag is read where the registry's
// port is published on another machine (a remote engine).
func TagDigest(ctx context.Context, opts Options, cp TagReader, ref string) (string, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return "", err
	}
	repo, err := LocalRepository(ref)
	if err != nil {
		return "", err
	}
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return "", err
	}
	tag, ok := r.(name.Tag)
	if !ok {
		return "", fmt.Errorf("read tag %s: not a tag reference", ref)
	}
	link := fmt.Sprintf("%s/%s/repositories/%s/_manifests/tags/%s/current/link", dataPath, storageRoot, repo, tag.TagStr())
	rc, _, err := cp.CopyFromContainer(ctx, opts.Name, link)
	if errdefs.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read tag %s in %s: %w", ref, opts.Name, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		return "", fmt.Errorf("read tag %s in %s: %w", ref, opts.Name, err)
	}
	b, err := io.ReadAll(io.LimitReader(tr, 1024))
	if err != nil {
		return "", fmt.Errorf("read tag %s in %s: %w", ref, opts.Name, err)
	}
	h, err := v1.NewHash(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("read tag %s in %s: link %q: %w", ref, opts.Name, b, err)
	}
	return h.String(), nil
}
