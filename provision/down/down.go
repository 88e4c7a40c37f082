// Package down removes what `up` created: the cluster, its kubeconfig
// context, kindlab's record, and the shared registry's container once no
// kind cluster on the engine is wired to it (its data volume stays).
package down

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/nodefiles"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/state"
)

// Options name what to take down.
type Options struct {
	Cluster string
	// Kubeconfig is the file holding the cluster's context; "" means the
	// one recorded at up (kind's default if none was).
	Kubeconfig string
	// KeepRegistry leaves the shared registry even when this was its last user.
	KeepRegistry bool
	// RegistryName is the registry container the lab used; "" is the
	// shared one (registry.ContainerName). Tests run their own.
	RegistryName string
	// Lock is the cluster's lock when the caller holds it already (up
	// cleaning up after itself, a fleet); nil: Run takes it first, waiting
	// up to WaitLock and telling Status (see state.Store.Lock).
	Lock     *state.Lock
	WaitLock time.Duration
	Status   io.Writer
}

// Result lists what was removed, for the user.
type Result struct {
	Removed []string `json:"removed"`
	// Kept are things down found and deliberately left, with why (a
	// recorded kubeconfig file that is not one kindlab wrote).
	Kept []string `json:"kept,omitempty"`
}

// FleetKubeconfigName is the name of the kubeconfig file `up --count
// --kubeconfig-dir DIR` writes for one cluster of the fleet,
// DIR/<cluster>.kubeconfig: the only file down deletes besides kind's
// contexts and kindlab's own state.
func FleetKubeconfigName(cluster string) string { return cluster + ".kubeconfig" }

// Run takes a lab's cluster down. A cluster that is already gone is not an
// error: down converges like up does. A cluster another process is
// working on (its lock held) is left alone: *state.BusyError.
func Run(ctx context.Context, p *cluster.Provider, store state.Store, opts Options) (*Result, error) {
	lock := opts.Lock
	if lock == nil {
		// Nothing of the cluster anywhere (no record, no state, no kind
		// cluster): nothing to do, and no lock file made for a cluster that
		// never was (a mistyped name would leave one each time).
		if nothing, err := absent(p, store, opts.Cluster); err != nil {
			return nil, err
		} else if nothing {
			return &Result{}, nil
		}
		l, err := store.Lock(ctx, opts.Cluster, state.LockOptions{Wait: opts.WaitLock, Status: opts.Status})
		if err != nil {
			return nil, err
		}
		defer l.Unlock()
		lock = l
	} else if lock.Cluster() != opts.Cluster {
		return nil, fmt.Errorf("down %s: holding the lock of cluster %s instead", opts.Cluster, lock.Cluster())
	}
	// What down does goes to the cluster's progress file as it happens
	// (`kindlab console` follows it); the caller prints res.Removed after.
	prog := lock.Tee(nil)
	res := &Result{}
	removed := func(line string) {
		res.Removed = append(res.Removed, line)
		fmt.Fprintf(prog, " ✓ %s\n", line)
	}
	rec, recErr := store.Load(opts.Cluster)
	if recErr != nil && !errors.Is(recErr, state.ErrNotFound) {
		return nil, recErr
	}
	if recErr == nil {
		if err := rec.OnProvider(p.Engine().Provider()); err != nil {
			return nil, err
		}
	}
	if opts.Kubeconfig == "" && recErr == nil {
		opts.Kubeconfig = rec.Kubeconfig
	}
	exists, err := p.Exists(opts.Cluster)
	if err != nil {
		return nil, err
	}
	if exists && errors.Is(recErr, state.ErrNotFound) {
		return nil, fmt.Errorf("kind cluster %q was not created by kindlab; delete it with `kind delete cluster --name %s`", opts.Cluster, opts.Cluster)
	}
	if exists {
		fmt.Fprintf(prog, " • Deleting cluster %s\n", opts.Cluster)
		if err := p.Delete(ctx, opts.Cluster, opts.Kubeconfig); err != nil {
			fmt.Fprintf(prog, " ✗ Deleting cluster %s: %v\n", opts.Cluster, err)
			return nil, err
		}
		removed(fmt.Sprintf("Deleted cluster %s and kubeconfig context kind-%s", opts.Cluster, opts.Cluster))
	}
	// The node files go with the nodes, also when they never came up
	// (a failed up) or were deleted by hand.
	if vols, err := nodefiles.Remove(ctx, p.Engine().Client(), opts.Cluster); err != nil {
		return res, err
	} else if len(vols) > 0 {
		removed("Removed node-files volume " + strings.Join(vols, ", "))
	}
	// A fleet's per-cluster kubeconfig file was made for that cluster
	// alone (up --kubeconfig-dir): once its context is gone, so is the file.
	// Only a file named as the fleet names it, though: the path comes from
	// a record anyone able to write the state directory may have edited,
	// and an empty file elsewhere is not ours to delete. The creation-time
	// file in the cluster's state directory goes with that directory.
	if recErr == nil && rec.Fleet != "" && opts.Kubeconfig != "" &&
		filepath.Clean(opts.Kubeconfig) != filepath.Join(store.ClusterDir(opts.Cluster), "kubeconfig") {
		if filepath.Base(opts.Kubeconfig) != FleetKubeconfigName(opts.Cluster) {
			res.Kept = append(res.Kept, fmt.Sprintf("Left kubeconfig file %s: not the name of a fleet kubeconfig file kindlab writes for %s (DIR/%s)",
				opts.Kubeconfig, opts.Cluster, FleetKubeconfigName(opts.Cluster)))
		} else if gone, kept, err := RemoveEmptyKubeconfig(opts.Kubeconfig); err != nil {
			return res, err
		} else if gone {
			removed("Removed kubeconfig file " + opts.Kubeconfig)
		} else if kept != "" {
			res.Kept = append(res.Kept, kept)
		}
	}
	if recErr == nil {
		if err := store.Remove(opts.Cluster); err != nil {
			return nil, err
		}
		if !exists {
			removed(fmt.Sprintf("Forgot cluster %s (it was already gone)", opts.Cluster))
		}
		if rec.Registry && !opts.KeepRegistry {
			reg, err := releaseRegistry(ctx, registry.Options{Docker: p.Engine().Client(), HostPort: rec.RegistryPort, Name: opts.RegistryName})
			if err != nil {
				return res, err
			}
			if reg != "" {
				removed(reg)
			}
		}
	}
	return res, nil
}

// absent says whether kindlab and kind know nothing of cluster: no record,
// no state directory, no lock file (one planted there is for Lock to
// refuse), no kind cluster of that name.
func absent(p *cluster.Provider, store state.Store, cluster string) (bool, error) {
	if _, err := store.Load(cluster); !errors.Is(err, state.ErrNotFound) {
		return false, nil
	}
	for _, f := range []string{store.ClusterDir(cluster), store.LockFile(cluster)} {
		if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
	}
	exists, err := p.Exists(cluster)
	if err != nil {
		return false, err
	}
	return !exists, nil
}
