// Package kit writes and reads offline kits: one tar file holding
// everything a lab needs to come up without a network — the node image,
// the registry image, every workload image and every artifact — as an OCI
// image layout, each image by digest, with kindlab-kit.json saying what is
// where.
//
// Saving goes through a content-addressed blob cache, so a second save of
// an unchanged lab reads nothing from Docker or a registry, and a kit whose
// content is unchanged is not rewritten. Loading verifies every blob before
// anything is loaded, then puts the node and registry images into the Docker
// engine (tagged without their digest, since only a pull records one; see
// Alias) and the rest into the local registry, under the names nodes resolve
// through their containerd mirrors (registry.MirrorRepository).
package kit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kindlab/kindlab/provision/internal/text"
)

const (
	// FormatVersion is the kit format this kindlab writes and the newest it reads.
	FormatVersion = 1
	// ManifestFile is the kit's table of contents, beside the OCI layout files.
	ManifestFile = "kindlab-kit.json"

	// Roles of the images in a kit.
	RoleNode     = "node"
	RoleRegistry = "registry"
	RoleWorkload = "workload"
	RoleArtifact = "artifact"

	// annotationRole marks each index.json entry with its role.
	annotationRole = "dev.kindlab.kit.role"
)

// Manifest is kindlab-kit.json.
type Manifest struct {
	Format int    `json:"format"`
	Lab    string `json:"lab"`
	// Platforms are the platforms the kit holds, e.g. linux/amd64.
	Platforms []string `json:"platforms"`
	Entries   []Entry  `json:"entries"`
	// Size is the bytes of every blob in the kit.
	Size int64 `json:"size"`
}

// Entry is one image of the kit.
type Entry struct {
	Role string `json:"role"`
	// Name is the lab's name for a workload image or an artifact.
	Name string `json:"name,omitempty"`
	// Reference is the image as the lab (or its overrides) names it.
	Reference string `json:"reference"`
	// Digest and MediaType are of the manifest or index the kit holds
	// for it (index.json points at the same).
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	// ImageIDs are, for images loaded into Docker, the config digest of
	// each platform's image (what `docker image inspect` calls Id).
	ImageIDs map[string]string `json:"imageIDs,omitempty"`
	// Size is the bytes of its manifests, configs and layers.
	Size int64 `json:"size"`
}

// Docker reports whether the entry is loaded into the Docker engine rather
// than the registry.
func (e Entry) Docker() bool { return e.Role == RoleNode || e.Role == RoleRegistry }

// ErrBadKit is wrapped by every *Error (errors.Is): a kit file that cannot
// be used as given — missing or unreadable, not a kit, truncated, damaged
// or tampered with, of a newer format, of another lab than --lab, or for
// another platform than the engine. It is bad input, as bundle.ErrBadBundle
// is: the CLI exits 2 for both.
var ErrBadKit = errors.New("bad kit")

// Error is a kit problem a user must fix; it prints as one line naming the
// kit file.
type Error struct {
	File string
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("kit %s: %s", e.File, e.Msg) }

// Is makes errors.Is(err, ErrBadKit) true.
func (e *Error) Is(target error) bool { return target == ErrBadKit }

func kitErr(file, format string, args ...any) error {
	return &Error{File: file, Msg: text.OneLine(fmt.Sprintf(format, args...))}
}

// ParsePlatforms parses "linux/amd64,linux/arm64" (what --platform takes).
func ParsePlatforms(list []string) ([]v1.Platform, error) {
	var out []v1.Platform
	seen := map[string]bool{}
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			p, err := v1.ParsePlatform(s)
			if err != nil || p.OS == "" || p.Architecture == "" || strings.Count(s, "/") > 2 {
				return nil, fmt.Errorf("--platform %q: want os/arch[/variant], e.g. linux/amd64", s)
			}
			if !seen[p.String()] {
				seen[p.String()] = true
				out = append(out, *p)
			}
		}
	}
	return out, nil
}

// CacheDir is where kits keep their blob cache: $KINDLAB_CACHE/kit, or
// the user's cache directory.
func CacheDir() (string, error) {
	if d := os.Getenv("KINDLAB_CACHE"); d != "" {
		return filepath.Join(d, "kit"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("locate the kindlab cache: %w (set KINDLAB_CACHE)", err)
	}
	return filepath.Join(d, "kindlab", "kit"), nil
}

// dockerArch maps `docker info` architectures to OCI ones.
func dockerArch(a string) string {
	switch a {
	case "x86_64":
		return "amd64"
	case "aarch64":
		return "arm64"
	case "armv7l":
		return "arm"
	}
	return a
}

func platformMatches(want []v1.Platform, got v1.Platform) bool {
	for _, w := range want {
		if w.OS == got.OS && w.Architecture == got.Architecture && (w.Variant == "" || w.Variant == got.Variant) {
			return true
		}
	}
	return false
}

func platformStrings(ps []v1.Platform) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
