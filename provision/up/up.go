// Package up brings a lab up: cluster → registry → artifacts → workloads →
// checks, each a small step with its own status line, the way kind's create
// is a pipeline of actions. Running it again converges instead of
// duplicating: an existing cluster of the same lab is reused.
package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/down"
	"github.com/kindlab/kindlab/provision/kit"
	"github.com/kindlab/kindlab/provision/progress"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
)

// Options shape one `up`.
type Options struct {
	Plan  *render.Plan
	Store state.Store
	// Retain keeps a failed lab's nodes for debugging instead of deleting them.
	Retain bool
	// Wait is how long to wait for the control plane to be Ready.
	Wait time.Duration
	// Kubeconfig is the file the context is merged into ("" = kind's default).
	Kubeconfig string
	// SkipChecks stops after the workloads are applied.
	SkipChecks bool
	// RegistryImage overrides the registry image (e.g. one built offline).
	RegistryImage string
	// Status receives one line per step.
	Status io.Writer
	// Fleet is recorded with a cluster this up creates (see state.Record).
	Fleet string
}

// Result is what an up did.
type Result struct {
	Cluster string         `json:"cluster"`
	Context string         `json:"kubeconfigContext"`
	Created bool           `json:"created"`
	Checks  []check.Result `json:"checks,omitempty"`
}

// Run brings the lab up on a provider.
func Run(ctx context.Context, p *cluster.Provider, opts Options) (res *Result, err error) {
	plan := opts.Plan
	if opts.RegistryImage == "" {
		opts.RegistryImage = registry.DefaultImage
	}
	opts.RegistryImage = kit.LocalImage(ctx, nil, opts.Store, opts.RegistryImage)
	res = &Result{Cluster: plan.ClusterName, Context: plan.Context}
	st := &progress.Status{W: opts.Status}

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
		if err := checkCRIShim(ctx, plan); err != nil {
			return nil, err
		}
		// From here on a failure must not leave a half-made lab behind: take
		// it down as `kindlab down` would (cluster, context, record, and the
		// registry if no other cluster uses it), even after Ctrl-C.
		defer func() {
			if err != nil && !opts.Retain {
				_, derr := down.Run(context.WithoutCancel(ctx), p, opts.Store,
					down.Options{Cluster: plan.ClusterName, Kubeconfig: opts.Kubeconfig})
				if derr != nil {
					err = fmt.Errorf("%w (and cleaning up failed: %v)", err, derr)
				}
			}
		}()
		if err := createCluster(ctx, p, plan, opts, st); err != nil {
			return nil, err
		}
		res.Created = true
	}

	h, err := p.Connect(plan.ClusterName)
	if err != nil {
		return nil, err
	}
	for _, s := range steps {
		if err := s(ctx, h, plan, st, opts); err != nil {
			return nil, err
		}
	}
	if opts.SkipChecks || len(plan.Checks) == 0 {
		return res, nil
	}
	st.Start("Running checks 🔍")
	res.Checks = check.Run(ctx, checkEnv(h, plan), plan.Checks)
	// Kept for `kindlab bundle`; the lab is up either way, so a failed write
	// is a warning, not a reason to take it down.
	if err := opts.Store.SaveChecks(plan.ClusterName, res.Checks); err != nil && st.W != nil {
		fmt.Fprintf(st.W, "   warning: %v\n", err)
	}
	st.End(true)
	return res, nil
}

// step is one stage after the cluster exists.
type step func(ctx context.Context, h *cluster.Handle, plan *render.Plan, st *progress.Status, opts Options) error

// steps are the stages between the cluster and the checks, in order (steps.go).
var steps []step

// createCluster records the lab, starts the registry, then has kind create
// the nodes. The registry comes first because it does not need the cluster:
// a registry that cannot start (its port taken) fails in a second, before a
// minute of node creation.
func createCluster(ctx context.Context, p *cluster.Provider, plan *render.Plan, opts Options, st *progress.Status) error {
	rec := state.Record{
		Cluster:        plan.ClusterName,
		Lab:            plan.Lab,
		LabSource:      plan.Resolved.Source,
		NodeImage:      plan.NodeImage,
		Context:        plan.Context,
		Kubeconfig:     opts.Kubeconfig,
		Checks:         plan.Checks,
		ImageOverrides: plan.ImageOverrides,
		CreatedAt:      time.Now().UTC(),
		Fleet:          opts.Fleet,
	}
	if plan.Registry != nil {
		rec.Registry = true
		rec.RegistryPort = plan.Registry.HostPort
	}
	// Recorded first, so that cleaning up a failure finds everything to remove.
	if err := opts.Store.Save(rec); err != nil {
		return err
	}
	for _, f := range plan.Files {
		if err := state.WriteFile(f.HostPath, f.Content); err != nil {
			return fmt.Errorf("write %s for the nodes: %w", f.HostPath, err)
		}
	}
	if plan.Registry != nil {
		st.Start("Starting local registry on 127.0.0.1:%d 🗄", plan.Registry.HostPort)
		if _, err := registry.Ensure(ctx, registry.Options{HostPort: plan.Registry.HostPort, Image: opts.RegistryImage}); err != nil {
			st.Fail()
			return err
		}
		st.End(true)
	}
	// After `kit load` the engine has the pinned node image under a tag
	// only (a load records no digest); kind gets that tag, the record keeps
	// the pin.
	if local := kit.LocalImage(ctx, nil, opts.Store, plan.NodeImage); local != plan.NodeImage {
		for i := range plan.Config.Nodes {
			if plan.Config.Nodes[i].Image == plan.NodeImage {
				plan.Config.Nodes[i].Image = local
			}
		}
	}
	var watch *shimWatch
	if plan.CRIShim != nil {
		if err := copyCRIShim(plan.CRIShim); err != nil {
			return err
		}
		watch = watchCRIShim(ctx, p, plan.ClusterName, opts.Store.LogDir(plan.ClusterName))
	}
	err := p.Create(plan, cluster.CreateOptions{Retain: opts.Retain, Wait: opts.Wait, Kubeconfig: opts.Kubeconfig})
	if watch != nil {
		// A shim that failed is why kind's create failed (the watch ended
		// it): say that, not kind's "container is not running".
		if serr := watch.stop(); serr != nil {
			return serr
		}
	}
	return err
}

func checkEnv(h *cluster.Handle, plan *render.Plan) check.Env {
	env := check.Env{Config: h.RESTConfig, Lab: plan.Resolved, Nodes: h}
	if plan.Registry != nil {
		env.RegistryHost = fmt.Sprintf("localhost:%d", plan.Registry.HostPort)
	}
	return env
}
