package kit

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"strings"

	"github.com/kindlab/kindlab/provision/internal/confine"
	"github.com/kindlab/kindlab/provision/regular"
)

// kitFile is a kit opened for reading in place: its tar headers are read
// once and every member is then a section of the file, so loading never
// unpacks the kit to disk first.
type kitFile struct {
	f       *os.File
	name    string
	size    int64
	entries map[string]section
}

type section struct{ off, size int64 }

// maxEntries bounds a kit's table in memory: an all-features kit has a few
// hundred blobs.
const maxEntries = 100_000

func openKit(file string) (*kitFile, error) {
	f, err := regular.OpenInput(file)
	if err != nil {
		if nr := (*regular.NotRegularError)(nil); errors.As(err, &nr) {
			return nil, kitErr(file, "is a %s (valid: a kit, the .tar file `kindlab kit save` writes)", nr.Kind)
		}
		return nil, kitErr(file, "%v", regular.Cause(err))
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	k := &kitFile{f: f, name: file, size: st.Size(), entries: map[string]section{}}
	seen := map[string]bool{}
	// last is the last member read, and lastEnd where its padded content ends.
	var last string
	var lastEnd int64
	// tar.Reader reads headers in exact blocks and seeks over content, so
	// the file offset after Next is where the member's content starts.
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			// A first header that does not read is most likely no tar at
			// all (a lab's YAML, a gzip): say that rather than truncated.
			if len(seen) == 0 && !ustarMagic(f) {
				return nil, kitErr(file, "not a kit (not a tar archive): `kindlab kit save` writes one")
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, kitErr(file, "truncated (the file ends inside a tar header): copy it again")
			}
			return nil, kitErr(file, "not a kit tar: %v", err)
		}
		// A kit is an OCI layout: directories and regular files. Anything
		// else (links, devices, FIFOs) is no kit kindlab wrote.
		name := strings.TrimSuffix(hdr.Name, "/")
		if !confine.ValidPath(name) {
			f.Close()
			return nil, kitErr(file, "holds %q, which is not a path inside a kit", hdr.Name)
		}
		if seen[name] {
			f.Close()
			return nil, kitErr(file, "holds %q twice (a kit where a later entry replaces an earlier one is refused)", name)
		}
		seen[name] = true
		if len(seen) > maxEntries {
			f.Close()
			return nil, kitErr(file, "holds more than %d entries: not a kit kindlab wrote", maxEntries)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if lastEnd, err = f.Seek(0, io.SeekCurrent); err != nil {
				f.Close()
				return nil, err
			}
			last = name
			continue
		case tar.TypeReg:
		default:
			f.Close()
			return nil, kitErr(file, "entry %q has tar type %q; kits hold only files and directories", hdr.Name, hdr.Typeflag)
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			f.Close()
			return nil, err
		}
		if off+hdr.Size > k.size {
			f.Close()
			return nil, kitErr(file, "truncated: %s needs %d bytes, the file ends %d bytes in: copy it again", hdr.Name, hdr.Size, k.size-off)
		}
		k.entries[name] = section{off: off, size: hdr.Size}
		last, lastEnd = name, off+(hdr.Size+blockSize-1)/blockSize*blockSize
	}
	if len(seen) == 0 {
		f.Close()
		return nil, kitErr(file, "not a kit (an empty tar archive): `kindlab kit save` writes one")
	}
	// tar.Reader takes a file cut between two members for a whole one (its
	// Next says io.EOF): only the end-of-archive marker, two zero blocks
	// that archive/tar's Writer.Close writes and Next reads past, tells
	// them apart. Without this check such a kit lacks its later members
	// and reads as no kit at all.
	if end, err := f.Seek(0, io.SeekCurrent); err != nil || end < lastEnd+2*blockSize {
		f.Close()
		return nil, kitErr(file, "truncated: the file ends after %s, without tar's end-of-archive marker: copy it again", last)
	}
	return k, nil
}

// blockSize is tar's block: headers, content padding and the end marker.
const blockSize = 512

// ustarMagic reports whether f starts as a tar archive kindlab (Go's
// archive/tar, in USTAR, PAX or GNU format) writes: the "ustar" magic at
// offset 257 of the first header (POSIX.1-1988 ustar; GNU's is "ustar  ").
func ustarMagic(f *os.File) bool {
	var magic [5]byte
	n, _ := f.ReadAt(magic[:], 257)
	return n == len(magic) && string(magic[:]) == "ustar"
}

func (k *kitFile) Close() error { return k.f.Close() }

func (k *kitFile) open(name string) (*io.SectionReader, bool) {
	s, ok := k.entries[name]
	if !ok {
		return nil, false
	}
	return io.NewSectionReader(k.f, s.off, s.size), true
}

// readSmall reads a metadata member (bounded: a kit's JSON files are small).
func (k *kitFile) readSmall(name string) ([]byte, error) {
	r, ok := k.open(name)
	if !ok {
		return nil, kitErr(k.name, "has no %s: not a kindlab kit", name)
	}
	if r.Size() > 8<<20 {
		return nil, kitErr(k.name, "%s is %d bytes, too large for a kit's table of contents", name, r.Size())
	}
	return io.ReadAll(r)
}
