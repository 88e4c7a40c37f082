// Package artifact turns a directory of files into an image-shaped OCI
// artifact and pushes it to a registry.
//
// The artifact is a plain OCI image (OCI manifest, image config with os,
// architecture and rootfs.diff_ids, tar+gzip layers) because containerd 2.1+
// mounts only image-shaped objects as image volumes: an artifact with an
// empty config or a custom config media type fails to mount. The lab's
// artifact type is therefore carried only as a manifest annotation.
package artifact

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// AnnotationArtifactType is the manifest annotation that records the lab's
// artifact type. It is not the manifest's artifactType field on purpose:
// containerd refuses to mount objects that are not plain images.
const AnnotationArtifactType = "dev.kindlab.artifact.type"

// LayerMediaType is the media type of every layer: containerd unpacks
// tar+gzip layers of image-shaped artifacts.
const LayerMediaType = types.OCILayer

// epoch is every timestamp written, so the digest depends on content only.
var epoch = time.Unix(0, 0).UTC()

// gzipLevel is fixed because the digest depends on it. BestSpeed because
// pushes go to a registry on loopback, where CPU (2 cores on CI) is scarcer
// than bytes, and model-like payloads hardly compress anyway.
const gzipLevel = gzip.BestSpeed

// BuildOptions shape the artifact.
type BuildOptions struct {
	// ArtifactType is recorded in the AnnotationArtifactType annotation.
	ArtifactType string
	// Annotations are added to the manifest.
	Annotations map[string]string
	// LayerPerEntry puts each top-level entry of the directory (a file or a
	// subdirectory with everything under it) in a layer of its own, in name
	// order, so a change to one entry re-pushes only its layer. Otherwise
	// the whole directory is one layer.
	LayerPerEntry bool
	// OS and Architecture go in the image config; they default to linux
	// and the architecture kindlab runs on, which is what the kind nodes
	// on this machine run.
	OS           string
	Architecture string
	// Jobs is how many layers are compressed at once; 0 means GOMAXPROCS.
	Jobs int
	// NoHidden refuses a directory holding a hidden entry (a name starting
	// with "."), as a lab's artifact must: a lab refers only to its own
	// files, never to dotfiles such as .ssh (lab.Origin.Resolve), and a
	// folder named by a stranger's lab file must not carry them off.
	NoHidden bool
}

// entry is one file, directory or symlink of the artifact, read once.
type entry struct {
	name   string // slash path relative to the root
	mode   fs.FileMode
	size   int64
	target string // symlink target
}

// Build reads fsys (the artifact directory) and returns the artifact as an
// image. The same files give the same digest on every machine: entries are
// sorted, timestamps are the Unix epoch, owners are 0:0 with no names,
// directories are 0755, files 0644 (embedded file systems carry no
// permission bits, so the exec bit is not kept), symlinks are kept as
// symlinks and must stay inside the directory.
func Build(fsys fs.FS, opts BuildOptions) (v1.Image, error) {
	if err := validateOptions(opts); err != nil {
		return nil, err
	}
	entries, err := scan(fsys)
	if err != nil {
		return nil, err
	}
	if opts.NoHidden {
		for _, e := range entries {
			if n := path.Base(e.name); strings.HasPrefix(n, ".") {
				return nil, fmt.Errorf("%s is hidden: a lab's artifact carries only its own files, not dotfiles (move it out of the artifact's folder)", e.name)
			}
		}
	}
	if !hasContent(entries) {
		return nil, errors.New("artifact directory is empty: it needs at least one file")
	}

	groups := [][]entry{entries}
	if opts.LayerPerEntry {
		groups = groupByTopLevel(entries)
	}
	layers := make([]*memLayer, len(groups))
	errs := make([]error, len(groups))
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			layers[i], errs[i] = buildLayer(fsys, g)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		adds[i] = mutate.Addendum{
			Layer:     l,
			MediaType: LayerMediaType,
			History: v1.History{
				Created:   v1.Time{Time: epoch},
				CreatedBy: "kindlab artifact: " + strings.Join(topNames(groups[i]), ", "),
			},
		}
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, fmt.Errorf("assemble artifact: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("assemble artifact config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = opts.OS
	if cf.OS == "" {
		cf.OS = "linux"
	}
	cf.Architecture = opts.Architecture
	if cf.Architecture == "" {
		cf.Architecture = runtime.GOARCH
	}
	cf.Created = v1.Time{Time: epoch}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("assemble artifact config: %w", err)
	}
	ann := map[string]string{}
	for k, v := range opts.Annotations {
		ann[k] = v
	}
	if opts.ArtifactType != "" {
		ann[AnnotationArtifactType] = opts.ArtifactType
	}
	if len(ann) > 0 {
		img = mutate.Annotations(img, ann).(v1.Image)
	}
	return img, nil
}

