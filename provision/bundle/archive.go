package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kindlab/kindlab/provision/internal/confine"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/regular"
)

// maxManifest bounds bundle.json: it lists files, it does not hold them.
const maxManifest = 64 << 20

// writeArchive lists every file under stage in the manifest (size and
// sha256, so a damaged bundle is refused as a whole) and writes the tar.gz,
// bundle.json first so a reader learns the format version before anything
// else. It writes beside out and renames, so a failure never leaves a
// half-written bundle under the name the user asked for.
func writeArchive(stage, out string, m *Manifest) (err error) {
	m.Files = nil
	err = filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(stage, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		switch {
		case d.IsDir():
			// Only the lab tree's directories are entries: an empty one
			// counts in an artifact's digest. Others are implied by files.
			if strings.HasPrefix(rel, LabDir+"/") {
				m.Files = append(m.Files, FileEntry{Path: rel, Dir: true})
			}
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m.Files = append(m.Files, FileEntry{Path: rel, Link: target})
		case d.Type().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			n, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			m.Files = append(m.Files, FileEntry{Path: rel, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list bundle files: %w", err)
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", ManifestFile, err)
	}
	manifest = append(manifest, '\n')

	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write bundle %s: %w", out, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	gz, _ := gzip.NewWriterLevel(tmp, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	mtime := m.CreatedAt
	hdr := func(name string, typ byte, size int64, mode int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: typ, Size: size, Mode: mode, ModTime: mtime, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(ManifestFile, tar.TypeReg, int64(len(manifest)), 0o644)); err != nil {
		return fmt.Errorf("write bundle %s: %w", out, err)
	}
	if _, err := tw.Write(manifest); err != nil {
		return fmt.Errorf("write bundle %s: %w", out, err)
	}
	for _, f := range m.Files {
		switch {
		case f.Dir:
			err = tw.WriteHeader(hdr(f.Path+"/", tar.TypeDir, 0, 0o755))
		case f.Link != "":
			h := hdr(f.Path, tar.TypeSymlink, 0, 0o777)
			h.Linkname = f.Link
			err = tw.WriteHeader(h)
		default:
			err = copyInto(tw, hdr(f.Path, tar.TypeReg, f.Size, 0o644), filepath.Join(stage, filepath.FromSlash(f.Path)))
		}
		if err != nil {
			return fmt.Errorf("write bundle %s: %s: %w", out, f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write bundle %s: %w", out, err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("write bundle %s: %w", out, err)
	}
	// CreateTemp makes the file 0600; a bundle is a file to hand on.
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write bundle %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write bundle %s: %w", out, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("write bundle %s: %w", out, err)
	}
	return nil
}

func copyInto(tw *tar.Writer, h *tar.Header, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = io.CopyN(tw, f, h.Size)
	return err
}

// Bundle is a bundle read and verified by Open.
type Bundle struct {
	// Path is the file it was read from.
	Path     string
	Manifest Manifest
	// files holds the small entries replay needs; logs and objects are
	// verified but not kept.
	files map[string][]byte
}

// File returns the content of one of the bundle's small entries (anything
// outside logs/ and objects/).
func (b *Bundle) File(name string) ([]byte, bool) {
	d, ok := b.files[name]
	return d, ok
}

func kept(name string) bool {
	return !strings.HasPrefix(name, LogsDir+"/") && !strings.HasPrefix(name, ObjectsDir+"/")
}

// Limits bound what reading a bundle may cost; see DefaultLimits.
type Limits = confine.Limits

// DefaultLimits are sized for real bundles (an all-features lab with kind's
// logs is well under 100 MiB unpacked) with room to spare: 1 GiB a file,
// 4 GiB in all unpacked, 256 MiB held in memory (the lab's files, its
// artifacts' sources included), 100,000 entries.
var DefaultLimits = Limits{File: 1 << 30, Total: 4 << 30, Held: 256 << 20, Entries: 100_000}

// OpenOption changes how Open and Walk read a bundle.
type OpenOption func(*openOptions)

type openOptions struct{ limits Limits }

// WithLimits replaces DefaultLimits; a zero field keeps its default.
func WithLimits(l Limits) OpenOption {
	return func(o *openOptions) {
		if l.File > 0 {
			o.limits.File = l.File
		}
		if l.Total > 0 {
			o.limits.Total = l.Total
		}
		if l.Held > 0 {
			o.limits.Held = l.Held
		}
		if l.Entries > 0 {
			o.limits.Entries = l.Entries
		}
	}
}

// Open reads a bundle and verifies all of it before anything is done with
// it: the format version first (a newer one is refused without reading
// further), then every entry against the sizes and digests bundle.json
// lists, and the gzip checksum at the very end. A bundle is someone else's
// file: sizes are checked against Limits before anything is allocated and
// counted as they stream, paths must be unique and inside the bundle, and
// symlinks must stay inside the lab tree they belong to, even through other
// symlinks. A truncated, damaged, altered or oversized bundle is an
// ErrBadBundle error of one line naming the file.
func Open(file string, opts ...OpenOption) (*Bundle, error) {
	b := &Bundle{Path: file, files: map[string][]byte{}}
	m, err := read(file, func(name string, data []byte) error {
		if kept(name) {
			b.files[name] = data
		}
		return nil
	}, kept, opts)
	if err != nil {
		return nil, err
	}
	b.Manifest = *m
	return b, nil
}

// Walk reads and verifies a bundle like Open and calls fn with every regular
// file in it, bundle.json first. Tests and tools use it to look at all of a
// bundle, logs included.
func Walk(file string, fn func(name string, data []byte) error, opts ...OpenOption) error {
	_, err := read(file, fn, func(string) bool { return true }, opts)
	return err
}

// read streams the archive once. want says which entries fn gets (and so
// which are held in memory); every entry is verified either way.
func read(file string, fn func(name string, data []byte) error, want func(string) bool, opts []OpenOption) (*Manifest, error) {
	o := openOptions{limits: DefaultLimits}
	for _, opt := range opts {
		opt(&o)
	}
	lim := o.limits
	f, err := regular.OpenInput(file)
	if err != nil {
		// badf names the file.
		return nil, badf(file, "cannot read it: %v (valid: a .tar.gz written by `kindlab bundle create`)", regular.Cause(err))
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, badf(file, "not a kindlab bundle: not gzip-compressed (%v); `kindlab bundle create` writes a .tar.gz", err)
	}
	// Everything decompressed is counted, tar headers and padding included:
	// a small file that inflates without end stops at the limit.
	unpacked := &confine.Counter{R: gz, Max: lim.Total, Over: func() error {
		return confine.TooLarge("the bundle unpacked", lim.Total, "--max-total-size")
	}}
	tr := tar.NewReader(unpacked)
	h, err := tr.Next()
	if err != nil {
		return nil, badf(file, "corrupt or truncated bundle: %v", readErr(err))
	}
	if h.Name != ManifestFile {
		return nil, badf(file, "not a kindlab bundle: its first entry is %q, not %s", h.Name, ManifestFile)
	}
	if h.Size > maxManifest {
		return nil, badf(file, "%s is %d bytes, more than a bundle's manifest can be (%d)", ManifestFile, h.Size, maxManifest)
	}
	raw, err := io.ReadAll(tr)
	if err != nil {
		return nil, badf(file, "corrupt or truncated bundle: %v", readErr(err))
	}
	// The version is read on its own first: a newer manifest may not decode
	// into this kindlab's types at all.
	var v struct {
		FormatVersion *int `json:"formatVersion"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, badf(file, "%s is not valid JSON: %v", ManifestFile, err)
	}
	switch {
	case v.FormatVersion == nil || *v.FormatVersion < 1:
		return nil, badf(file, "%s has no formatVersion (valid: 1 to %d)", ManifestFile, FormatVersion)
	case *v.FormatVersion > FormatVersion:
		return nil, badf(file, "bundle format version %d is newer than this kindlab reads (%d): use a newer kindlab", *v.FormatVersion, FormatVersion)
	}
	m, err := decodeManifest(raw, lim.Entries)
	if err != nil {
		return nil, badf(file, "%s: %v", ManifestFile, err)
	}
	if err := m.Run.check(); err != nil {
		return nil, badf(file, "%s: %v", ManifestFile, err)
	}
	if err := fn(ManifestFile, raw); err != nil {
		return nil, err
	}
	entries := make([]confine.Entry, 0, len(m.Files))
	expect := make(map[string]FileEntry, len(m.Files))
	var listed, held int64
	for _, e := range m.Files {
		if e.Path == ManifestFile {
			return nil, badf(file, "%s lists itself", ManifestFile)
		}
		if e.Link != "" && !strings.HasPrefix(e.Path, LabDir+"/") {
			return nil, badf(file, "symlink %s is outside the lab tree, the only place a bundle holds links", e.Path)
		}
		if e.Size < 0 {
			return nil, badf(file, "%s lists %s with a negative size (%d)", ManifestFile, e.Path, e.Size)
		}
		if e.Size > lim.File {
			return nil, badf(file, "%v", confine.TooLarge(fmt.Sprintf("%s (%d bytes as listed)", e.Path, e.Size), lim.File, "--max-file-size"))
		}
		listed += e.Size
		if want(e.Path) {
			held += e.Size
		}
		entries = append(entries, confine.Entry{Path: e.Path, Dir: e.Dir, Link: e.Link})
		expect[e.Path] = e
	}
	if err := confine.Check(entries, 2); err != nil {
		return nil, badf(file, "%s: %v", ManifestFile, err)
	}
	if listed > lim.Total {
		return nil, badf(file, "%v", confine.TooLarge(fmt.Sprintf("the bundle's files (%d bytes as listed)", listed), lim.Total, "--max-total-size"))
	}
	if held > lim.Held {
		return nil, badf(file, "%v", confine.TooLarge(fmt.Sprintf("what replay keeps in memory of it, the lab's files (%d bytes as listed)", held), lim.Held, ""))
	}
	seen := make(map[string]bool, len(expect))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, badf(file, "corrupt or truncated bundle: %v", readErr(err))
		}
		name := strings.TrimSuffix(h.Name, "/")
		e, ok := expect[name]
		if !ok || seen[name] {
			return nil, badf(file, "entry %q is not listed in %s, or is there twice (the bundle was altered)", h.Name, ManifestFile)
		}
		seen[name] = true
		switch h.Typeflag {
		case tar.TypeDir:
			if !e.Dir {
				return nil, badf(file, "entry %q is a directory, %s lists a file", name, ManifestFile)
			}
		case tar.TypeSymlink:
			if e.Link == "" || e.Link != h.Linkname {
				return nil, badf(file, "symlink %q does not match %s", name, ManifestFile)
			}
		case tar.TypeReg:
			if e.Dir || e.Link != "" || h.Size != e.Size {
				return nil, badf(file, "entry %q does not match its size in %s", name, ManifestFile)
			}
			hash := sha256.New()
			var data []byte
			// The size was checked against the limits with the manifest's
			// listing; the buffer still grows only with bytes that arrive.
			if want(name) {
				data, err = io.ReadAll(io.TeeReader(tr, hash))
			} else {
				_, err = io.Copy(hash, tr)
			}
			if err != nil {
				return nil, badf(file, "corrupt or truncated bundle: %s: %v", name, readErr(err))
			}
			if hex.EncodeToString(hash.Sum(nil)) != e.SHA256 {
				return nil, badf(file, "%s does not match its sha256 in %s (the bundle was damaged or altered)", name, ManifestFile)
			}
			if want(name) {
				if err := fn(name, data); err != nil {
					return nil, err
				}
			}
		default:
			return nil, badf(file, "entry %q has tar type %q; bundles hold files, directories and symlinks", h.Name, h.Typeflag)
		}
	}
	// The tar end marker comes before gzip's checksum and length: read on,
	// or a damaged tail goes unnoticed.
	if _, err := io.Copy(io.Discard, unpacked); err != nil {
		return nil, badf(file, "corrupt or truncated bundle: %v", readErr(err))
	}
	if len(seen) != len(expect) {
		var missing []string
		for p := range expect {
			if !seen[p] {
				missing = append(missing, p)
			}
		}
		sort.Strings(missing)
		return nil, badf(file, "truncated bundle: %d of the %d files %s lists are missing (first: %s)", len(missing), len(expect), ManifestFile, missing[0])
	}
	return m, nil
}

// decodeManifest decodes bundle.json, streaming its file list so that a
// list longer than maxEntries is refused after maxEntries+1 entries, not
// after all of them are in memory (a small bundle.json of tiny entries
// decodes to gigabytes).
// check refuses run settings that are no image references (e.g. one
// starting with "-", which a command line would take for a flag) before
// anything is rendered from them.
func (r RunSettings) check() error {
	for _, f := range []struct{ field, ref string }{{"run.nodeImage", r.NodeImage}, {"run.registryImage", r.RegistryImage}} {
		if f.ref == "" {
			continue
		}
		if err := lab.ParseImageReference(f.ref); err != nil {
			return fmt.Errorf("%s: %q is not an image reference: %v", f.field, f.ref, err)
		}
	}
	return nil
}

func decodeManifest(raw []byte, maxEntries int) (*Manifest, error) {
	var shell struct {
		Manifest
		Files json.RawMessage `json:"files"` // shadows Manifest.Files
	}
	if err := json.Unmarshal(raw, &shell); err != nil {
		return nil, err
	}
	m := shell.Manifest
	if len(shell.Files) == 0 || string(shell.Files) == "null" {
		return &m, nil
	}
	dec := json.NewDecoder(bytes.NewReader(shell.Files))
	if t, err := dec.Token(); err != nil || t != json.Delim('[') {
		return nil, fmt.Errorf("files: not a list")
	}
	for dec.More() {
		if len(m.Files) == maxEntries {
			return nil, fmt.Errorf("lists more than the limit of %d files", maxEntries)
		}
		var e FileEntry
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("files[%d]: %v", len(m.Files), err)
		}
		m.Files = append(m.Files, e)
	}
	return &m, nil
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
