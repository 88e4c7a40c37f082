// Package cluster creates, finds and deletes lab clusters through kind's own
// Go library, and gives other packages a handle to a running one.
package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	kindcluster "sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/log"

	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/render"
)

// ErrNoEngine means no container engine answered (engine.ErrNoEngine).
var ErrNoEngine = engine.ErrNoEngine

// ErrNodesExist is kind refusing to create a cluster because nodes of that
// name exist: someone else (plain kind, or kindlab with another state
// directory) created it after the caller found the name free. Those nodes
// are not the caller's to delete.
var ErrNodesExist = errors.New("its nodes exist already")

// kindNodesExist is the start of kind's error for that (v0.31
// pkg/cluster/internal/create alreadyExists), which kind returns before
// creating or deleting anything.
const kindNodesExist = "node(s) already exist for a cluster with the name"

// Provider is kind's provider of the command's engine.
type Provider struct {
	eng  *engine.Engine
	kind *kindcluster.Provider
}

// New checks that the engine answers and returns a provider over it, using
// the engine's kind provider (and so its kind logger). kind shells out to
// the provider's CLI (docker, or podman): docker honours DOCKER_HOST and
// docker contexts, podman CONTAINER_HOST, as the engine's own resolution
// does. Without an engine it fails in one line that wraps ErrNoEngine,
// names the endpoint and says how to fix it.
func New(ctx context.Context, e *engine.Engine) (*Provider, error) {
	if cli := e.Provider(); cli != "" {
		if _, err := exec.LookPath(cli); err != nil {
			// kind drives the CLI, so it is needed even where the API answers.
			return nil, fmt.Errorf("%w: the %s CLI is not on PATH (install %s, then run `kindlab doctor`)", ErrNoEngine, cli, cli)
		}
	}
	if err := e.Ping(ctx); err != nil {
		return nil, err
	}
	return &Provider{eng: e, kind: e.Kind()}, nil
}

// WithLogger is the same provider reporting kind's progress to l (each
// member of a fleet has its own status stream).
func (p *Provider) WithLogger(l log.Logger) *Provider {
	return &Provider{eng: p.eng, kind: p.eng.KindWithLogger(l)}
}

// Engine is the engine the provider drives.
func (p *Provider) Engine() *engine.Engine { return p.eng }

// CreateOptions shape a create.
type CreateOptions struct {
	// Retain keeps the nodes of a failed create for debugging (kind --retain).
	Retain bool
	// Wait is how long to wait for the control plane to be Ready.
	Wait time.Duration
	// Kubeconfig is the file to merge the context into; "" means kind's
	// default ($KUBECONFIG or ~/.kube/config).
	Kubeconfig string
}

// Exists reports whether a kind cluster of that name exists.
func (p *Provider) Exists(name string) (bool, error) {
	names, err := p.kind.List()
	if err != nil {
		return false, fmt.Errorf("list kind clusters: %w", err)
	}
	for _, n := range names {
		if n == name {
			return true, nil
		}
	}
	return false, nil
}

// ListNodes returns kind's handles to a cluster's node containers, also
// while kind is still creating it (a Handle needs the kubeconfig, which
// exists only at the end).
func (p *Provider) ListNodes(name string) ([]nodes.Node, error) {
	ns, err := p.kind.ListNodes(name)
	if err != nil {
		return nil, fmt.Errorf("list nodes of %s: %w", name, err)
	}
	return ns, nil
}

// List returns every kind cluster on the engine.
func (p *Provider) List() ([]string, error) { return p.kind.List() }

// Create creates the cluster a plan describes, from its v1alpha4 config
// alone: every node keeps the image the config gives it. (kind's
// CreateWithNodeImage would overwrite each node's image with one reference,
// pkg/cluster/internal/create fixupOptions, undoing a kit's local alias for
// a digest-pinned image.) kind removes the nodes of a failed create itself
// unless Retain is set.
func (p *Provider) Create(plan *render.Plan, opts CreateOptions) error {
	err := p.kind.Create(plan.ClusterName,
		kindcluster.CreateWithV1Alpha4Config(plan.Config),
		kindcluster.CreateWithRetain(opts.Retain),
		kindcluster.CreateWithWaitForReady(opts.Wait),
		kindcluster.CreateWithKubeconfigPath(opts.Kubeconfig),
		kindcluster.CreateWithDisplayUsage(false),
		kindcluster.CreateWithDisplaySalutation(false),
	)
	if err != nil && strings.Contains(err.Error(), kindNodesExist) {
		return fmt.Errorf("create cluster %s: %w (kind: %v); another kind or kindlab created it meanwhile", plan.ClusterName, ErrNodesExist, err)
	}
	if err != nil {
		return fmt.Errorf("create cluster %s: %w", plan.ClusterName, err)
	}
	return nil
}

// Delete removes the cluster's nodes and its kubeconfig context. A node the
// engine cannot kill because a pod's cgroup inside it was left frozen
// (engine.ThawFrozen says when) is thawed and the delete tried once more.
func (p *Provider) Delete(ctx context.Context, name, kubeconfig string) error {
	err := p.kind.Delete(name, kubeconfig)
	if err == nil {
		return nil
	}
	if p.thawNodes(ctx, name) > 0 {
		if err = p.kind.Delete(name, kubeconfig); err == nil {
			return nil
		}
	}
	return fmt.Errorf("delete cluster %s: %w", name, err)
}

