package crishim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// MaxMsgSize is the largest CRI message the shim passes, either way: the
// kubelet's own limit for CRI responses (k8s.io/cri-client
// pkg/remote_runtime.go maxMsgSize, 16 MiB), so the shim never refuses
// what the kubelet would accept from containerd directly.
const MaxMsgSize = 16 << 20

// Options say where the shim listens and what it forwards to.
type Options struct {
	// Listen is the shim's CRI endpoint, unix:///path/to.sock.
	Listen string
	// RuntimeEndpoint is the runtime's CRI endpoint, e.g.
	// unix:///run/containerd/containerd.sock.
	RuntimeEndpoint string
	// RuntimeWait bounds how long Serve waits for the runtime to answer
	// Version before it gives up; 0 means 30 s.
	RuntimeWait time.Duration
	// Log receives one line at start, one per rewritten CreateContainer,
	// and one at the end (the unit's journal); nil discards them.
	Log io.Writer
	// Ready, when set, is called once the socket accepts connections (tests
	// use it; under systemd Serve also sends READY=1).
	Ready func()
}

// Serve runs the shim until ctx ends. It fails before serving when the
// listen address is not a unix socket path, when another process already
// serves that socket, or when the runtime does not answer CRI Version
// within RuntimeWait: a shim that cannot forward must not look ready to
// systemd and the kubelet. The socket is removed when Serve returns.
func Serve(ctx context.Context, opts Options) error {
	sock, err := socketPath("--listen", opts.Listen)
	if err != nil {
		return err
	}
	if _, err := socketPath("--runtime-endpoint", opts.RuntimeEndpoint); err != nil {
		return err
	}
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	// The socket first: a taken one fails at once, whatever the runtime
	// does. Nothing is served on it until the runtime has answered.
	l, err := listen(sock)
	if err != nil {
		return err
	}
	defer l.Close()
	conn, err := grpc.NewClient(opts.RuntimeEndpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)))
	if err != nil {
		return fmt.Errorf("connect to runtime %s: %w", opts.RuntimeEndpoint, err)
	}
	defer conn.Close()
	ver, err := runtimeVersion(ctx, conn, opts.RuntimeEndpoint, opts.RuntimeWait)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(MaxMsgSize), grpc.MaxSendMsgSize(MaxMsgSize))
	NewProxy(conn, logw).Register(srv)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()

	fmt.Fprintf(logw, "kindlab CRI shim serving %s for %s %s at %s: image-volume mounts are made read-only\n",
		opts.Listen, ver.GetRuntimeName(), ver.GetRuntimeVersion(), opts.RuntimeEndpoint)
	if opts.Ready != nil {
		opts.Ready()
	}
	// Under systemd (Type=notify) the unit becomes active only now, so the
	// kubelet, ordered after it, finds a socket that answers.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		fmt.Fprintf(logw, "warning: tell systemd the shim is ready: %v\n", err)
	}

	select {
	case err := <-done:
		return fmt.Errorf("serve %s: %w", opts.Listen, err)
	case <-ctx.Done():
	}
	// GetContainerEvents streams never end on their own: give unary calls
	// in flight a moment, then close what is left.
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		srv.Stop()
	}
	fmt.Fprintf(logw, "kindlab CRI shim stopped\n")
	return nil
}

// CheckEndpoint says whether endpoint is a unix:///absolute/path endpoint,
// the only kind the shim serves and forwards to; the error names flag.
func CheckEndpoint(flag, endpoint string) error {
	_, err := socketPath(flag, endpoint)
	return err
}

// socketPath turns unix:///path into /path.
func socketPath(flag, endpoint string) (string, error) {
	p, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok || !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s: %q is not a unix socket endpoint (valid: unix:///absolute/path.sock)", flag, endpoint)
	}
	return p, nil
}

// runtimeVersion asks the runtime for its version until it answers: the
// shim may start while containerd is still loading its plugins.
func runtimeVersion(ctx context.Context, conn *grpc.ClientConn, endpoint string, wait time.Duration) (*runtimeapi.VersionResponse, error) {
	if wait == 0 {
		wait = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c := runtimeapi.NewRuntimeServiceClient(conn)
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := c.Version(cctx, &runtimeapi.VersionRequest{})
		ccancel()
		if err == nil {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("runtime %s does not answer CRI Version after %s: %v", endpoint, wait, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// listen creates the shim's socket. A socket file nobody answers on is
// left over from a shim that died and is replaced; one that answers
// belongs to another process and is never taken over.
func listen(sock string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", sock, err)
	}
	if fi, err := os.Lstat(sock); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listen on %s: the path exists and is not a socket (%s); remove it or choose another --listen", sock, fi.Mode().Type())
		}
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process already serves this socket (is a second shim running? see `ss -xlp | grep %s`)", sock, filepath.Base(sock))
		}
		if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", sock, err)
		}
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", sock, err)
	}
	// Only root (the kubelet) talks CRI, as with containerd's own socket.
	if err := os.Chmod(sock, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen on %s: %w", sock, err)
	}
	return l, nil
}
