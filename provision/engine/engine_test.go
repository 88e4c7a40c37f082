package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// TestOpenChoosesTheProviderOnce: the provider choice is read in Open (the
// option first, else KIND_EXPERIMENTAL_PROVIDER); docker and podman are
// driven, others refused.
func TestOpenChoosesTheProviderOnce(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
	t.Setenv(engine.PodmanHostEnv, "")
	t.Setenv(engine.ProviderEnv, "")
	var upe *engine.UnsupportedProviderError
	if _, err := engine.Open(context.Background(), engine.WithProvider("nerdctl")); !errors.As(err, &upe) || upe.Value != "nerdctl" || upe.Source != engine.ProviderFlag {
		t.Errorf("WithProvider(nerdctl): %v", err)
	}
	t.Setenv(engine.ProviderEnv, "nerdctl")
	if _, err := engine.Open(context.Background()); !errors.As(err, &upe) || upe.Value != "nerdctl" || upe.Source != engine.ProviderEnv {
		t.Errorf("%s=nerdctl: %v", engine.ProviderEnv, err)
	}
	p, err := engine.Open(context.Background(), engine.WithProvider(engine.ProviderPodman))
	if err != nil {
		t.Fatal(err)
	}
	if p.Provider() != "podman" || !p.Endpoint().Podman || p.Client().DaemonHost() != engine.PodmanSocket() {
		t.Errorf("podman engine %+v, provider %s, host %s", p.Endpoint(), p.Provider(), p.Client().DaemonHost())
	}
	p.Close()
	// doctor examines Docker whatever the variable says.
	e, err := engine.Open(context.Background(), engine.WithProvider(engine.ProviderDocker))
	if err != nil {
		t.Fatal(err)
	}
	if e.Provider() != "docker" || e.Endpoint().Source != engine.SourceEnv || e.Kind() == nil || e.Client().DaemonHost() != "unix:///var/run/docker.sock" {
		t.Errorf("engine %+v, provider %s, host %s", e.Endpoint(), e.Provider(), e.Client().DaemonHost())
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// TestUnreachable: a failed Open, where an engine is needed, is one line
// wrapping ErrNoEngine with the fix; a refused provider stays itself.
func TestUnreachable(t *testing.T) {
	err := engine.Unreachable(errors.New("docker context \"gone\" does not exist\nmore"))
	if !errors.Is(err, engine.ErrNoEngine) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "docker context ls") {
		t.Errorf("%v", err)
	}
	var upe *engine.UnsupportedProviderError
	if err := engine.Unreachable(&engine.UnsupportedProviderError{Value: "nerdctl"}); !errors.As(err, &upe) {
		t.Errorf("%v", err)
	}
	e, err := engine.Open(context.Background(), engine.WithEndpoint(engine.Endpoint{Host: "unix:///nonexistent.sock", Source: engine.SourceEnv}))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Ping(context.Background()); !errors.Is(err, engine.ErrNoEngine) || !strings.Contains(err.Error(), "DOCKER_HOST") {
		t.Errorf("Ping of no engine: %v", err)
	}
}

// TestKindNodeContainers counts containers by kind's role label through
// the Engine API, stopped ones included, as `docker ps -a --filter
// label=io.x-k8s.kind.role` did.
func TestKindNodeContainers(t *testing.T) {
	e := registrytest.Engine(t)
	img := registrytest.BusyboxImage(t, e.Client())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := e.KindNodeContainers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Created, never started: no cluster label, so kind sees no cluster.
	c, err := e.Client().ContainerCreate(ctx, &container.Config{Image: img, Labels: map[string]string{engine.KindRoleLabel: "worker"}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Client().ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
	})
	after, err := e.KindNodeContainers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range after {
		found = found || s.ID == c.ID
	}
	if !found || len(after) != len(before)+1 {
		t.Errorf("%d kind node containers before, %d after creating one (found: %v)", len(before), len(after), found)
	}
}

// TestRunOnce runs a command in a throwaway container, as `docker run
// --rm --entrypoint` did: its output, or its error's first line, and no
// container left behind.
func TestRunOnce(t *testing.T) {
	e := registrytest.Engine(t)
	img := registrytest.BusyboxImage(t, e.Client())
	ctx := context.Background()
	out, err := e.RunOnce(ctx, img, "sh", "-c", "echo hello; echo not-this >&2")
	if err != nil || out != "hello" {
		t.Errorf("RunOnce = %q, %v; want hello", out, err)
	}
	_, err = e.RunOnce(ctx, img, "sh", "-c", "echo first >&2; echo second >&2; exit 3")
	if err == nil || err.Error() != "first" {
		t.Errorf("a failing command: %v, want its first stderr line", err)
	}
	if _, err := e.RunOnce(ctx, "kindlab.invalid/none:v1", "true"); err == nil {
		t.Error("an image the engine lacks ran")
	}
	left, err := e.Client().ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", "dev.kindlab.run=once"), filters.Arg("ancestor", img))})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("%d container(s) left behind", len(left))
	}
}

// TestThawFrozenLetsAStuckContainerGo reproduces what a kind node killed
// while its runc had a pod's cgroup frozen looks like (cgroup v1): a
// process in a frozen freezer cgroup below the container's cannot die, so
// the engine cannot remove the container. ThawFrozen thaws it and the
// removal then succeeds.
func TestThawFrozenLetsAStuckContainerGo(t *testing.T) {
	e := registrytest.Engine(t)
	img := registrytest.BusyboxImage(t, e.Client())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The container's own freezer cgroup is its /sys/fs/cgroup/freezer
	// (cgroupns host: runc mounts it there) or below the hierarchy root.
	script := `cg=
while IFS=: read -r id ctl path; do case ",$ctl," in *,freezer,*) cg=$path;; esac; done < /proc/self/cgroup
[ -n "$cg" ] || { echo "no cgroup v1 freezer"; exit 3; }
d=/sys/fs/cgroup/freezer$cg
[ -d "$d" ] || d=/sys/fs/cgroup/freezer
mkdir "$d/stuck" || exit 4
sleep 3600 &
echo $! > "$d/stuck/cgroup.procs" || exit 5
echo FROZEN > "$d/stuck/freezer.state" || exit 6
echo frozen > /tmp/ready
exec sleep 3600`
	c, err := e.Client().ContainerCreate(ctx, &container.Config{Image: img, Cmd: []string{"sh", "-c", script}},
		&container.HostConfig{Privileged: true}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = e.ThawFrozen(context.Background(), c.ID)
		_ = e.Client().ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
	})
	if err := e.Client().ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		ins, err := e.Client().ContainerInspect(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !ins.State.Running {
			if ins.State.ExitCode == 3 {
				t.Skip("this host has no cgroup v1 freezer (cgroup v2): nothing can be left frozen this way")
			}
			t.Fatalf("the container exited %d before freezing its child", ins.State.ExitCode)
		}
		if _, err := e.Client().ContainerStatPath(ctx, c.ID, "/tmp/ready"); err == nil {
			break
		}
		if i > 100 {
			t.Fatal("the container never froze its child")
		}
		time.Sleep(100 * time.Millisecond)
	}
	err = e.Client().ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	if err == nil {
		t.Fatal("the engine removed a container with a frozen process: the failure ThawFrozen is for did not happen")
	}
	t.Logf("as expected, the engine could not remove it: %v", err)
	n, err := e.ThawFrozen(ctx, c.ID)
	if err != nil || n != 1 {
		t.Fatalf("ThawFrozen = %d, %v; want 1 cgroup thawed", n, err)
	}
	if err := e.Client().ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
		t.Fatalf("remove after thawing: %v", err)
	}
}
