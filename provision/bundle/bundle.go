// Package bundle makes and replays reproducible bug reports: one tar.gz that
// holds a running lab's every pin (node image, kind and kindlab versions,
// workload images, artifact digests), the lab files themselves, the rendered
// kind config, host facts, the last check results, kind's logs and the lab's
// objects, with secrets redacted. Replaying it recreates the same lab from
// the bundle alone through the normal up pipeline and compares the checks.
package bundle

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	kindversion "sigs.k8s.io/kind/pkg/cmd/kind/version"

	"github.com/kindlab/kindlab/provision/internal/text"
	"github.com/kindlab/kindlab/provision/lab"
)

// FormatVersion is the bundle layout this kindlab writes, and the newest it
// reads: a newer layout may put things where this one does not look, so it
// is refused rather than half-understood.
const FormatVersion = 1

// Where things are inside a bundle.
const (
	ManifestFile   = "bundle.json"
	ChecksFile     = "checks.json"
	KindConfigFile = "kind-config.yaml"
	PlanFile       = "plan.json"
	HostFile       = "host.json"
	LabDir         = "lab"
	FilesDir       = "files"
	ObjectsDir     = "objects"
	LogsDir        = "logs"
)

// ErrBadBundle is wrapped by every error about a bundle file that cannot be
// used: not a bundle, corrupt, truncated, or from a newer kindlab.
var ErrBadBundle = errors.New("bad bundle")

// Manifest is bundle.json, the first entry of every bundle.
type Manifest struct {
	FormatVersion int       `json:"formatVersion"`
	CreatedAt     time.Time `json:"createdAt"`
	// Cluster is the kind cluster the bundle was made from.
	Cluster string  `json:"cluster"`
	Lab     LabInfo `json:"lab"`
	// Run is what replay hands to up, so the lab runs as it did.
	Run  RunSettings `json:"run"`
	Pins Pins        `json:"pins"`
	// ChecksSavedAt is when the recorded check results were taken; nil when
	// the cluster had none.
	ChecksSavedAt *time.Time `json:"checksSavedAt,omitempty"`
	// Redactions say what was replaced, where, so a reader knows a value is
	// missing on purpose.
	Redactions []Redaction `json:"redactions,omitempty"`
	// Problems are parts that could not be collected (a broken cluster is
	// exactly when a bundle is made, so they do not stop it).
	Problems []string    `json:"problems,omitempty"`
	Files    []FileEntry `json:"files"`
}

// LabInfo says which lab the bundle carries.
type LabInfo struct {
	Name string `json:"name"`
	// Source is where the lab file was on the machine that made the bundle.
	Source string `json:"source"`
	// Files are the lab files inside the bundle, included labs first.
	Files []string `json:"files"`
}

// RunSettings are the settings the lab ran with beyond its files.
type RunSettings struct {
	NodeImage      string            `json:"nodeImage"`
	RegistryPort   int               `json:"registryPort,omitempty"`
	ImageOverrides map[string]string `json:"imageOverrides,omitempty"`
	// RegistryImage is the image the shared registry ran from, used when
	// replay has to create the registry.
	RegistryImage string `json:"registryImage,omitempty"`
}

// Pins are the versions and digests that make a lab what it is.
type Pins struct {
	Kindlab    string `json:"kindlab"`
	Kind       string `json:"kind"`
	Kubernetes string `json:"kubernetes,omitempty"`
	NodeImage  string `json:"nodeImage"`
	// NodeImageID is the image's ID in the Docker engine: the content pin
	// for node images named by tag only, as offline builds are.
	NodeImageID          string   `json:"nodeImageID,omitempty"`
	NodeImageRepoDigests []string `json:"nodeImageRepoDigests,omitempty"`
	// NodeImageIDs are the engine's image IDs of every node image the
	// nodes ran, keyed by reference: NodeImage's and each
	// spec.nodes[].image's (a lab may give a node its own image).
	NodeImageIDs    map[string]string `json:"nodeImageIDs,omitempty"`
	Images          []lab.Image       `json:"images,omitempty"`
	Artifacts       []ArtifactPin     `json:"artifacts,omitempty"`
	RegistryImage   string            `json:"registryImage,omitempty"`
	RegistryImageID string            `json:"registryImageID,omitempty"`
	// CRIShim says that the nodes ran kindlab's CRI shim (the lab's
	// spec.containerRuntime.imageVolumeReadOnlyShim): its unit, endpoint and
	// the kindlab it ran; "" when they did not. A replay renders the lab
	// from the bundle's files, so it runs the shim exactly when this is set,
	// and shows this pin side by side.
	CRIShim string `json:"criShim,omitempty"`
}

