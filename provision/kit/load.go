package kit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/state"
)

// LoadOptions say where a kit goes.
type LoadOptions struct {
	File string
	// Lab, if set, must be the kit's lab.
	Lab string
	// Registry is the registry to start and fill (its Image comes from
	// the kit).
	Registry registry.Options
	// Docker is the engine (the command's engine.Engine client); required.
	Docker Docker
	// Store keeps the aliases of images loaded into Docker.
	Store    state.Store
	Progress func(string)
}

// LoadResult is what a load did.
type LoadResult struct {
	File   string   `json:"file"`
	Lab    string   `json:"lab"`
	Images []Loaded `json:"images"`
	// BytesVerified is every blob byte hashed; BytesLoaded what went into
	// the engine and the registry (blobs they already had are skipped).
	BytesVerified int64 `json:"bytesVerified"`
	BytesLoaded   int64 `json:"bytesLoaded"`
	// Warnings say what the kit was trusted for without proof.
	Warnings []string `json:"warnings,omitempty"`
}

// Loaded is one image of the kit, loaded.
type Loaded struct {
	Role      string `json:"role"`
	Name      string `json:"name,omitempty"`
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	// Into is the Docker tag or registry reference it is available as.
	Into string `json:"into"`
	// AlreadyThere says nothing had to be loaded.
	AlreadyThere bool `json:"alreadyThere,omitempty"`
}

// walked is an entry of the kit with what it carries.
type walked struct {
	entry     Entry
	root      v1.Descriptor
	manifests []v1.Descriptor
	blobs     []v1.Descriptor
	// images are the carried image manifests, by platform.
	images map[string]*v1.Manifest
	// seen holds the digests already walked.
	seen map[v1.Hash]bool
}

// Open reads a kit's table of contents, checks its format and that every
// blob its images need is in it, without verifying content.
func Open(file string) (*Manifest, error) {
	k, err := openKit(file)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	man, _, err := k.walk()
	return man, err
}