func validateOptions(opts BuildOptions) error {
	if t := opts.ArtifactType; t != "" {
		typ, sub, ok := strings.Cut(t, "/")
		if !ok || typ == "" || sub == "" || strings.ContainsAny(t, " \t;") {
			return fmt.Errorf("artifact type %q: want a media type such as application/vnd.example.model.v1", t)
		}
	}
	for k := range opts.Annotations {
		if k == "" || strings.ContainsAny(k, " \t\n=") {
			return fmt.Errorf("annotation key %q: want a non-empty key without spaces or '=', such as org.opencontainers.image.title", k)
		}
	}
	return nil
}

// scan lists every entry under the root in lexical order (fs.WalkDir's
// order) and refuses what cannot be carried faithfully.
func scan(fsys fs.FS) ([]entry, error) {
	var out []entry
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read artifact directory: %w", err)
		}
		if p == "." {
			if !d.IsDir() {
				return fmt.Errorf("artifact source is not a directory")
			}
			return nil
		}
		switch t := d.Type(); {
		case t.IsDir():
			out = append(out, entry{name: p, mode: fs.ModeDir})
		case t&fs.ModeSymlink != 0:
			target, err := fs.ReadLink(fsys, p)
			if err != nil {
				return fmt.Errorf("read symlink %s: %w", p, err)
			}
			if path.IsAbs(target) || strings.HasPrefix(target, "/") {
				return fmt.Errorf("symlink %s -> %s leaves the artifact directory: only relative links inside it are allowed", p, target)
			}
			if resolved := path.Join(path.Dir(p), target); resolved == ".." || strings.HasPrefix(resolved, "../") {
				return fmt.Errorf("symlink %s -> %s leaves the artifact directory: only relative links inside it are allowed", p, target)
			}
			out = append(out, entry{name: p, mode: fs.ModeSymlink, target: target})
		case t.IsRegular():
			info, err := d.Info()
			if err != nil {
				return fmt.Errorf("stat %s: %w", p, err)
			}
			out = append(out, entry{name: p, size: info.Size()})
		default:
			return fmt.Errorf("%s is a %s: an artifact holds only files, directories and symlinks", p, t.Type().String())
		}
		return nil
	})
	return out, err
}

func hasContent(entries []entry) bool {
	for _, e := range entries {
		if !e.mode.IsDir() {
			return true
		}
	}
	return false
}

func groupByTopLevel(entries []entry) [][]entry {
	var groups [][]entry
	last := ""
	for _, e := range entries {
		top, _, _ := strings.Cut(e.name, "/")
		if len(groups) == 0 || top != last {
			groups = append(groups, nil)
			last = top
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], e)
	}
	return groups
}

func topNames(entries []entry) []string {
	var names []string
	seen := map[string]bool{}
	for _, e := range entries {
		top, _, _ := strings.Cut(e.name, "/")
		if !seen[top] {
			seen[top] = true
			names = append(names, top)
		}
	}
	sort.Strings(names)
	return names
}

// buildLayer writes the entries as a tar stream, hashing the tar (diff_id)
// and the gzip stream (digest) as they are written, so the uncompressed
// bytes are never held in memory.
func buildLayer(fsys fs.FS, entries []entry) (*memLayer, error) {
	var gz bytes.Buffer
	digest := sha256.New()
	diffID := sha256.New()
	zw, err := gzip.NewWriterLevel(io.MultiWriter(&gz, digest), gzipLevel)
	if err != nil {
		return nil, err
	}
	var uncompressed int64
	tw := tar.NewWriter(io.MultiWriter(zw, diffID, counter{&uncompressed}))
	for _, e := range entries {
		hdr := &tar.Header{
			Name:    e.name,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		switch {
		case e.mode.IsDir():
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, e.name+"/", 0o755
		case e.mode&fs.ModeSymlink != 0:
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, e.target, 0o777
		default:
			hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, e.size, 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("write %s: %w", e.name, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if err := copyFile(tw, fsys, e); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &memLayer{
		gz:     gz.Bytes(),
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(digest.Sum(nil))},
		diffID: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diffID.Sum(nil))},
		usize:  uncompressed,
	}, nil
}

func copyFile(w io.Writer, fsys fs.FS, e entry) error {
	f, err := fsys.Open(e.name)
	if err != nil {
		return fmt.Errorf("open %s: %w", e.name, err)
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, e.size+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", e.name, err)
	}
	if n != e.size {
		return fmt.Errorf("read %s: size changed while reading (%d bytes, expected %d)", e.name, n, e.size)
	}
	return nil
}

type counter struct{ n *int64 }

func (c counter) Write(p []byte) (int, error) { *c.n += int64(len(p)); return len(p), nil }

// memLayer is a layer whose compressed bytes and both hashes are known, so
// pushing it never recompresses (go-containerregistry's tarball layers
// compress once to learn the digest and again to upload).
type memLayer struct {
	gz             []byte
	digest, diffID v1.Hash
	usize          int64
}

var _ v1.Layer = (*memLayer)(nil)

func (l *memLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *memLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *memLayer) Size() (int64, error)                { return int64(len(l.gz)), nil }
func (l *memLayer) MediaType() (types.MediaType, error) { return LayerMediaType, nil }
func (l *memLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.gz)), nil
}
func (l *memLayer) Uncompressed() (io.ReadCloser, error) {
	return gzip.NewReader(bytes.NewReader(l.gz))
}
