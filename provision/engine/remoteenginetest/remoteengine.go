// Package remoteenginetest starts, for tests, a Docker engine whose
// filesystem is not this machine's: Debian's dockerd in a privileged
// container of the local engine (image from fixtures/remoteengine/build.sh),
// reached at tcp://127.0.0.1:PORT. A host path written here does not exist
// there, which an engine reached over ssh:// to this same machine cannot
// show.
package remoteenginetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Names on the local engine. One remote engine at a time: a run that was
// killed leaves its container, which the next Start replaces. The data
// volume is kept between runs so that images loaded once stay loaded.
const (
	Container  = "kindlab-remote-engine"
	DataVolume = "kindlab-remote-engine-data"
	label      = "dev.kindlab.remote-engine"
)

// Engine is a running remote engine.
type Engine struct {
	// Host is its DOCKER_HOST: tcp://127.0.0.1:PORT.
	Host string
	// IP is the container's address on the local engine's bridge, which
	// this machine routes to: ports the remote engine publishes on it
	// (kind's API server, with up --api-server-address IP) are reachable
	// from here; its 127.0.0.1 is not.
	IP string
	// local is the local engine's DOCKER_HOST at Start ("" = default).
	local string
}

// Start builds (cached) and starts the remote engine, waits until it
// answers, empties it of containers, volumes and networks an interrupted
// run left, and loads images from the local engine into it (skipping
// those it has with the same ID). The engine is removed when the test
// ends. It fails the test on any error: callers decide beforehand whether
// the test may run.
func Start(t testing.TB, images ...string) *Engine {
	t.Helper()
	start := time.Now()
	e := &Engine{local: os.Getenv("DOCKER_HOST")}
	image := e.build(t)
	_, _ = e.Local(context.Background(), nil, "rm", "-f", Container) // a killed run's; never started by anyone else
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Its own cgroup namespace: the inner dockerd sees its cgroups as a
	// host's dockerd does (the image's entrypoint adds the cgroup2 mount).
	if _, err := e.Local(ctx, nil, "run", "-d", "--privileged", "--cgroupns=private", "--name", Container, "--label", label+"=1",
		"-p", "127.0.0.1::2375", "--tmpfs", "/run", "--tmpfs", "/tmp",
		"-v", DataVolume+":/var/lib/docker", image); err != nil {
		t.Fatalf("start the remote engine: %v", err)
	}
	t.Cleanup(func() { e.Stop(t) })
	port, err := e.Local(ctx, nil, "port", Container, "2375/tcp")
	if err != nil {
		t.Fatalf("remote engine port: %v", err)
	}
	// "127.0.0.1:49153", one line per address.
	hostPort := strings.TrimSpace(strings.Split(port, "\n")[0])
	e.Host = "tcp://" + hostPort
	ip, err := e.Local(ctx, nil, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", Container)
	if e.IP = strings.TrimSpace(ip); err != nil || e.IP == "" {
		t.Fatalf("remote engine address on the local bridge: %q %v", ip, err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := e.Docker(ctx, nil, "version")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := e.Local(ctx, nil, "logs", "--tail", "30", Container)
			t.Fatalf("remote engine at %s did not answer within a minute: %v\n%s", e.Host, err, logs)
		}
		time.Sleep(time.Second)
	}
	e.empty(t, ctx)
	for _, img := range images {
		e.load(t, ctx, img)
	}
	t.Logf("remote engine %s (bridge address %s) ready in %s", e.Host, e.IP, time.Since(start).Round(time.Second))
	return e
}

// Stop removes the engine's container (not its data volume: the loaded
// images are the warm start of the next run). Safe to call twice.
func (e *Engine) Stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := e.Local(ctx, nil, "rm", "-f", Container); err != nil && !strings.Contains(out+err.Error(), "No such container") {
		t.Errorf("remove the remote engine: %v", err)
	}
}

// Docker runs the docker CLI against the remote engine and returns its
// stdout; stdin, when not nil, is its input.
func (e *Engine) Docker(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	return docker(ctx, e.Host, stdin, args...)
}

