package kit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// blobCache is a content-addressed directory (blobs/sha256/<hex>, as in an
// OCI layout) that saves read from and kits are assembled from.
type blobCache struct{ dir string }

func (c blobCache) path(h v1.Hash) string {
	return filepath.Join(c.dir, "blobs", h.Algorithm, h.Hex)
}

func (c blobCache) has(h v1.Hash, size int64) bool {
	st, err := os.Stat(c.path(h))
	return err == nil && st.Mode().IsRegular() && (size < 0 || st.Size() == size)
}

func (c blobCache) open(h v1.Hash) (*os.File, error) { return os.Open(c.path(h)) }

func (c blobCache) size(h v1.Hash) (int64, error) {
	st, err := os.Stat(c.path(h))
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// put stores r under h, verifying digest and size (size < 0: unknown); a
// blob already present is not written again.
func (c blobCache) put(h v1.Hash, size int64, r io.Reader) error {
	if c.has(h, size) {
		return nil
	}
	got, n, err := c.write(r)
	if err != nil {
		return err
	}
	if got != h || (size >= 0 && n != size) {
		os.Remove(c.path(got))
		return fmt.Errorf("blob %s: content has digest %s and %d bytes, want %d", h, got, n, size)
	}
	return nil
}

func (c blobCache) putBytes(b []byte) (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return h, err
	}
	return h, c.put(h, int64(len(b)), bytes.NewReader(b))
}

// write stores r under whatever digest it has.
func (c blobCache) write(r io.Reader) (v1.Hash, int64, error) {
	dir := filepath.Join(c.dir, "blobs", "sha256")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return v1.Hash{}, 0, err
	}
	f, err := os.CreateTemp(dir, ".incoming-*")
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer os.Remove(f.Name())
	hw := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, hw), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return v1.Hash{}, n, fmt.Errorf("write blob to %s: %w", dir, err)
	}
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(hw.Sum(nil))}
	if err := os.Rename(f.Name(), c.path(h)); err != nil {
		return h, n, err
	}
	return h, n, nil
}

// verifyingReader hashes what passes through and fails at EOF on a
// mismatch, so a consumer never sees a wrong blob end cleanly.
type verifyingReader struct {
	r    io.Reader
	h    hash.Hash
	want v1.Hash
	size int64
	n    int64
}

func newVerifyingReader(r io.Reader, want v1.Hash, size int64) *verifyingReader {
	return &verifyingReader{r: r, h: sha256.New(), want: want, size: size}
}

var errDigestMismatch = errors.New("digest mismatch")

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.Hex || v.n != v.size {
			return n, fmt.Errorf("blob %s: %w (read %d bytes with digest sha256:%s)", v.want, errDigestMismatch, v.n, got)
		}
	}
	return n, err
}
