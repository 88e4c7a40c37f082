// Package registrytest starts real registries for tests: Debian's
// distribution binary (/usr/bin/docker-registry, the same code as the
// registry:2 image) on loopback with its own config and temporary storage.
package registrytest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DistributionBinary is where Debian's docker-registry package installs it.
const DistributionBinary = "/usr/bin/docker-registry"

// RequireEnv makes a missing dependency a failure instead of a skip (CI).
const RequireEnv = "KINDLAB_REQUIRE_DOCKER"

// SkipOrFail skips the test with reason, or fails it when CI demands every
// real component.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (and %s=1 forbids skipping)", reason, RequireEnv)
	}
	t.Skip(reason)
}

// Distribution is a running distribution registry.
type Distribution struct {
	// Addr is host:port on 127.0.0.1.
	Addr    string
	Storage string
	config  string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *os.File
}

// StartDistribution starts the registry on a free loopback port and stops it
// when the test ends.
func StartDistribution(t testing.TB) *Distribution {
	t.Helper()
	if _, err := os.Stat(DistributionBinary); err != nil {
		SkipOrFail(t, fmt.Sprintf("distribution registry binary %s not installed (apt-get install docker-registry)", DistributionBinary))
	}
	dir := t.TempDir()
	d := &Distribution{Addr: freeAddr(t), Storage: filepath.Join(dir, "storage"), config: filepath.Join(dir, "config.yml")}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, d.Storage, d.Addr)
	if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	d.log = log
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("registry log:\n%s", b)
		}
	})
	d.Start(t)
	return d
}

// Start (re)starts the registry on the same address and storage.
func (d *Distribution) Start(t testing.TB) {
	t.Helper()
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
}

// Restart is Start for goroutines other than the test's (no t.Fatal).
func (d *Distribution) Restart() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cmd = exec.Command(DistributionBinary, "serve", d.config)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %v", DistributionBinary, err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { _ = cmd.Wait(); close(ch) }(d.cmd, d.exited)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitReady(ctx, d.Addr); err != nil {
		d.stopLocked()
		return fmt.Errorf("registry on %s: %v", d.Addr, err)
	}
	return nil
}

// Stop kills the registry at once, as a crash would, and waits for it.
func (d *Distribution) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
}

func (d *Distribution) stopLocked() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	d.cmd = nil
}

// WaitReady polls GET /v2/ until the registry answers.
func WaitReady(ctx context.Context, addr string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not answering GET /v2/: %v (last error %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Skopeo runs skopeo (the containers/image client, independent of
// go-containerregistry) and returns its stdout.
func Skopeo(t testing.TB, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath("skopeo")
	if err != nil {
		SkipOrFail(t, "skopeo not installed (apt-get install skopeo)")
	}
	cmd := exec.Command(path, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("skopeo %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}
