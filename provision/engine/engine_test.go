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
// option first, else KIND_EXPERIMENTAL_PROVIDER); only docker is driven.
func TestOpenChoosesTheProviderOnce(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
	t.Setenv(engine.ProviderEnv, "")
	var upe *engine.UnsupportedProviderError
	if _, err := engine.Open(context.Background(), engine.WithProvider("podman")); !errors.As(err, &upe) || upe.Value != "podman" {
		t.Errorf("WithProvider(podman): %v", err)
	}
	t.Setenv(engine.ProviderEnv, "nerdctl")
	if _, err := engine.Open(context.Background()); !errors.As(err, &upe) || upe.Value != "nerdctl" {
		t.Errorf("%s=nerdctl: %v", engine.ProviderEnv, err)
	}
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
	if err := engine.Unreachable(&engine.UnsupportedProviderError{Value: "podman"}); !errors.As(err, &upe) {
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
