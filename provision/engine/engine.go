// Package engine is kindlab's one seam to the container engine: the only
// package that resolves where the engine is, builds Docker Engine API
// clients, or builds kind providers.
//
// A command opens one Engine (Open), hands it (or a small interface of the
// methods it needs) to every package that touches containers, and closes
// it when it ends. So one command resolves the endpoint once (DOCKER_HOST,
// DOCKER_CONTEXT, the config's current context, the local socket: see
// Resolve), holds one Engine API client (over ssh:// each client is an ssh
// process per connection, ended by Close), and one kind provider that
// drives the same engine through the docker CLI, which resolves it the same
// way. Nothing else may call client.NewClientWithOpts or
// kindcluster.NewProvider.
//
// It is also where the second engine lands: the provider choice
// (WithProvider, from kindlab's --provider flag, else ProviderEnv) is read
// in Open and nowhere else. docker and podman are driven (podman.go: kind's
// cluster.ProviderWithPodman for the nodes, podman's Docker-compatible API
// service for kindlab's own calls); others are refused with
// UnsupportedProviderError.
package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	kindcluster "sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/log"
)

// ErrNoEngine means no container engine answered (or none could be
// found): `up` exits 4 on it.
var ErrNoEngine = errors.New("no container engine reachable")

// ProviderDocker is kind's default node provider.
const ProviderDocker = "docker"

// KindRoleLabel is the label kind puts on every node container
// (sigs.k8s.io/kind pkg/cluster/internal/providers/docker/constants.go,
// nodeRoleLabelKey); KindClusterLabel names the node's cluster
// (clusterLabelKey).
const (
	KindRoleLabel    = "io.x-k8s.kind.role"
	KindClusterLabel = "io.x-k8s.kind.cluster"
)

// Engine is one command's connection to the container engine. Its methods
// are safe for concurrent use (the Engine API client and kind's provider
// are).
type Engine struct {
	ep       Endpoint
	provider string
	logger   log.Logger
	client   *client.Client
	kind     *kindcluster.Provider
	kindOpt  kindcluster.ProviderOption

	closeOnce sync.Once
	closeErr  error

	hostIPOnce sync.Once
	hostIP     string
	hostIPErr  error
}

type options struct {
	logger   log.Logger
	endpoint *Endpoint
	provider string
}

// Option shapes Open, as kind's ProviderOption and crane's Option do.
type Option func(*options)

// WithKindLogger is the logger kind's provider reports to (kind's CLI
// logger for verbs that show kind's progress); the default discards.
func WithKindLogger(l log.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithEndpoint uses ep instead of resolving one from the environment: for
// tests of a given endpoint, and callers that resolved it already.
func WithEndpoint(ep Endpoint) Option { return func(o *options) { o.endpoint = &ep } }

// WithProvider chooses the node provider, as kindlab's --provider flag
// does; "" means ProviderEnv (KIND_EXPERIMENTAL_PROVIDER), else docker.
// Open refuses any but Providers.
func WithProvider(name string) Option { return func(o *options) { o.provider = name } }

// Open resolves the engine once and builds its Engine API client and kind
// provider. It does not contact the engine (Ping does); an endpoint that
// cannot be resolved or a provider kindlab does not drive
// (*UnsupportedProviderError) is an error. Close the Engine when done.
func Open(ctx context.Context, opts ...Option) (*Engine, error) {
	o := options{logger: log.NoopLogger{}}
	for _, opt := range opts {
		opt(&o)
	}
	prov, err := ChooseProvider(o.provider)
	if err != nil {
		return nil, err
	}
	kindOpt := kindcluster.ProviderWithDocker()
	if prov == ProviderPodman {
		kindOpt = kindcluster.ProviderWithPodman()
	}
	var ep Endpoint
	switch {
	case o.endpoint != nil:
		ep = *o.endpoint
	case prov == ProviderPodman:
		if ep, err = resolvePodman(); err != nil {
			return nil, err
		}
	default:
		if ep, err = resolve(); err != nil {
			return nil, err
		}
	}
	c, err := ep.newClient()
	if err != nil {
		return nil, err
	}
	return &Engine{
		ep:       ep,
		provider: prov,
		logger:   o.logger,
		client:   c,
		kind:     kindcluster.NewProvider(kindOpt, kindcluster.ProviderWithLogger(o.logger)),
		kindOpt:  kindOpt,
	}, nil
}

// Close closes the Engine API client (ending its ssh processes for an
// ssh:// engine). It is idempotent; kind's provider holds nothing to close.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() { e.closeErr = e.client.Close() })
	return e.closeErr
}

// Endpoint is where the engine is and what chose it.
func (e *Engine) Endpoint() Endpoint { return e.ep }

// HostIP is Endpoint().HostIP(), asked once per Engine (it may run
// `ssh -G` and a DNS lookup): the address of a remote engine's host.
func (e *Engine) HostIP() (string, error) {
	e.hostIPOnce.Do(func() { e.hostIP, e.hostIPErr = e.ep.HostIP() })
	return e.hostIP, e.hostIPErr
}

// Provider is the node provider's name: ProviderDocker or ProviderPodman.
// It is also the name of the CLI kind runs for it.
func (e *Engine) Provider() string { return e.provider }

// Client is the one Engine API client. Packages that use it declare the
// few methods they need as an interface (registry.Docker, kit.Docker) and
// take that.
func (e *Engine) Client() *client.Client { return e.client }

// Kind is the one kind provider, reporting to Open's kind logger.
func (e *Engine) Kind() *kindcluster.Provider { return e.kind }