// Lists returns the remote engine's containers (all), volumes and networks
// other than the engine's own bridge, host and none, one name each.
func (e *Engine) Lists(ctx context.Context) (containers, volumes, networks []string, err error) {
	list := func(args ...string) []string {
		out, lerr := e.Docker(ctx, nil, args...)
		if lerr != nil && err == nil {
			err = lerr
		}
		return strings.Fields(out)
	}
	containers = list("ps", "-a", "--format", "{{.Names}}")
	volumes = list("volume", "ls", "-q")
	for _, n := range list("network", "ls", "--format", "{{.Name}}") {
		if n != "bridge" && n != "host" && n != "none" {
			networks = append(networks, n)
		}
	}
	return containers, volumes, networks, err
}

// Local runs the docker CLI against the local engine, the one the remote
// engine runs in (DOCKER_HOST as it was at Start).
func (e *Engine) Local(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	return docker(ctx, e.local, stdin, args...)
}

// build runs the cached image builder and returns the image reference.
func (e *Engine) build(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "..", "fixtures", "remoteengine", "build.sh")
	cmd := exec.Command("bash", script)
	cmd.Env = hostEnv(e.local)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("build the remote engine image (%s): %v\n%s", script, err, errOut.String())
	}
	lines := strings.Fields(out.String())
	if len(lines) == 0 {
		t.Fatalf("%s printed no image reference\n%s", script, errOut.String())
	}
	return lines[len(lines)-1]
}

// empty removes what an interrupted run left on the remote engine (it is
// this package's alone), keeping images.
func (e *Engine) empty(t testing.TB, ctx context.Context) {
	t.Helper()
	ids, err := e.Docker(ctx, nil, "ps", "-aq")
	if err != nil {
		t.Fatalf("remote engine: %v", err)
	}
	if ids := strings.Fields(ids); len(ids) > 0 {
		if _, err := e.Docker(ctx, nil, append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
			t.Fatalf("remote engine: remove leftover containers: %v", err)
		}
	}
	for _, args := range [][]string{{"volume", "prune", "-f"}, {"network", "prune", "-f"}} {
		if _, err := e.Docker(ctx, nil, args...); err != nil {
			t.Fatalf("remote engine: %s: %v", strings.Join(args, " "), err)
		}
	}
}

// load copies an image from the local engine unless the remote one has it
// with the same ID.
func (e *Engine) load(t testing.TB, ctx context.Context, img string) {
	t.Helper()
	want, err := e.Local(ctx, nil, "image", "inspect", "-f", "{{.Id}}", img)
	if err != nil {
		t.Fatalf("image %s is not in the local engine: %v", img, err)
	}
	if got, _ := e.Docker(ctx, nil, "image", "inspect", "-f", "{{.Id}}", img); strings.TrimSpace(got) == strings.TrimSpace(want) {
		return
	}
	start := time.Now()
	save := exec.CommandContext(ctx, "docker", "save", img)
	save.Env = hostEnv(e.local)
	var saveErr bytes.Buffer
	save.Stderr = &saveErr
	r, err := save.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := save.Start(); err != nil {
		t.Fatalf("docker save %s: %v", img, err)
	}
	_, lerr := e.Docker(ctx, r, "load", "-q")
	serr := save.Wait()
	if serr != nil || lerr != nil {
		t.Fatalf("copy %s into the remote engine: save: %v %s; load: %v", img, serr, saveErr.String(), lerr)
	}
	t.Logf("remote engine: loaded %s in %s", img, time.Since(start).Round(time.Second))
}

// docker runs the CLI against host ("" = the default, as the environment
// had it before the test changed DOCKER_HOST).
func docker(ctx context.Context, host string, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = hostEnv(host)
	cmd.Stdin = stdin
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// hostEnv is this process's environment with DOCKER_HOST set to host, or
// removed for "".
func hostEnv(host string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_HOST=") {
			env = append(env, kv)
		}
	}
	if host != "" {
		env = append(env, "DOCKER_HOST="+host)
	}
	return env
}
