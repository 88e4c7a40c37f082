package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/down"
	"github.com/kindlab/kindlab/provision/state"
)

// DownOptions name the clusters of a fleet to take down.
type DownOptions struct {
	// Name is the fleet.
	Name string
	// Clusters are the clusters to take down (`down LAB --count N` names
	// them); nil means every cluster recorded in the fleet.
	Clusters []string
	// KeepRegistry leaves the shared registry even if nothing uses it any more.
	KeepRegistry bool
	// WaitLock is how long to wait for a member another process is working
	// on; 0 refuses at once, taking nothing down. Status hears about waits.
	WaitLock time.Duration
	Status   io.Writer
}

// Down takes a fleet's clusters down as `kindlab down` takes one down, and
// then the registry if no cluster uses it any more. A cluster that fails to
// go does not keep the others: the error names it. Every member is locked
// first: if another process works on one, nothing is taken down
// (*state.BusyError).
func Down(ctx context.Context, p *cluster.Provider, store state.Store, opts DownOptions) (*down.Result, error) {
	names := opts.Clusters
	if names == nil {
		recs, err := FleetMembers(store, opts.Name)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			names = append(names, r.Cluster)
		}
	}
	locks, err := LockAll(ctx, store, names, opts.WaitLock, opts.Status)
	if err != nil {
		return nil, err
	}
	lockOf := map[string]*state.Lock{}
	for _, l := range locks {
		defer l.Unlock()
		lockOf[l.Cluster()] = l
	}
	res := &down.Result{}
	// kind's kubeconfig lock fails at once when held, so clusters whose
	// contexts share a file go one after the other; clusters with files of
	// their own (up --kubeconfig-dir) go in parallel.
	groups := map[string][]string{}
	var order []string
	regPorts := map[int]bool{}
	for _, name := range names {
		kc := ""
		rec, err := store.Load(name)
		switch {
		case err == nil:
			kc = rec.Kubeconfig
			if rec.Registry {
				regPorts[rec.RegistryPort] = true
			}
		case !errors.Is(err, state.ErrNotFound):
			return nil, err
		}
		if _, ok := groups[kc]; !ok {
			order = append(order, kc)
		}
		groups[kc] = append(groups[kc], name)
	}
	var mu sync.Mutex
	var failed []string
	sem := make(chan struct{}, max(1, runtime.NumCPU()))
	var wg sync.WaitGroup
	for _, kc := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			for _, name := range groups[kc] {
				r, err := down.Run(ctx, p, store, down.Options{Cluster: name, Kubeconfig: kc, KeepRegistry: true, Lock: lockOf[name]})
				mu.Lock()
				if r != nil {
					res.Removed = append(res.Removed, r.Removed...)
					res.Kept = append(res.Kept, r.Kept...)
				}
				if err != nil {
					failed = append(failed, fmt.Sprintf("%s: %s", name, oneLine(err)))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if !opts.KeepRegistry {
		for port := range regPorts {
			removed, err := down.ReleaseRegistry(ctx, p, port)
			if err != nil {
				failed = append(failed, "registry: "+oneLine(err))
			} else if removed != "" {
				res.Removed = append(res.Removed, removed)
			}
		}
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("fleet %s: %d cluster(s) not taken down: %s", opts.Name, len(failed), strings.Join(failed, "; "))
	}
	return res, nil
}
