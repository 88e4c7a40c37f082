// Package down removes what `up` created: the cluster, its kubeconfig
// context, kindlab's record, and the shared registry once no lab uses it.
package down

import (
	"context"
	"errors"
	"fmt"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/state"
)

// Options name what to take down.
type Options struct {
	Cluster    string
	Kubeconfig string
	// KeepRegistry leaves the shared registry even when this was its last user.
	KeepRegistry bool
}

// Result lists what was removed, for the user.
type Result struct {
	Removed []string `json:"removed"`
}

// Run takes a lab's cluster down. A cluster that is already gone is not an
// error: down converges like up does.
func Run(ctx context.Context, p *cluster.Provider, store state.Store, opts Options) (*Result, error) {
	res := &Result{}
	rec, recErr := store.Load(opts.Cluster)
	if recErr != nil && !errors.Is(recErr, state.ErrNotFound) {
		return nil, recErr
	}
	exists, err := p.Exists(opts.Cluster)
	if err != nil {
		return nil, err
	}
	if exists && errors.Is(recErr, state.ErrNotFound) {
		return nil, fmt.Errorf("kind cluster %q was not created by kindlab; delete it with `kind delete cluster --name %s`", opts.Cluster, opts.Cluster)
	}
	if exists {
		if err := p.Delete(opts.Cluster, opts.Kubeconfig); err != nil {
			return nil, err
		}
		res.Removed = append(res.Removed, fmt.Sprintf("Deleted cluster %s and kubeconfig context kind-%s", opts.Cluster, opts.Cluster))
	}
	if recErr == nil {
		if err := store.Remove(opts.Cluster); err != nil {
			return nil, err
		}
		if !exists {
			res.Removed = append(res.Removed, fmt.Sprintf("Forgot cluster %s (it was already gone)", opts.Cluster))
		}
		if rec.Registry && !opts.KeepRegistry {
			removed, err := releaseRegistry(ctx, p, store, rec.RegistryPort)
			if err != nil {
				return res, err
			}
			if removed != "" {
				res.Removed = append(res.Removed, removed)
			}
		}
	}
	return res, nil
}

// registryUsers counts the recorded labs, still running, that use the registry.
func registryUsers(p *cluster.Provider, store state.Store) (int, error) {
	recs, err := store.List()
	if err != nil {
		return 0, err
	}
	running, err := p.List()
	if err != nil {
		return 0, err
	}
	alive := map[string]bool{}
	for _, n := range running {
		alive[n] = true
	}
	n := 0
	for _, r := range recs {
		if r.Registry && alive[r.Cluster] {
			n++
		}
	}
	return n, nil
}
