package console

// The console's side of kindlab: provision/console's interfaces
// implemented with what `status`, `check` and `reset` use (state records,
// the kind provider, provision/check, provision/reset). Kept in this one
// file so it follows those verbs when they change.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	nodeutil "k8s.io/component-helpers/node/util"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/cluster"
	pconsole "github.com/kindlab/kindlab/provision/console"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/reset"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
	"github.com/kindlab/kindlab/provision/workload"
)

// backend serves the clusters kindlab recorded (of one fleet, if set) that
// run on the engine.
type backend struct {
	store    state.Store
	provider *cluster.Provider
	labs     cli.LabFlags
	fleet    string
	regImage string

	mu sync.Mutex
	// labsOf caches each cluster's resolved lab, keyed by its record's
	// creation time (a cluster recreated with another lab resolves again).
	labsOf map[string]resolvedLab
}

type resolvedLab struct {
	created time.Time
	r       *lab.Resolved
	rec     state.Record
}

// lab resolves a cluster's lab as check and reset do, from its record: a
// lab file outside the catalog is read from where `up` read it.
func (b *backend) lab(name string) (*lab.Resolved, state.Record, error) {
	rec, err := b.store.Load(name)
	if err != nil {
		return nil, rec, err
	}
	b.mu.Lock()
	c, ok := b.labsOf[name]
	b.mu.Unlock()
	if ok && c.created.Equal(rec.CreatedAt) {
		return c.r, rec, nil
	}
	cat, err := b.labs.Catalog()
	if err != nil {
		return nil, rec, err
	}
	if cat, err = running.RecordedCatalog(cat, rec); err != nil {
		return nil, rec, err
	}
	r, err := cat.Resolve(rec.Lab, lab.ResolveOptions{KnownChecks: check.Names()})
	if err != nil {
		return nil, rec, fmt.Errorf("cluster %s: %w", name, err)
	}
	// Check and reset with what the lab came up with.
	if err := r.OverrideImages(rec.ImageOverrides); err != nil {
		return nil, rec, err
	}
	b.mu.Lock()
	b.labsOf[name] = resolvedLab{created: rec.CreatedAt, r: r, rec: rec}
	b.mu.Unlock()
	return r, rec, nil
}