// Load verifies a whole kit, then loads it: node and registry images into
// the Docker engine, the rest into the local registry.
func Load(ctx context.Context, opts LoadOptions) (*LoadResult, error) {
	progress := opts.Progress
	if progress == nil {
		progress = func(string) {}
	}
	if opts.Store.Root == "" {
		st, err := state.Default()
		if err != nil {
			return nil, err
		}
		opts.Store = st
	}
	k, err := openKit(opts.File)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	man, ws, err := k.walk()
	if err != nil {
		return nil, err
	}
	if opts.Lab != "" && man.Lab != opts.Lab {
		return nil, kitErr(opts.File, "holds lab %q, not %q: make one with `kindlab kit save %s`", man.Lab, opts.Lab, opts.Lab)
	}
	if opts.Docker == nil {
		return nil, errors.New("kit load: no Docker engine given (LoadOptions.Docker is nil)")
	}
	engine, err := enginePlatform(ctx, opts.Docker)
	if err != nil {
		return nil, err
	}
	for _, w := range ws {
		if w.entry.Docker() && w.entry.ImageIDs[engine.String()] == "" {
			if slices.Contains(man.Platforms, engine.String()) {
				// Its manifest says it was saved for this platform: it was
				// edited or damaged, and saving again would not help.
				return nil, kitErr(opts.File, "is saved for %s but has no image ID of its %s image %s for it: the kit was damaged or edited; get it again",
					engine.String(), w.entry.Role, w.entry.Reference)
			}
			return nil, kitErr(opts.File, "holds the %s image %s for %v, and this Docker engine is %s: save the kit with --platform %s",
				w.entry.Role, w.entry.Reference, man.Platforms, engine.String(), engine.String())
		}
	}
	res := &LoadResult{File: opts.File, Lab: man.Lab}

	// Everything is verified before anything is loaded: a tampered or
	// damaged kit leaves the engine and the registry as they were.
	progress(fmt.Sprintf("verifying %d MiB", man.Size>>20))
	// walk has verified the manifests already (it had to read them).
	verified := map[v1.Hash]bool{}
	for _, w := range ws {
		for _, d := range w.manifests {
			if !verified[d.Digest] {
				verified[d.Digest] = true
				res.BytesVerified += d.Size
			}
		}
	}
	for _, w := range ws {
		for _, d := range w.blobs {
			if verified[d.Digest] {
				continue
			}
			if err := k.verify(d); err != nil {
				return nil, kitErr(opts.File, "%s (%s %s): %v: the kit was damaged or tampered with; get it again", d.Digest, w.entry.Role, w.entry.Reference, err)
			}
			verified[d.Digest] = true
			res.BytesVerified += d.Size
		}
	}

	// The rest of the kit is checked before the engine is touched too: a
	// kit refused after its Docker images were loaded would have changed
	// the engine.
	hasRegistry, forRegistry := false, 0
	for _, w := range ws {
		switch {
		case w.entry.Role == RoleRegistry:
			hasRegistry = true
		case !w.entry.Docker():
			if _, err := registry.LocalRepository(w.entry.Reference); err != nil {
				return nil, kitErr(opts.File, "%v", err)
			}
			forRegistry++
		}
	}
	if forRegistry > 0 && !hasRegistry {
		return nil, kitErr(opts.File, "has images for the registry but no registry image")
	}

	registryImage := ""
	for _, w := range ws {
		if !w.entry.Docker() {
			continue
		}
		tag, already, err := k.loadIntoDocker(ctx, opts.Docker, w, engine)
		if err != nil {
			return nil, err
		}
		if !already {
			res.BytesLoaded += w.entry.Size
		}
		if tag != w.entry.Reference {
			// The engine keeps no manifest, so nothing here can prove that
			// this image is what the digest pins: the kit says so. Say that.
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s is used for %s on the kit's word: a kit cannot prove a Docker image is the one a digest pins (the engine keeps no manifest); load kits only from people you trust", tag, w.entry.Reference))
			progress("warning: " + res.Warnings[len(res.Warnings)-1])
			if err := saveAlias(ctx, opts.Store, Alias{Reference: w.entry.Reference, Tag: tag, ImageID: w.entry.ImageIDs[engine.String()]}); err != nil {
				return nil, fmt.Errorf("record %s as %s: %w", w.entry.Reference, tag, err)
			}
		}
		if w.entry.Role == RoleRegistry {
			registryImage = tag
		}
		res.Images = append(res.Images, Loaded{Role: w.entry.Role, Reference: w.entry.Reference, Digest: w.entry.Digest, Into: tag, AlreadyThere: already})
	}

	var imports []registry.ImportImage
	for _, w := range ws {
		if w.entry.Docker() {
			continue
		}
		repo, _ := registry.LocalRepository(w.entry.Reference) // checked above
		im := registry.ImportImage{Repository: repo, Tag: registry.ReferenceTag(w.entry.Reference), Root: w.root.Digest, Manifests: w.manifests, Blobs: w.blobs}
		imports = append(imports, im)
		into, _ := registry.LocalReference(w.entry.Reference, opts.Registry.HostPort)
		res.Images = append(res.Images, Loaded{Role: w.entry.Role, Name: w.entry.Name, Reference: w.entry.Reference, Digest: w.entry.Digest, Into: into})
	}
	if len(imports) == 0 {
		return res, nil
	}
	ro := opts.Registry
	ro.Image, ro.Docker = registryImage, opts.Docker
	progress("starting the local registry")
	if _, err := registry.Ensure(ctx, ro); err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("importing %d image(s) into the registry", len(imports)))
	sent, err := registry.Import(ctx, ro, opts.Docker, man.Lab, imports, func(d v1.Descriptor) (io.Reader, error) {
		r, ok := k.open(blobPath(d.Digest))
		if !ok {
			return nil, fmt.Errorf("blob %s vanished from the kit", d.Digest)
		}
		return newVerifyingReader(r, d.Digest, d.Size), nil
	})
	res.BytesLoaded += sent
	if err != nil {
		return nil, err
	}
	return res, nil
}

