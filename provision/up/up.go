// Package up brings a lab up: cluster, then the lifecycle steps (CRI shim →
// registry → artifacts → workloads → checks, package lifecycle), each a
// small step with its own status line, the way kind's create is a pipeline
// of actions. Running it again converges instead of
// duplicating: an existing cluster of the same lab is reused.
package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/down"
	"github.com/kindlab/kindlab/provision/lifecycle"
	"github.com/kindlab/kindlab/provision/progress"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
)

// Options shape one `up`.
type Options struct {
	Plan  *render.Plan
	Store state.Store
	// Retain keeps a failed lab's nodes for debugging instead of deleting them.
	Retain bool
	// Wait is how long to wait for every node to be Ready
	// (lifecycle.WaitReady).
	Wait time.Duration
	// Kubeconfig is the file the context is merged into ("" = kind's default).
	Kubeconfig string
	// SkipChecks stops after the workloads are applied.
	SkipChecks bool
	// Status receives one line per step.
	Status io.Writer
	// Fleet is recorded with a cluster this up creates (see state.Record).
	Fleet string
	// Lock is the cluster's lock when the caller holds it already (a
	// fleet holds its members', a replay its cluster's); nil: Run takes it
	// before it looks at anything, waiting up to WaitLock (see Store.Lock).
	Lock     *state.Lock
	WaitLock time.Duration
}

// Result is what an up did.
type Result struct {
	Cluster string         `json:"cluster"`
	Context string         `json:"kubeconfigContext"`
	Created bool           `json:"created"`
	Checks  []check.Result `json:"checks,omitempty"`
	// Lab is the lab now running on the cluster (for replay, which goes on
	// to read its pins); nil when Run failed.
	Lab *running.Lab `json:"-"`
}

// Run brings the lab up on a provider. It holds the cluster's lock
// throughout, so a concurrent up, down, reset or replay of the same cluster
// either waits or fails at once with a *state.BusyError having touched
// nothing. A failed Run removes only what it created itself: its record,
// files and nodes, never a cluster that existed before it.
func Run(ctx context.Context, p *cluster.Provider, opts Options) (res *Result, err error) {
	plan := opts.Plan
	lock, err := holdLock(ctx, plan.ClusterName, opts)
	if err != nil {
		return nil, err
	}
	if opts.Lock == nil {
		defer lock.Unlock()
	}
	opts.Lock = lock
	opts.Kubeconfig = kubeconfigFor(opts)
	// Every status line also goes to the cluster's progress file, where
	// `kindlab console` follows the up as it happens.
	opts.Status = lock.Tee(opts.Status)
	res = &Result{Cluster: plan.ClusterName, Context: plan.Context}
	st := &progress.Status{W: opts.Status}

	switch rec, err := opts.Store.Load(plan.ClusterName); {
	case err == nil:
		if err := rec.OnProvider(p.Engine().Provider()); err != nil {
			return nil, err
		}
	case !errors.Is(err, state.ErrNotFound):
		// A record kindlab did not write (state.ErrBadStateFile) is not
		// overwritten: the user decides what it was.
		return nil, err
	}
	exists, err := p.Exists(plan.ClusterName)
	if err != nil {
		return nil, err
	}
	if exists {
		rec, err := opts.Store.Load(plan.ClusterName)
		switch {
		case errors.Is(err, state.ErrNotFound):
			return nil, fmt.Errorf("a kind cluster named %q exists but kindlab did not create it; pick another name with --name", plan.ClusterName)
		case err != nil:
			return nil, err
		case rec.Lab != plan.Lab:
			return nil, fmt.Errorf("cluster %q already runs lab %q, not %q; pick another name with --name or `kindlab down %s` first",
				plan.ClusterName, rec.Lab, plan.Lab, plan.ClusterName)
		}
		st.Done("Reusing cluster %s (lab %s) ♻️", plan.ClusterName, rec.Lab)
		// What this up runs with is what later checks must use.
		rec.ImageOverrides = plan.ImageOverrides
		if err := opts.Store.Save(rec); err != nil {
			return nil, err
		}
	} else {
		// Refused before anything exists: nothing to clean up.
		if err := checkCRIShim(ctx, p.Engine(), plan); err != nil {
			return nil, err
		}
		// From here on a failure must not leave a half-made lab behind: take
		// it down as `kindlab down` would (cluster, context, record, and the
		// registry if no other cluster uses it), even after Ctrl-C. Only
		// what this up made, though: nothing before its record is saved,
		// and not the nodes of a cluster someone else (plain kind, another
		// state directory) created after the check above.
		var made creation
		defer func() {
			if err == nil || opts.Retain || !made.recorded {
				return
			}
			var derr error
			if made.foreignNodes {
				derr = opts.Store.Remove(plan.ClusterName)
			} else {
				var dres *down.Result
				dres, derr = down.Run(context.WithoutCancel(ctx), p, opts.Store,
					down.Options{Cluster: plan.ClusterName, Kubeconfig: opts.Kubeconfig, Lock: opts.Lock})
				// What was kept (the registry's data volume) is said, as
				// `kindlab down` says it, not left behind unnamed.
				if dres != nil && opts.Status != nil {
					for _, line := range dres.Removed {
						fmt.Fprintf(opts.Status, "Cleaned up: %s\n", line)
					}
				}
			}
			if derr != nil {
				err = fmt.Errorf("%w (and cleaning up failed: %v)", err, derr)
			}
		}()
		if err := createCluster(ctx, p, plan, opts, st, &made); err != nil {
			return nil, err
		}
		res.Created = true
	}

	h, err := p.Connect(plan.ClusterName)
	if err != nil {
		return nil, err
	}
	rec, err := opts.Store.Load(plan.ClusterName)
	if err != nil {
		return nil, err
	}
	lc := &lifecycle.Context{Lab: running.FromPlan(plan, h, opts.Store, &rec), Status: st}
	// kind's create does not wait for the control plane (createCluster):
	// WaitReady starts that wait, the CRI shim is checked, the registry
	// wired and the artifacts pushed meanwhile, and the workloads are
	// applied once it is Ready, while the workers get Ready (Run waits for
	// them too). A reused cluster is Ready already.
	steps := []lifecycle.Step{lifecycle.WaitReady{Wait: opts.Wait}, criShimStep{logDir: opts.Store.LogDir(plan.ClusterName)},
		lifecycle.WireRegistry{}, lifecycle.PushArtifacts{}}
	if opts.SkipChecks {
		steps = append(steps, lifecycle.ApplyWorkloads{})
	} else {
		// Each check starts as soon as its own workload is ready.
		steps = append(steps, lifecycle.ApplyWorkloads{Checks: &lifecycle.RunChecks{Parallelism: CheckParallelism}})
	}
	if err := lifecycle.Run(ctx, lc, steps...); err != nil {
		return nil, err
	}
	res.Checks, res.Lab = lc.Checks, lc.Lab
	return res, nil
}