// Clusters lists the recorded clusters that run, with their last saved
// check results. A cluster whose lab cannot be resolved is still listed,
// without steps, its error as its description.
func (b *backend) Clusters(ctx context.Context) ([]pconsole.Cluster, error) {
	// A record kindlab did not write (state.ErrBadStateFile) is left out:
	// `kindlab status` names it.
	recs, _, err := b.store.List()
	if err != nil {
		return nil, err
	}
	running, err := b.provider.List()
	if err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	var out []pconsole.Cluster
	for _, rec := range recs {
		if (b.fleet != "" && rec.Fleet != b.fleet) || !slices.Contains(running, rec.Cluster) {
			continue
		}
		c := ClusterOf(rec, nil)
		if r, _, err := b.lab(rec.Cluster); err != nil {
			c.Description = err.Error()
		} else {
			c = ClusterOf(rec, r)
		}
		if saved, err := b.store.LoadChecks(rec.Cluster); err == nil {
			var rs []check.Result
			if json.Unmarshal(saved.Results, &rs) == nil {
				c.Results = convert(rs)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// ClusterOf is a recorded cluster as the console shows it: name, lab,
// fleet and context from its record, and, with its lab r (nil when the lab
// does not resolve), the lab's description, checks and instructions
// (console.Steps writes those for the cluster; `kindlab instructions`
// prints them).
func ClusterOf(rec state.Record, r *lab.Resolved) pconsole.Cluster {
	c := pconsole.Cluster{Name: rec.Cluster, Lab: rec.Lab, Fleet: rec.Fleet, Context: rec.Context, Checks: rec.Checks}
	if r == nil {
		return c
	}
	c.Description, c.Checks = r.Description, r.Checks
	for _, in := range r.Instructions {
		c.Instructions = append(c.Instructions, pconsole.Instruction{Lab: in.Lab, Text: in.Text})
	}
	return c
}

func convert(rs []check.Result) []pconsole.Result {
	out := make([]pconsole.Result, 0, len(rs))
	for _, r := range rs {
		out = append(out, pconsole.Result{Name: r.Name, Feature: r.Feature, Status: pconsole.Status(r.Status),
			Reason: r.Reason, Details: r.Details, Duration: r.Duration})
	}
	return out
}

// Check runs checks as `kindlab check LAB --name CLUSTER --only NAMES`
// does, and saves what a complete run found as that run would.
func (b *backend) Check(ctx context.Context, name string, names []string, progress func(pconsole.Result)) ([]pconsole.Result, error) {
	l, err := b.open(ctx, name)
	if err != nil {
		return nil, err
	}
	env := l.CheckEnv()
	env.Timeout, env.Parallelism = check.DefaultTimeout, check.DefaultParallelism
	env.Progress = func(res check.Result) { progress(convert([]check.Result{res})[0]) }
	results := check.Run(ctx, env, names)
	if ctx.Err() == nil {
		if err := saveChecks(b.store, name, results); err != nil {
			return nil, err
		}
	}
	return convert(results), nil
}

// saveChecks merges results into the cluster's last check run, as
// `kindlab check --only` does: the record keeps every check of the lab.
func saveChecks(store state.Store, cluster string, results []check.Result) error {
	var merged []check.Result
	if prev, err := store.LoadChecks(cluster); err == nil {
		if err := json.Unmarshal(prev.Results, &merged); err != nil {
			return fmt.Errorf("load check results of %s: %w", cluster, err)
		}
	} else if !errors.Is(err, state.ErrNotFound) {
		return err
	}
	for _, r := range results {
		if i := slices.IndexFunc(merged, func(o check.Result) bool { return o.Name == r.Name }); i >= 0 {
			merged[i] = r
		} else {
			merged = append(merged, r)
		}
	}
	return store.SaveChecks(cluster, merged)
}

// Reset is `kindlab reset LAB --name CLUSTER`: it holds the cluster's lock
// (failing at once, naming the holder, if an up, down or reset has it),
// writes reset's progress lines to progress, and saves the checks it ran.
func (b *backend) Reset(ctx context.Context, name string, progress io.Writer) ([]pconsole.Result, error) {
	lock, err := b.store.Lock(ctx, name, state.LockOptions{Status: progress})
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	progress = lock.Tee(progress)
	// Again under the lock: the lab may have been brought up anew since.
	b.mu.Lock()
	delete(b.labsOf, name)
	b.mu.Unlock()
	l, err := b.open(ctx, name)
	if err != nil {
		return nil, err
	}
	// reset.Run saves the checks it ran as the cluster's last run.
	res, err := reset.Run(ctx, l, reset.Options{Timeout: workload.DefaultTimeout, Status: progress})
	if err != nil {
		return nil, err
	}
	for _, ch := range res.Changes {
		fmt.Fprintf(progress, "   %s %s: %s\n", ch.Action, ch.Object, ch.Why)
	}
	return convert(res.Checks), nil
}

// open is the running lab of a cluster, as check and reset open it: its
// record, its lab with the images it came up with, its registry.
func (b *backend) open(ctx context.Context, name string) (*running.Lab, error) {
	cat, err := b.labs.Catalog()
	if err != nil {
		return nil, err
	}
	return running.Open(ctx, b.store, func() (*cluster.Provider, error) { return b.provider, nil },
		running.Options{Cluster: name, Catalog: cat, RegistryImage: b.regImage})
}

// Kubeconfig is kind's kubeconfig of the cluster.
func (b *backend) Kubeconfig(_ context.Context, name string) ([]byte, error) {
	return b.provider.KubeConfig(name)
}

// Nodes lists the cluster's nodes (zone from topology.kubernetes.io/zone)
// and the pods on each.
func (b *backend) Nodes(ctx context.Context, name string) ([]pconsole.Node, error) {
	h, err := b.provider.Connect(name)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(h.RESTConfig)
	if err != nil {
		return nil, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes of %s: %w", name, err)
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", name, err)
	}
	var out []pconsole.Node
	for _, n := range nodes.Items {
		node := pconsole.Node{Name: n.Name, Zone: n.Labels[corev1.LabelTopologyZone], Pods: []pconsole.Pod{}}
		if _, ok := n.Labels["node-role.kubernetes.io/control-plane"]; ok {
			node.Role = "control-plane"
		} else {
			node.Role = "worker"
		}
		_, ready := nodeutil.GetNodeCondition(&n.Status, corev1.NodeReady)
		node.Ready = ready != nil && ready.Status == corev1.ConditionTrue
		for _, p := range pods.Items {
			if p.Spec.NodeName != n.Name {
				continue
			}
			ready := false
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady {
					ready = c.Status == corev1.ConditionTrue
				}
			}
			node.Pods = append(node.Pods, pconsole.Pod{Namespace: p.Namespace, Name: p.Name, Phase: string(p.Status.Phase), Ready: ready})
		}
		out = append(out, node)
	}
	return out, nil
}

// Operations reads the clusters' lock files: the kindlab commands holding
// one now (their process still runs). Reading a lock file never takes the
// lock, so the console cannot make an up or down fail as busy.
func (b *backend) Operations(context.Context) ([]pconsole.Operation, error) {
	files, err := filepath.Glob(filepath.Join(filepath.Dir(b.store.LockFile("x")), "*.lock"))
	if err != nil {
		return nil, err
	}
	var out []pconsole.Operation
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var h state.Holder
		if json.Unmarshal(raw, &h) != nil || h.PID <= 0 || h.PID == os.Getpid() {
			continue
		}
		// The file keeps its last holder after it ends: only a live
		// process holds it (pids are of this machine: the lock is local).
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", h.PID)); err != nil {
			continue
		}
		cluster := strings.TrimSuffix(filepath.Base(f), ".lock")
		if b.fleet != "" {
			if rec, err := b.store.Load(cluster); err == nil && rec.Fleet != b.fleet {
				continue
			}
		}
		out = append(out, pconsole.Operation{Cluster: cluster, Command: h.Command, PID: h.PID, Since: h.Since})
	}
	return out, nil
}

// Progress reads what an operation's holder wrote into its cluster's
// progress file (state.Store.ProgressFile) from byte offset from on: what
// the console shows under that cluster as it happens. The file is the
// holder's; it is read as untrusted (state.ReadProgress: a bounded chunk,
// lines cut short, a regular file only, never waited on).
func (b *backend) Progress(_ context.Context, op pconsole.Operation, from int64) ([]string, int64, error) {
	return state.ReadProgress(b.store.ProgressFile(op.Cluster), from)
}

// The console follows the operations' progress through the backend.
var _ pconsole.ProgressSource = (*backend)(nil)
