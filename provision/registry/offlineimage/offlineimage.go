// Package offlineimage builds a registry image without pulling anything:
// Debian's distribution binary (package docker-registry, the same code as
// the registry:2 image), the shared libraries it links, and a config.yml
// equivalent to registry:2's, written with go-containerregistry and loaded
// into Docker with the Engine API.
//
// It is a package, not test tooling, because machines without a reachable
// container registry (CI here, an offline kit) need it at run time too:
// `kindlab registry build-image` and the offline kit call it, and tests
// load it before starting the registry container.
package offlineimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// Repository holds offline registry images; registry.Ensure builds any
	// tag of it that is missing instead of pulling.
	Repository = "kindlab.local/registry"
	// Tag is the image the offline registry is loaded as.
	Tag = Repository + ":2.8-debian"
	// DefaultBinary is where Debian's docker-registry package puts it.
	DefaultBinary = "/usr/bin/docker-registry"
	// LabelSource records the binary's sha256, so a changed binary rebuilds.
	LabelSource = "dev.kindlab.registry.source-sha256"
)

// Config is registry:2's /etc/docker/registry/config.yml, plus deletes
// enabled so `kindlab` can garbage-collect later.
const Config = `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`

// libDirs are searched for DT_NEEDED libraries, as the dynamic loader would
// on Debian.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/lib", "/usr/lib"}

// Build returns the registry image for the binary at bin ("" means
// DefaultBinary).
func Build(bin string) (v1.Image, error) {
	if bin == "" {
		bin = DefaultBinary
	}
	files, err := closure(bin)
	if err != nil {
		return nil, err
	}
	sum, err := fileSHA256(bin)
	if err != nil {
		return nil, err
	}
	layerTar, err := rootfs(bin, files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: time.Unix(0, 0).UTC()}, CreatedBy: "kindlab offlineimage: " + bin,
	}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = []string{"/bin/registry", "serve", "/etc/docker/registry/config.yml"}
	cf.Config.ExposedPorts = map[string]struct{}{"5000/tcp": {}}
	cf.Config.Volumes = map[string]struct{}{"/var/lib/registry": {}}
	cf.Config.Labels = map[string]string{LabelSource: sum}
	return mutate.ConfigFile(img, cf)
}

// closure lists the ELF interpreter and every shared library bin needs,
// as paths on this machine, by reading the ELF headers (no ldd exec).
func closure(bin string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	var visit func(file string) error
	visit = func(file string) error {
		f, err := elf.Open(file)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s not found: install Debian's docker-registry package (apt-get install docker-registry)", file)
			}
			return fmt.Errorf("read %s: %w", file, err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type != elf.PT_INTERP {
				continue
			}
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return fmt.Errorf("read interpreter of %s: %w", file, err)
			}
			interp := strings.TrimRight(string(b), "\x00")
			if !seen[interp] {
				seen[interp] = true
				out = append(out, interp)
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("read libraries of %s: %w", file, err)
		}
		for _, lib := range libs {
			p, err := findLib(lib)
			if err != nil {
				return fmt.Errorf("%s needs %s: %w", file, lib, err)
			}
			if seen[p] {
				continue
			}
			seen[p] = true
			out = append(out, p)
			if err := visit(p); err != nil {
				return err
			}
		}
		return nil
	}
	if err := visit(bin); err != nil {
		return nil, err
	}
	sort.Strings(out)
	return out, nil
}

func findLib(lib string) (string, error) {
	for _, d := range libDirs {
		p := filepath.Join(d, lib)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %v", libDirs)
}

// rootfs writes the image's only layer: files at their paths on this
// machine (symlinks resolved to content), the binary at /bin/registry.
func rootfs(bin string, libs []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	addDirs := func(p string) error {
		var parents []string
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return err
			}
		}
		return nil
	}
	add := func(dst string, mode int64, content []byte) error {
		if err := addDirs(dst); err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dst, "/"), Mode: mode, Size: int64(len(content)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(content)
		return err
	}
	for _, d := range []struct {
		name string
		mode int64
	}{{"tmp/", 0o1777}, {"var/", 0o755}, {"var/lib/", 0o755}, {"var/lib/registry/", 0o755}} {
		if dirs["/"+strings.TrimSuffix(d.name, "/")] {
			continue
		}
		dirs["/"+strings.TrimSuffix(d.name, "/")] = true
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", bin, err)
	}
	if err := add("/bin/registry", 0o755, b); err != nil {
		return nil, err
	}
	for _, l := range libs {
		b, err := os.ReadFile(l) // follows symlinks: the image gets the content
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", l, err)
		}
		if err := add(l, 0o755, b); err != nil {
			return nil, err
		}
	}
	if err := add("/etc/docker/registry/config.yml", 0o644, []byte(Config)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s not found: install Debian's docker-registry package (apt-get install docker-registry)", p)
		}
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Docker is the part of the Engine API loading needs.
type Docker interface {
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageLoad(ctx context.Context, input io.Reader, opts ...client.ImageLoadOption) (image.LoadResponse, error)
}

// Load writes img as a docker-save tarball straight into the engine's
// image load endpoint, tagged tag.
func Load(ctx context.Context, d Docker, img v1.Image, tag string) error {
	t, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("image tag %q: %w", tag, err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarball.Write(t, img, pw)) }()
	resp, err := d.ImageLoad(ctx, pr)
	if err != nil {
		pr.CloseWithError(err)
		return fmt.Errorf("docker load %s: %w", tag, err)
	}
	defer resp.Body.Close()
	// The engine reports failures inside the JSON stream, not as a status.
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("docker load %s: read response: %w", tag, err)
		}
		if msg.Error != "" {
			return fmt.Errorf("docker load %s: %s", tag, msg.Error)
		}
	}
	return nil
}

// Ensure makes tag present in the engine, built from bin ("" means
// DefaultBinary), rebuilding when the binary changed. It returns the tag,
// ready for registry.Options.Image.
func Ensure(ctx context.Context, d Docker, bin, tag string) (string, error) {
	if bin == "" {
		bin = DefaultBinary
	}
	if tag == "" {
		tag = Tag
	}
	sum, err := fileSHA256(bin)
	if err != nil {
		return "", err
	}
	got, err := d.ImageInspect(ctx, tag)
	switch {
	case err == nil && got.Config != nil && got.Config.Labels[LabelSource] == sum:
		return tag, nil
	case err != nil && !errdefs.IsNotFound(err):
		return "", fmt.Errorf("inspect image %s: %w", tag, err)
	}
	img, err := Build(bin)
	if err != nil {
		return "", err
	}
	if err := Load(ctx, d, img, tag); err != nil {
		return "", err
	}
	return tag, nil
}
