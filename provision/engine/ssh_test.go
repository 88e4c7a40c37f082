package engine_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/engine/sshenginetest"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// TestSSHEngine drives this machine's engine as DOCKER_HOST=ssh://…: the
// API answers through ssh, and the registry is created, inspected and
// removed over it.
func TestSSHEngine(t *testing.T) {
	e := sshenginetest.Start(t, sshenginetest.Options{})
	t.Setenv(engine.SSHOptsEnv, e.Opts)
	t.Setenv("DOCKER_CONTEXT", "")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv("DOCKER_HOST", e.URL)

	c, ep, err := openClient(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if ep.Source != engine.SourceEnv || !ep.Remote() || ep.Hostname() != "127.0.0.1" {
		t.Errorf("endpoint %+v: want remote 127.0.0.1 from DOCKER_HOST", ep)
	}
	if !engine.IsRemote(c.DaemonHost()) {
		t.Errorf("DaemonHost %s counts as local", c.DaemonHost())
	}
	pingAndInfo(t, c, e)
	registryRoundTrip(t, registrytest.Options(t, c))
}

// TestSSHContext reaches the same engine through a docker context whose
// endpoint is the ssh URL, as `docker context use` leaves it, and runs the
// registry through a second engine opened from that context.
func TestSSHContext(t *testing.T) {
	e := sshenginetest.Start(t, sshenginetest.Options{})
	cfg := t.TempDir()
	writeContext(t, cfg, "kindlab-ssh-test", e.URL, false)
	writeCurrent(t, cfg, "kindlab-ssh-test")
	t.Setenv(engine.SSHOptsEnv, e.Opts)
	t.Setenv("DOCKER_HOST", "")
	t.Setenv("DOCKER_CONTEXT", "")
	t.Setenv("DOCKER_CONFIG", cfg)

	c, ep, err := openClient(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if !ep.FromContext() || ep.Context != "kindlab-ssh-test" || ep.Host != e.URL || !ep.Remote() {
		t.Errorf("endpoint %+v: want the context's ssh URL", ep)
	}
	pingAndInfo(t, c, e)
	rc, _, err := openClient(t)
	if err != nil {
		t.Fatal(err)
	}
	if !engine.IsRemote(rc.DaemonHost()) {
		t.Errorf("engine.Open did not follow the context: %s", rc.DaemonHost())
	}
	o := registrytest.Options(t, c)
	o.Docker = rc // a second engine opened from the context
	registryRoundTrip(t, o)

	// DOCKER_CONTEXT names the same context with config.json saying otherwise.
	writeCurrent(t, cfg, "default")
	t.Setenv("DOCKER_CONTEXT", "kindlab-ssh-test")
	c2, ep, err := openClient(t)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if ep.ContextFrom != "DOCKER_CONTEXT" {
		t.Errorf("endpoint %+v", ep)
	}
	pingAndInfo(t, c2, e)
}

func pingAndInfo(t *testing.T, c *client.Client, e *sshenginetest.Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Ping(ctx); err != nil {
		t.Fatalf("ping over %s: %v", c.DaemonHost(), err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("info over %s: %v", c.DaemonHost(), err)
	}
	if info.ID != e.InfoID {
		t.Errorf("engine %s over ssh, %s locally: not the same engine", info.ID, e.InfoID)
	}
}

// registryRoundTrip runs Ensure, Inspect and Remove on a remote engine.
// Its ports are not probed from here (they are the remote's), so the test
// checks the registry answers itself: "the remote" is this machine.
func registryRoundTrip(t *testing.T, o registry.Options) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := registry.Ensure(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running || !st.Created || st.HostPort != o.HostPort {
		t.Errorf("ensure: %+v", st)
	}
	st, err = registry.Inspect(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running || st.HostPort != o.HostPort || st.Ready {
		t.Errorf("inspect: %+v (a remote registry is running but not probed from here)", st)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/v2/", o.HostPort)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry made over ssh does not answer on %s: %v", url, err)
		}
	}
	if err := registry.Remove(ctx, o, registry.RemoveOptions{DeleteData: true}); err != nil {
		t.Fatal(err)
	}
	st, err = registry.Inspect(ctx, o)
	if err != nil || !st.Absent() {
		t.Errorf("after remove: %+v %v", st, err)
	}
}

// TestSSHFailuresAndCleanup: a refused key fails in one line with ssh's
// own reason, and closing a client ends its ssh processes.
func TestSSHFailuresAndCleanup(t *testing.T) {
	e := sshenginetest.Start(t, sshenginetest.Options{})
	t.Setenv("DOCKER_HOST", e.URL)
	before := sshChildren(t)

	t.Setenv(engine.SSHOptsEnv, strings.Replace(e.Opts, filepath.Join(e.Dir, "id"), filepath.Join(e.Dir, "host_key"), 1))
	bad, _, err := openClient(t)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = bad.Ping(ctx)
	bad.Close()
	if err == nil || !strings.Contains(err.Error(), "Permission denied") || strings.Contains(err.Error(), "\n") {
		t.Errorf("a refused key: %v, want one line with ssh's reason", err)
	}

	t.Setenv(engine.SSHOptsEnv, e.Opts)
	c, _, err := openClient(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	var started []int
	for pid := range sshChildren(t) {
		if !before[pid] {
			started = append(started, pid)
		}
	}
	if len(started) == 0 {
		t.Fatal("no ssh process ran the connection")
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := sshChildren(t)
		alive := 0
		for _, pid := range started {
			if left[pid] {
				alive++
			}
		}
		if alive == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ssh processes outlived the closed client", alive)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sshChildren are the ssh processes this test process started.
func sshChildren(t *testing.T) map[int]bool {
	t.Helper()
	out := map[int]bool{}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(s[end+1:])
		if s[open+1:end] != "ssh" || len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == os.Getpid() {
			pid, _ := strconv.Atoi(strings.Fields(s)[0])
			out[pid] = true
		}
	}
	return out
}

// openClient opens the engine the environment names, as a command does,
// and returns its client; the engine is closed when the test ends (which
// closes the client: closing it again is harmless).
func openClient(t *testing.T) (*client.Client, engine.Endpoint, error) {
	t.Helper()
	e, err := engine.Open(context.Background())
	if err != nil {
		return nil, engine.Endpoint{}, err
	}
	t.Cleanup(func() { e.Close() })
	return e.Client(), e.Endpoint(), nil
}
