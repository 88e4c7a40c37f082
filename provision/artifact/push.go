package artifact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Progress is reported while a push runs.
type Progress struct {
	// BytesDone counts bytes of blobs uploaded or found already present;
	// BytesTotal is the size of every blob of the artifact.
	BytesDone, BytesTotal int64
	// BytesSent counts request body bytes actually sent so far.
	BytesSent int64
	// LayersDone counts layers uploaded or found present; LayersTotal is
	// the number of layers.
	LayersDone, LayersTotal int
}

// PushOptions tune Push; the zero value is ready to use.
type PushOptions struct {
	// Progress, if set, is called from the pushing goroutines as bytes
	// and layers complete; it must not block for long.
	Progress func(Progress)
	// Transport is the HTTP transport under the byte counting; nil means
	// a transport tuned for large uploads to loopback.
	Transport http.RoundTripper
	// Jobs is how many blobs are uploaded at once; 0 means one per layer
	// (at most 8).
	Jobs int
	// Backoff is how failed uploads are retried when the registry goes
	// away; zero means 4 attempts over about 3.5 seconds.
	Backoff remote.Backoff
	// Insecure talks plain HTTP to any registry. Registries on localhost
	// and loopback addresses get plain HTTP anyway.
	Insecure bool
}

// Result is what a push did.
type Result struct {
	Reference     string `json:"reference"`
	Digest        string `json:"digest"`
	MediaType     string `json:"mediaType"`
	Layers        int    `json:"layers"`
	LayersPushed  int    `json:"layersPushed"`
	LayersSkipped int    `json:"layersSkipped"`
	// BytesSent is every request body byte sent (blobs and manifest).
	BytesSent int64 `json:"bytesSent"`
	// BlobBytesSent is the part of BytesSent that carried blobs (layers
	// and config): zero when the registry already had all of them.
	BlobBytesSent int64 `json:"blobBytesSent"`
	// Size is the compressed size of the manifest, config and layers.
	Size int64 `json:"size"`
}

// DefaultBackoff is the retry schedule for a registry that goes away.
var DefaultBackoff = remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 4}

// ParseReference parses ref as a push target, naming the flag or field in
// the error.
func ParseReference(ref string, insecure bool) (name.Reference, error) {
	var o []name.Option
	if insecure {
		o = append(o, name.Insecure)
	}
	r, err := name.ParseReference(ref, append(o, name.StrictValidation)...)
	if err != nil {
		// StrictValidation refuses refs without tag or digest; say so plainly.
		if _, err2 := name.ParseReference(ref, o...); err2 == nil {
			return nil, fmt.Errorf("reference %q: name a tag or digest, e.g. localhost:5001/kindlab/model:v1", ref)
		}
		return nil, fmt.Errorf("reference %q does not parse: want REGISTRY/REPOSITORY:TAG, e.g. localhost:5001/kindlab/model:v1 (%v)", ref, err)
	}
	return r, nil
}

// Push uploads img to ref and returns its digest. Blobs the registry already
// holds are not sent again (one HEAD each); the manifest goes last, so a push
// that fails leaves no tag pointing at missing blobs.
func Push(ctx context.Context, img v1.Image, ref string, opts PushOptions) (*Result, error) {
	r, err := ParseReference(ref, opts.Insecure)
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}
	size, err := imageSize(img)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}

	layerDigests := map[string]bool{}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("push %s: %w", ref, err)
		}
		layerDigests[d.String()] = true
	}

	base := opts.Transport
	if base == nil {
		base = DefaultTransport()
	}
	ct := &countingTransport{inner: base, layers: layerDigests}
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = min(max(len(layers), 1), 8)
	}
	backoff := opts.Backoff
	if backoff.Steps == 0 {
		backoff = DefaultBackoff
	}

	updates := make(chan v1.Update, 16)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if opts.Progress != nil {
		ct.onLayer = func() {
			opts.Progress(ct.progress(len(layers)))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case u, ok := <-updates:
					if !ok {
						return
					}
					if u.Error == nil {
						ct.bytesDone.Store(u.Complete)
						ct.bytesTotal.Store(u.Total)
						opts.Progress(ct.progress(len(layers)))
					}
				case <-stop:
					// remote.Write has returned: nothing more is sent.
					return
				}
			}
		}()
	}

	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(ct),
		remote.WithJobs(jobs),
		remote.WithRetryBackoff(backoff),
		remote.WithRetryPredicate(retryable),
		remote.WithUserAgent("kindlab"),
	}
	if opts.Progress != nil {
		ropts = append(ropts, remote.WithProgress(updates))
	}
	err = remote.Write(r, img, ropts...)
	close(stop)
	wg.Wait()
	if err != nil {
		return nil, pushError(ctx, r, err)
	}

	// A layer not uploaded was already there: the push succeeded, so the
	// registry holds them all (a manifest HEAD can short-cut every blob HEAD).
	pushed := ct.layersUploaded()
	skipped := len(layers) - pushed
	res := &Result{
		Reference:     r.Name(),
		Digest:        digest.String(),
		MediaType:     string(mt),
		Layers:        len(layers),
		LayersPushed:  pushed,
		LayersSkipped: skipped,
		BytesSent:     ct.sent.Load(),
		BlobBytesSent: ct.blobSent.Load(),
		Size:          size,
	}
	if opts.Progress != nil {
		p := ct.progress(len(layers))
		p.BytesDone, p.BytesTotal, p.LayersDone = size, size, len(layers)
		opts.Progress(p)
	}
	return res, nil
}

func imageSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

// retryable extends go-containerregistry's default with a refused
// connection: a registry container that restarts refuses for a moment.
func retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.Temporary()
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func pushError(ctx context.Context, r name.Reference, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("push %s: %w", r.Name(), ctx.Err())
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("push %s: registry %s is not answering (gave up after retries; nothing was tagged): is it running? see `kindlab registry status`: %w",
			r.Name(), r.Context().RegistryStr(), err)
	}
	return fmt.Errorf("push %s: %w", r.Name(), err)
}

// DefaultTransport is tuned for pushing large blobs to a registry on
// loopback: big write buffers cut the syscalls per uploaded byte, and an
// idle connection per parallel job avoids reconnecting between blobs.
func DefaultTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.WriteBufferSize = 1 << 20
	t.ReadBufferSize = 64 << 10
	t.MaxIdleConnsPerHost = 16
	t.DisableCompression = true
	t.Proxy = nil // loopback pushes must not detour through a proxy
	return t
}

// countingTransport counts request body bytes and learns, from the
// registry's answers, which layers were uploaded and which it already had.
type countingTransport struct {
	inner    http.RoundTripper
	layers   map[string]bool
	sent     atomic.Int64
	blobSent atomic.Int64

	bytesDone, bytesTotal atomic.Int64
	onLayer               func()

	mu       sync.Mutex
	uploaded map[string]bool
	present  map[string]bool
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	isBlobUpload := strings.Contains(req.URL.Path, "/blobs/uploads/")
	if req.Body != nil && req.Body != http.NoBody {
		req = req.Clone(req.Context())
		req.Body = &countingBody{ReadCloser: req.Body, t: c, blob: isBlobUpload}
	}
	resp, err := c.inner.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	var d string
	var present bool
	switch {
	case req.Method == http.MethodHead && resp.StatusCode == http.StatusOK && strings.Contains(req.URL.Path, "/blobs/"):
		d, present = req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:], true
	case req.Method == http.MethodPost && resp.StatusCode == http.StatusCreated && req.URL.Query().Get("mount") != "":
		d, present = req.URL.Query().Get("mount"), true
	case req.Method == http.MethodPut && resp.StatusCode == http.StatusCreated && isBlobUpload:
		d = req.URL.Query().Get("digest")
	}
	if d != "" && c.layers[d] {
		c.mu.Lock()
		if c.uploaded == nil {
			c.uploaded, c.present = map[string]bool{}, map[string]bool{}
		}
		isNew := !c.uploaded[d] && !c.present[d]
		if present {
			c.present[d] = true
		} else {
			c.uploaded[d] = true
		}
		c.mu.Unlock()
		if isNew && c.onLayer != nil {
			c.onLayer()
		}
	}
	return resp, nil
}

func (c *countingTransport) layersUploaded() (n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d := range c.uploaded {
		if !c.present[d] {
			n++
		}
	}
	return n
}

func (c *countingTransport) progress(total int) Progress {
	c.mu.Lock()
	done := len(c.uploaded) + len(c.present)
	c.mu.Unlock()
	return Progress{
		BytesDone:   c.bytesDone.Load(),
		BytesTotal:  c.bytesTotal.Load(),
		BytesSent:   c.sent.Load(),
		LayersDone:  min(done, total),
		LayersTotal: total,
	}
}

type countingBody struct {
	io.ReadCloser
	t    *countingTransport
	blob bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.t.sent.Add(int64(n))
	if b.blob {
		b.t.blobSent.Add(int64(n))
	}
	return n, err
}