// thawNodes thaws what is frozen in the cluster's node containers and
// returns how many cgroups it thawed; what it cannot read counts as none.
func (p *Provider) thawNodes(ctx context.Context, name string) int {
	cs, err := p.Engine().KindNodeContainers(ctx)
	if err != nil {
		return 0
	}
	n := 0
	for _, c := range cs {
		if c.Labels[engine.KindClusterLabel] != name {
			continue
		}
		if k, err := p.Engine().ThawFrozen(ctx, c.ID); err == nil {
			n += k
		}
	}
	return n
}

// Handle is a running cluster: a client config and a way onto its nodes.
type Handle struct {
	Name       string
	RESTConfig *rest.Config
	provider   *Provider
}

// Connect finds a running cluster by name on the engine.
func Connect(ctx context.Context, e *engine.Engine, name string) (*Handle, error) {
	p, err := New(ctx, e)
	if err != nil {
		return nil, err
	}
	return p.Connect(name)
}

// KubeConfig is a running cluster's kubeconfig file (YAML) as kind writes
// it, with its context kind-NAME and the API server's address as seen from
// this machine (external, not the node network's).
func (p *Provider) KubeConfig(name string) ([]byte, error) {
	kc, err := p.kind.KubeConfig(name, false)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig of %s: %w", name, err)
	}
	return []byte(kc), nil
}

// ErrNotRunning is wrapped by Connect's error for a cluster that has no
// nodes on this provider (errors.Is).
var ErrNotRunning = errors.New("is not running")

// Connect finds a running cluster by name on this provider.
func (p *Provider) Connect(name string) (*Handle, error) {
	// kind lists the cluster's nodes to find its control plane anyway; a
	// list of its own first cost every check and reset a docker call.
	kubeconfig, err := p.kind.KubeConfig(name, false)
	if err != nil {
		ok, xerr := p.Exists(name)
		if xerr != nil {
			return nil, xerr
		}
		if !ok {
			return nil, fmt.Errorf("cluster %q %w (start it with `kindlab up`, list with `kindlab status`)", name, ErrNotRunning)
		}
		return nil, fmt.Errorf("kubeconfig of %s: %w", name, err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig([]byte(kubeconfig))
	if err != nil {
		return nil, fmt.Errorf("kubeconfig of %s: %w", name, err)
	}
	// client-go's default of 5 requests a second (burst 10) is a limiter on
	// this side, shared by every client made from this config: the checks
	// running concurrently and the workloads' apply would queue behind one
	// another on it. The apiserver protects itself with priority and
	// fairness; reset and the test apiserver's clients use the same order.
	cfg.QPS, cfg.Burst = 100, 200
	return &Handle{Name: name, RESTConfig: cfg, provider: p}, nil
}

// KubeConfig is the cluster's kubeconfig as kind writes it for this
// machine (context kind-<name>, the API server at its published address),
// for programs that take a kubeconfig file (kubectl, upstream's e2e.test).
// It fails for APIServerOnly.
func (h *Handle) KubeConfig() (string, error) {
	if h.provider == nil {
		return "", fmt.Errorf("kubeconfig of %s: no kind provider (an API server alone)", h.Name)
	}
	kc, err := h.provider.kind.KubeConfig(h.Name, false)
	if err != nil {
		return "", fmt.Errorf("kubeconfig of %s: %w", h.Name, err)
	}
	return kc, nil
}

// APIServerOnly is a cluster reached through its API server alone (an
// apiserver without nodes, as in tests): Engine is nil and KindNodes fails.
func APIServerOnly(name string, cfg *rest.Config) *Handle {
	return &Handle{Name: name, RESTConfig: cfg}
}

// Engine is the engine the cluster runs on; nil for APIServerOnly.
func (h *Handle) Engine() *engine.Engine {
	if h.provider == nil {
		return nil
	}
	return h.provider.eng
}

// KindNodes returns kind's node handles (for packages that use kind's nodeutils).
func (h *Handle) KindNodes() ([]nodes.Node, error) {
	if h.provider == nil {
		return nil, fmt.Errorf("cluster %s: no nodes to reach (API server only)", h.Name)
	}
	ns, err := h.provider.kind.ListNodes(h.Name)
	if err != nil {
		return nil, fmt.Errorf("list nodes of %s: %w", h.Name, err)
	}
	return ns, nil
}

// Nodes lists the node names (which are also the Kubernetes node names),
// sorted: kind lists them in the engine's order, which changes from one
// call to the next.
func (h *Handle) Nodes(ctx context.Context) ([]string, error) {
	ns, err := h.KindNodes()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ns))
	for _, n := range ns {
		out = append(out, n.String())
	}
	sort.Strings(out)
	return out, nil
}

// Exec runs a command on a node and returns its standard output.
func (h *Handle) Exec(ctx context.Context, node string, stdin io.Reader, cmd ...string) ([]byte, error) {
	ns, err := h.KindNodes()
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		if n.String() != node {
			continue
		}
		var out, errOut bytes.Buffer
		c := n.CommandContext(ctx, cmd[0], cmd[1:]...).SetStdout(&out).SetStderr(&errOut)
		if stdin != nil {
			c.SetStdin(stdin)
		}
		if err := c.Run(); err != nil {
			return out.Bytes(), fmt.Errorf("%s on %s: %w: %s", strings.Join(cmd, " "), node, err, strings.TrimSpace(errOut.String()))
		}
		return out.Bytes(), nil
	}
	return nil, fmt.Errorf("cluster %s has no node %q", h.Name, node)
}