// CheckParallelism is how many checks up runs at once: more than check's
// and reset's default (check.DefaultParallelism), because in up the checks
// mostly wait for what the cluster does anyway (nodes joining, pods
// pulling and starting), and with four slots the API-only checks, slowed
// by the joining nodes, held slots that checks waiting on their pods
// needed. Checks that collide (check's declared resources) still never
// overlap.
const CheckParallelism = 8

// kubeconfigFor is the file kind writes the cluster's context to, as the
// record must name it for down: opts.Kubeconfig, else with $KUBECONFIG set
// the file of it client-go's rule picks, which is kind's (kubectl's: the
// only file, else the first that exists, else the last; kind v0.31
// pkg/cluster/internal/kubeconfig pathForMerge), made absolute. "" (kind's
// default, ~/.kube/config) without $KUBECONFIG, and for a fleet's member,
// whose recorded kubeconfig down removes when it is left empty (a
// --kubeconfig-dir file, never the user's own).
func kubeconfigFor(opts Options) string {
	if opts.Kubeconfig != "" || opts.Fleet != "" || os.Getenv(clientcmd.RecommendedConfigPathEnvVar) == "" {
		return opts.Kubeconfig
	}
	file := clientcmd.NewDefaultPathOptions().GetDefaultFilename()
	if abs, err := filepath.Abs(file); err == nil {
		file = abs
	}
	return file
}

// holdLock returns the cluster's lock: the caller's, or a new one.
func holdLock(ctx context.Context, cluster string, opts Options) (*state.Lock, error) {
	if opts.Lock != nil {
		if opts.Lock.Cluster() != cluster {
			return nil, fmt.Errorf("up %s: holding the lock of cluster %s instead", cluster, opts.Lock.Cluster())
		}
		return opts.Lock, nil
	}
	return opts.Store.Lock(ctx, cluster, state.LockOptions{Wait: opts.WaitLock, Status: opts.Status})
}