// ArtifactPin is one artifact's digest: as built from the lab's files (what
// replay pushes), and as the registry served it when the bundle was made.
type ArtifactPin struct {
	Name           string `json:"name"`
	Reference      string `json:"reference"`
	Digest         string `json:"digest"`
	RegistryDigest string `json:"registryDigest,omitempty"`
}

// FileEntry is one file of the bundle, with what verifies it.
type FileEntry struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	// Link is a symlink's target (artifact directories may hold symlinks,
	// and they are part of the artifact's digest).
	Link string `json:"link,omitempty"`
	// Dir is a directory of the lab tree: an empty one still counts in an
	// artifact's digest.
	Dir bool `json:"dir,omitempty"`
}

// Redaction is what was replaced in one file.
type Redaction struct {
	File  string `json:"file"`
	What  string `json:"what"`
	Count int    `json:"count"`
}

// Versions are the versions of the running tools.
type Versions struct {
	Kindlab string
	Kind    string
}

// KindVersion is the version of sigs.k8s.io/kind this binary is built with,
// as go.mod pins it.
func KindVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path != "sigs.k8s.io/kind" {
				continue
			}
			if d.Replace != nil && d.Replace.Version != "" {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	// Without module information (a GOPATH build) kind's own constant is
	// what is left.
	return "v" + strings.TrimPrefix(kindversion.Version(), "v")
}

// PinValue is one pin by name, as Flat lists them.
type PinValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Flat lists the pins by name in a stable order, so two sets compare line
// by line.
func (p Pins) Flat() []PinValue {
	out := []PinValue{
		{"kindlab", p.Kindlab},
		{"kind", p.Kind},
		{"kubernetes", p.Kubernetes},
		{"node-image", p.NodeImage},
		{"node-image-id", p.NodeImageID},
	}
	images := append([]lab.Image(nil), p.Images...)
	sort.Slice(images, func(i, j int) bool { return images[i].Name < images[j].Name })
	for _, img := range images {
		out = append(out, PinValue{"image/" + img.Name, img.Reference})
	}
	arts := append([]ArtifactPin(nil), p.Artifacts...)
	sort.Slice(arts, func(i, j int) bool { return arts[i].Name < arts[j].Name })
	for _, a := range arts {
		out = append(out, PinValue{"artifact/" + a.Name, a.Reference + "@" + a.Digest})
	}
	if p.RegistryImage != "" || p.RegistryImageID != "" {
		out = append(out, PinValue{"registry-image", p.RegistryImage}, PinValue{"registry-image-id", p.RegistryImageID})
	}
	if p.CRIShim != "" {
		out = append(out, PinValue{"cri-shim", p.CRIShim})
	}
	return out
}

// BadBundleError is a bundle file that cannot be used; it prints as one
// line naming the file.
type BadBundleError struct {
	File string
	Msg  string
}

func (e *BadBundleError) Error() string { return e.File + ": " + e.Msg }

// Is makes errors.Is(err, ErrBadBundle) true.
func (e *BadBundleError) Is(target error) bool { return target == ErrBadBundle }

func badf(file, format string, args ...any) error {
	return &BadBundleError{File: file, Msg: text.OneLine(fmt.Sprintf(format, args...))}
}