// walk reads the kit's metadata and every manifest it carries, and checks
// that the blobs they need are present with the right sizes.
func (k *kitFile) walk() (*Manifest, []walked, error) {
	layout, err := k.readSmall("oci-layout")
	if err != nil {
		return nil, nil, err
	}
	if !strings.Contains(string(layout), `"imageLayoutVersion"`) {
		return nil, nil, kitErr(k.name, "oci-layout is not an OCI image layout marker")
	}
	b, err := k.readSmall(ManifestFile)
	if err != nil {
		return nil, nil, err
	}
	var man Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		return nil, nil, kitErr(k.name, "%s: %v", ManifestFile, err)
	}
	if man.Format > FormatVersion || man.Format < 1 {
		return nil, nil, kitErr(k.name, "format %d; this kindlab reads kit format %d: use the kindlab that wrote it, or a newer one", man.Format, FormatVersion)
	}
	if err := lab.ValidateName(man.Lab); err != nil {
		return nil, nil, kitErr(k.name, "%s: lab: %v", ManifestFile, err)
	}
	b, err = k.readSmall("index.json")
	if err != nil {
		return nil, nil, err
	}
	idx, err := v1.ParseIndexManifest(strings.NewReader(string(b)))
	if err != nil {
		return nil, nil, kitErr(k.name, "index.json: %v", err)
	}
	if len(idx.Manifests) != len(man.Entries) {
		return nil, nil, kitErr(k.name, "index.json lists %d images, %s %d", len(idx.Manifests), ManifestFile, len(man.Entries))
	}
	var out []walked
	for i, e := range man.Entries {
		root := idx.Manifests[i]
		if root.Digest.String() != e.Digest || root.Annotations["org.opencontainers.image.ref.name"] != e.Reference {
			return nil, nil, kitErr(k.name, "index.json entry %d (%s) does not match %s (%s %s)", i, root.Digest, ManifestFile, e.Reference, e.Digest)
		}
		w := walked{entry: e, root: root, images: map[string]*v1.Manifest{}}
		if err := k.walkManifest(&w, root); err != nil {
			return nil, nil, err
		}
		out = append(out, w)
	}
	return &man, out, nil
}

// maxManifestSize is the most a manifest or index may be: what registries
// accept (the OCI distribution spec's 4 MiB).
const maxManifestSize = 4 << 20

func (k *kitFile) walkManifest(w *walked, d v1.Descriptor) error {
	// Each manifest and blob is taken once: a kit that lists one manifest a
	// thousand times in an index, each listing one layer a thousand times,
	// must not cost a million walks.
	if w.seen == nil {
		w.seen = map[v1.Hash]bool{}
	}
	if w.seen[d.Digest] {
		return nil
	}
	w.seen[d.Digest] = true
	if d.Size > maxManifestSize {
		return kitErr(k.name, "manifest %s of %s is %d bytes, more than a manifest may be (%d)", d.Digest, w.entry.Reference, d.Size, maxManifestSize)
	}
	s, ok := k.entries[blobPath(d.Digest)]
	if !ok {
		return kitErr(k.name, "is missing manifest %s of %s: the kit is incomplete; get it again", d.Digest, w.entry.Reference)
	}
	if s.size != d.Size {
		return kitErr(k.name, "manifest %s of %s is %d bytes, want %d: the kit was damaged", d.Digest, w.entry.Reference, s.size, d.Size)
	}
	if err := k.verify(d); err != nil {
		return kitErr(k.name, "manifest %s of %s: %v: the kit was damaged or tampered with", d.Digest, w.entry.Reference, err)
	}
	w.manifests = append(w.manifests, d)
	r, _ := k.open(blobPath(d.Digest))
	if d.MediaType.IsIndex() {
		im, err := v1.ParseIndexManifest(r)
		if err != nil {
			return kitErr(k.name, "index %s of %s: %v", d.Digest, w.entry.Reference, err)
		}
		carried := 0
		for _, c := range im.Manifests {
			if _, ok := k.entries[blobPath(c.Digest)]; !ok || !c.MediaType.IsImage() {
				continue // a platform the kit does not carry
			}
			carried++
			if err := k.walkManifest(w, c); err != nil {
				return err
			}
		}
		if carried == 0 {
			return kitErr(k.name, "carries no image of index %s (%s)", d.Digest, w.entry.Reference)
		}
		return nil
	}
	m, err := v1.ParseManifest(r)
	if err != nil {
		return kitErr(k.name, "manifest %s of %s: %v", d.Digest, w.entry.Reference, err)
	}
	for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		s, ok := k.entries[blobPath(b.Digest)]
		if !ok {
			return kitErr(k.name, "is missing blob %s of %s: the kit is incomplete; get it again", b.Digest, w.entry.Reference)
		}
		if s.size != b.Size {
			return kitErr(k.name, "blob %s of %s is %d bytes, want %d: the kit was damaged", b.Digest, w.entry.Reference, s.size, b.Size)
		}
		if !w.seen[b.Digest] {
			w.seen[b.Digest] = true
			w.blobs = append(w.blobs, b)
		}
	}
	p := "unknown"
	if d.Platform != nil {
		p = d.Platform.String()
	} else if w.entry.Docker() {
		for plat, id := range w.entry.ImageIDs {
			if id == m.Config.Digest.String() {
				p = plat
			}
		}
	}
	w.images[p] = m
	return nil
}