// creation is what createCluster got to, for cleaning up after it.
type creation struct {
	// recorded: this up saved the cluster's record (and may have written
	// its files, started the registry and created nodes).
	recorded bool
	// foreignNodes: kind refused because nodes of that name appeared
	// meanwhile; they are not this up's to delete.
	foreignNodes bool
}

// LabSource is a lab's source as a record keeps it: a lab file's path made
// absolute, so that check, reset and the console read it from any
// directory (running.RecordedCatalog still reads older records' relative
// paths from where they were written); "builtin:NAME" as it is.
func LabSource(src string) string {
	if src == "" || strings.HasPrefix(src, "builtin:") || filepath.IsAbs(src) {
		return src
	}
	if abs, err := filepath.Abs(src); err == nil {
		return abs
	}
	return src
}

// createCluster records the lab, starts the registry, then has kind create
// the nodes. The registry comes first because it does not need the cluster:
// a registry that cannot start (its port taken) fails in a second, before a
// minute of node creation.
func createCluster(ctx context.Context, p *cluster.Provider, plan *render.Plan, opts Options, st *progress.Status, made *creation) error {
	rec := state.Record{
		Cluster:        plan.ClusterName,
		Lab:            plan.Lab,
		LabSource:      LabSource(plan.Resolved.Source),
		NodeImage:      plan.NodeImage,
		Context:        plan.Context,
		Kubeconfig:     opts.Kubeconfig,
		Checks:         plan.Checks,
		ImageOverrides: plan.ImageOverrides,
		CreatedAt:      time.Now().UTC(),
		Fleet:          opts.Fleet,
		Provider:       p.Engine().Provider(),
	}
	if plan.Registry != nil {
		rec.Registry = true
		rec.RegistryPort = plan.Registry.HostPort
	}
	// Recorded first, so that cleaning up a failure finds everything to remove.
	if err := opts.Store.Save(rec); err != nil {
		return err
	}
	made.recorded = true
	if plan.Registry != nil {
		st.Start("Starting local registry on 127.0.0.1:%d 🗄", plan.Registry.HostPort)
		rs, err := registry.Ensure(ctx, registry.Options{HostPort: plan.Registry.HostPort, Image: plan.Registry.Image, Docker: p.Engine().Client()})
		if err != nil {
			st.Fail()
			return err
		}
		if !rs.Created && !rs.Started {
			// The registry is shared by every lab: saying it was started
			// when another lab's was found running misleads.
			st.Label = fmt.Sprintf("Local registry on 127.0.0.1:%d already running 🗄", plan.Registry.HostPort)
		}
		st.End(true)
		// Behind a proxy kind hands HTTP(S)_PROXY to the nodes, and their
		// containerd would send pulls from the local registry and its
		// caches to the proxy too: those names join the NO_PROXY kind
		// extends (it reads this process's).
		caches, err := registry.Proxies(ctx, registry.Options{Docker: p.Engine().Client()})
		if err != nil {
			return err
		}
		ups := make([]string, 0, len(caches))
		for up := range caches {
			ups = append(ups, up)
		}
		proxy, added, err := registry.SetNoProxyForNodes(ups)
		if err != nil {
			return fmt.Errorf("set NO_PROXY for the nodes: %w", err)
		}
		if proxy != "" && len(added) > 0 {
			st.Done("Proxy %s: the nodes reach the local registry directly (NO_PROXY += %s) 🔀", proxy, strings.Join(added, ","))
		}
	}
	cfg, err := deliverNodeFiles(ctx, p.Engine().Client(), plan, st)
	if err != nil {
		return err
	}
	kindPlan := *plan
	kindPlan.Config = cfg
	var watch *shimWatch
	if plan.CRIShim != nil {
		watch = watchCRIShim(ctx, p, plan.ClusterName, opts.Store.LogDir(plan.ClusterName))
	}
	// No wait in kind: lifecycle.WaitReady waits for the control plane
	// while the registry is wired and the artifacts pushed.
	err = p.Create(&kindPlan, cluster.CreateOptions{Retain: opts.Retain, Kubeconfig: opts.Kubeconfig})
	made.foreignNodes = errors.Is(err, cluster.ErrNodesExist)
	if watch != nil {
		// A shim that failed is why kind's create failed (the watch ended
		// it): say that, not kind's "container is not running".
		if serr := watch.stop(); serr != nil {
			return serr
		}
	}
	return err
}