// KindWithLogger is a kind provider for the same engine reporting to l:
// for work run side by side that reports separately (each member of a
// fleet has its own status stream). kind's provider keeps no state beyond
// its logger, so this is as cheap as sharing Kind().
func (e *Engine) KindWithLogger(l log.Logger) *kindcluster.Provider {
	if l == nil {
		return e.kind
	}
	return kindcluster.NewProvider(e.kindOpt, kindcluster.ProviderWithLogger(l))
}

// Ping asks the engine whether it answers, within 20 seconds. Its error
// wraps ErrNoEngine, names the endpoint and says how to fix it, in one line.
func (e *Engine) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := e.client.Ping(ctx); err != nil {
		fix := "start the Docker daemon, or point DOCKER_HOST at one"
		switch {
		case e.ep.Podman && !e.ep.Remote():
			fix = "start podman's API service: `podman system service --time=0 &` (or `systemctl start podman.socket`), or point " + PodmanHostEnv + " at one"
		case e.ep.Podman:
			fix = "check that `podman system service` runs there and that `podman --remote version` reaches it from here"
		case e.ep.Remote():
			fix = "check that the engine runs there and that `docker version` reaches it from here"
		}
		return fmt.Errorf("%w at %s: %s (%s)", ErrNoEngine, e.ep, FirstLine(err.Error()), fix)
	}
	return nil
}

// Unreachable is how a failed Open is reported where an engine is needed:
// wrapping ErrNoEngine, in one line, with the fix.
func Unreachable(err error) error {
	var upe *UnsupportedProviderError
	if errors.As(err, &upe) {
		return err
	}
	var pe *podmanEndpointError
	if errors.As(err, &pe) {
		return fmt.Errorf("%w: %s", ErrNoEngine, FirstLine(err.Error()))
	}
	return fmt.Errorf("%w: %s (fix DOCKER_HOST or the docker context, see `docker context ls`)", ErrNoEngine, FirstLine(err.Error()))
}

// ImageID returns an image's ID (sha256:…) and repo digests in the engine,
// asking for at most 30 seconds; the error is the engine's (errdefs
// NotFound when it does not have ref).
func (e *Engine) ImageID(ctx context.Context, ref string) (string, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	img, err := e.client.ImageInspect(ctx, ref)
	if err != nil {
		return "", nil, err
	}
	return img.ID, img.RepoDigests, nil
}

// KindNodeContainers lists every kind node container on the engine,
// running or not, of any cluster (those with KindRoleLabel): what
// `docker ps -a --filter label=io.x-k8s.kind.role` shows, within 30 seconds.
func (e *Engine) KindNodeContainers(ctx context.Context) ([]container.Summary, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cs, err := e.client.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", KindRoleLabel))})
	if err != nil {
		return nil, fmt.Errorf("list kind node containers on %s: %w", e.ep, err)
	}
	return cs, nil
}

// Publishers names the running containers that publish host port port
// (any protocol, any host IP), within 30 seconds: `docker ps --filter
// publish=PORT`. The filter is applied here, not by the engine: podman's
// Docker-compatible API refuses it ("publish is an invalid filter",
// podman 4.3).
func (e *Engine) Publishers(ctx context.Context, port int) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cs, err := e.client.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list containers on %s: %w", e.ep, err)
	}
	var names []string
	for _, c := range cs {
		for _, p := range c.Ports {
			if int(p.PublicPort) == port && len(c.Names) > 0 {
				names = append(names, strings.TrimPrefix(c.Names[0], "/"))
				break
			}
		}
	}
	return names, nil
}

// FirstLine is s up to its first newline, trimmed: errors are one line.
func FirstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// RunOnce runs cmd in a new container of image, as `docker run --rm
// --entrypoint cmd[0] image cmd[1:]…` does, and returns its standard
// output, trimmed. The container gets no network, is removed afterwards,
// and the whole run is bounded by 30 seconds. A non-zero exit is an error
// carrying the first line of its standard error. Nothing is pulled: an
// image the engine lacks is the engine's NotFound error.
func (e *Engine) RunOnce(ctx context.Context, image string, cmd ...string) (string, error) {
	if len(cmd) == 0 {
		return "", errors.New("run: no command")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := e.client
	created, err := c.ContainerCreate(ctx,
		&container.Config{Image: image, Entrypoint: cmd[:1], Cmd: cmd[1:], NetworkDisabled: true, Labels: map[string]string{"dev.kindlab.run": "once"}},
		&container.HostConfig{}, nil, nil, "")
	if err != nil {
		return "", fmt.Errorf("run %s in %s: %w", cmd[0], image, err)
	}
	defer func() {
		// Removed even when the caller gave up: a left container would be
		// the user's to find.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer rcancel()
		_ = c.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true})
	}()
	waitC, errC := c.ContainerWait(ctx, created.ID, container.WaitConditionNextExit)
	if err := c.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return "", fmt.Errorf("run %s in %s: %w", cmd[0], image, err)
	}
	var code int64
	select {
	case r := <-waitC:
		if r.Error != nil {
			return "", fmt.Errorf("run %s in %s: %s", cmd[0], image, r.Error.Message)
		}
		code = r.StatusCode
	case err := <-errC:
		return "", fmt.Errorf("run %s in %s: %w", cmd[0], image, err)
	}
	logs, err := c.ContainerLogs(ctx, created.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return "", fmt.Errorf("run %s in %s: logs: %w", cmd[0], image, err)
	}
	defer logs.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, logs); err != nil {
		return "", fmt.Errorf("run %s in %s: logs: %w", cmd[0], image, err)
	}
	if code != 0 {
		msg := FirstLine(stderr.String())
		if msg == "" {
			msg = fmt.Sprintf("exit status %d", code)
		}
		return "", fmt.Errorf("%s", msg)
	}
	return strings.TrimSpace(stdout.String()), nil
}