func (k *kitFile) verify(d v1.Descriptor) error {
	r, ok := k.open(blobPath(d.Digest))
	if !ok {
		return errors.New("missing")
	}
	_, err := io.Copy(io.Discard, newVerifyingReader(r, d.Digest, d.Size))
	return err
}

// loadIntoDocker loads the engine platform's image of a node or registry
// entry and checks the engine then has exactly that image under the tag.
func (k *kitFile) loadIntoDocker(ctx context.Context, d Docker, w walked, engine v1.Platform) (string, bool, error) {
	want := w.entry.ImageIDs[engine.String()]
	m := w.images[engine.String()]
	if m == nil {
		return "", false, kitErr(k.name, "carries no %s image of %s", engine.String(), w.entry.Reference)
	}
	root, _ := v1.NewHash(w.entry.Digest)
	tag := engineImageTag(w.entry.Reference, root)
	if ins, err := d.ImageInspect(ctx, w.entry.Reference); err == nil && ins.ID == want {
		return w.entry.Reference, true, nil
	}
	if ins, err := d.ImageInspect(ctx, tag); err == nil {
		if ins.ID == want {
			return tag, true, nil
		}
		// The tag names another image in this engine (the user's own
		// build, or any image a kit chose to name): a kit never moves a
		// tag. Its image gets a tag of its own, which the caller records
		// as an alias, as for a reference pinned by digest alone.
		tag = kitImageTag(w.entry.Reference, root)
		if ins, err := d.ImageInspect(ctx, tag); err == nil && ins.ID == want {
			return tag, true, nil
		}
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeDockerArchive(pw, tag, m, func(b v1.Descriptor) (io.Reader, error) {
			r, ok := k.open(blobPath(b.Digest))
			if !ok {
				return nil, fmt.Errorf("blob %s vanished from the kit", b.Digest)
			}
			return newVerifyingReader(r, b.Digest, b.Size), nil
		}))
	}()
	resp, err := d.ImageLoad(ctx, pr)
	if err != nil {
		pr.CloseWithError(err)
		return "", false, fmt.Errorf("docker load %s: %w", tag, err)
	}
	defer resp.Body.Close()
	if err := loadStreamError(resp.Body); err != nil {
		return "", false, fmt.Errorf("docker load %s: %w", tag, err)
	}
	ins, err := d.ImageInspect(ctx, tag)
	if err != nil {
		return "", false, fmt.Errorf("docker load %s: the engine has no such image afterwards: %w", tag, err)
	}
	if ins.ID != want {
		return "", false, fmt.Errorf("docker load %s: the engine has image %s under that tag, the kit carries %s", tag, ins.ID, want)
	}
	return tag, false, nil
}

// loadStreamError reads the engine's JSON progress stream and returns the
// first error in it.
func loadStreamError(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if json.Unmarshal(sc.Bytes(), &msg) == nil && (msg.Error != "" || msg.ErrorDetail.Message != "") {
			if msg.ErrorDetail.Message != "" {
				return errors.New(msg.ErrorDetail.Message)
			}
			return errors.New(msg.Error)
		}
	}
	return sc.Err()
}
