// Package running holds a lab as it runs on its cluster: the record `up`
// saved, the lab resolved with the images it came up with, the plan
// rendered as up rendered it, and the connection to the cluster. check,
// reset, bundle create, replay and up itself work on this one value instead
// of each rebuilding record → lab → overrides → registry port → connection.
package running

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/kit"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
)

// Lab is a lab running on a cluster.
type Lab struct {
	// Cluster is the kind cluster's name.
	Cluster string
	// Record is what up saved of the cluster; nil for a cluster kindlab has
	// no record of (one made with plain kind from `kindlab render -o kind`),
	// which is checked with the lab's own settings.
	Record *state.Record
	// Plan is the lab rendered as up rendered it: the recorded node image,
	// image overrides and registry port. Plan.Resolved is the lab with
	// those overrides applied.
	Plan *render.Plan
	// Handle reaches the cluster's API server and nodes.
	Handle *cluster.Handle
	Store  state.Store
}

// Options say which running lab Open finds.
type Options struct {
	// Cluster is the cluster's name; "" means the lab's name.
	Cluster string
	// Lab names the lab in Catalog; "" means the lab the cluster's record
	// names, read from the file it came from when it was not built in.
	Lab     string
	Catalog *lab.Catalog
	// AllowUnrecorded accepts a cluster kindlab has no record of (check
	// does; reset and bundle do not, and get ErrNotRecorded).
	AllowUnrecorded bool
	// AllowOtherLab accepts a cluster whose record names another lab (check
	// does: a lab's checks on a cluster running a lab that includes it);
	// the record's images and registry port still apply.
	AllowOtherLab bool
	// RegistryImage starts the registry should it be gone ("" =
	// registry.DefaultImage).
	RegistryImage string
}

// ErrNotRecorded is returned (wrapped) by Open for a cluster kindlab has no
// record of, when Options.AllowUnrecorded is not set.
var ErrNotRecorded = errors.New("kindlab has no record of the cluster")

// WrongLabError says the cluster runs another lab than the one asked for.
type WrongLabError struct {
	Cluster, Runs, Asked string
}

func (e *WrongLabError) Error() string {
	return fmt.Sprintf("cluster %s runs lab %s, not %s", e.Cluster, e.Runs, e.Asked)
}

// Open finds a lab running on a cluster. A cluster without a record wraps
// ErrNotRecorded (unless allowed), one running another lab is a
// *WrongLabError, a lab that does not resolve is the catalog's error; each
// of those is the caller's bad input and is found before provider is
// called, so no engine is needed to report it. provider's error is returned
// as it is; a cluster recorded on the other engine (docker or podman) is a
// *state.OtherProviderError; a cluster that is not running is an error of
// cluster.Provider.Connect.
func Open(ctx context.Context, store state.Store, provider func() (*cluster.Provider, error), opts Options) (*Lab, error) {
	name := opts.Cluster
	if name == "" {
		name = opts.Lab
	}
	if name == "" {
		return nil, errors.New("open a running lab: name the lab or its cluster")
	}
	var rec *state.Record
	switch r, err := store.Load(name); {
	case err == nil:
		rec = &r
	case errors.Is(err, state.ErrNotFound) && opts.AllowUnrecorded && opts.Lab != "":
	case errors.Is(err, state.ErrNotFound):
		return nil, fmt.Errorf("cluster %s: %w (in %s)", name, ErrNotRecorded, store.Root)
	default:
		return nil, err
	}
	labName := opts.Lab
	cat := opts.Catalog
	switch {
	case labName == "":
		labName = rec.Lab
		var err error
		if cat, err = RecordedCatalog(cat, *rec); err != nil {
			return nil, err
		}
	case rec != nil && rec.Lab != labName && !opts.AllowOtherLab:
		return nil, &WrongLabError{Cluster: name, Runs: rec.Lab, Asked: labName}
	}
	r, err := cat.Resolve(labName, lab.ResolveOptions{KnownChecks: check.Names()})
	if err != nil {
		return nil, err
	}
	p, err := provider()
	if err != nil {
		return nil, err
	}
	// A lab recorded on the other engine is named as such, not as a
	// cluster that does not exist (a *state.OtherProviderError).
	if rec != nil {
		if err := rec.OnProvider(p.Engine().Provider()); err != nil {
			return nil, err
		}
	}
	h, err := p.Connect(name)
	if err != nil {
		return nil, err
	}
	ro := render.Options{
		Name:          name,
		StateDir:      store.ClusterDir(name),
		RegistryImage: opts.RegistryImage,
		LocalImage:    LocalImage(ctx, p.Engine(), store),
	}
	if rec != nil {
		Recorded(&ro, *rec, r)
	}
	plan, err := render.Render(r, ro)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: lab %s as it came up: %w", name, labName, err)
	}
	return &Lab{Cluster: name, Record: rec, Plan: plan, Handle: h, Store: store}, nil
}

// Recorded sets in ro what rec says its lab came up with, so that r renders
// as up rendered it: the node image (as an override of r's own, see
// render.ImageOverride), the registry port (0 when the lab had no registry,
// which render takes as its default) and the image overrides.
func Recorded(ro *render.Options, rec state.Record, r *lab.Resolved) {
	ro.NodeImage = render.ImageOverride(rec.NodeImage, r)
	ro.RegistryPort = rec.RegistryPort
	ro.ImageOverrides = rec.ImageOverrides
}

// RecordedCatalog is the catalog that resolves rec.Lab as up did: for a
// built-in lab, the built-in labs alone (a ./labs file of the same name, or
// of a name it includes, must not stand in for it); otherwise c with the
// lab file rec's cluster was brought up from added. The error says where
// the file was and how to reach it.
func RecordedCatalog(c *lab.Catalog, rec state.Record) (*lab.Catalog, error) {
	if strings.HasPrefix(rec.LabSource, "builtin:") {
		return c.Builtins()
	}
	if rec.LabSource == "" {
		return c, nil
	}
	if _, err := c.AddFile(rec.LabSource); err != nil {
		return nil, fmt.Errorf("cluster %s runs lab %s from %s, which cannot be read from here (%v): run in the directory `kindlab up` ran in, or pass the lab file as the argument",
			rec.Cluster, rec.Lab, rec.LabSource, err)
	}
	return c, nil
}

// LocalImage is render.Options.LocalImage for an engine: what it has for a
// pinned image after `kit load` (kit.LocalImage).
func LocalImage(ctx context.Context, e *engine.Engine, store state.Store) func(string) string {
	return func(ref string) string { return kit.LocalImage(ctx, e.Client(), store, ref) }
}

// FromPlan is the lab up has just brought up from plan on h.
func FromPlan(plan *render.Plan, h *cluster.Handle, store state.Store, rec *state.Record) *Lab {
	return &Lab{Cluster: plan.ClusterName, Record: rec, Plan: plan, Handle: h, Store: store}
}

// Resolved is the lab with the images it came up with.
func (l *Lab) Resolved() *lab.Resolved { return l.Plan.Resolved }

// Engine is the engine the cluster runs on.
func (l *Lab) Engine() *engine.Engine { return l.Handle.Engine() }

// RegistryPort is the host port of the lab's registry; 0 when the lab has none.
func (l *Lab) RegistryPort() int {
	if l.Plan.Registry == nil {
		return 0
	}
	return l.Plan.Registry.HostPort
}

// Registry is how to reach (or start again) the lab's registry on its
// engine; only meaningful when the lab has one.
func (l *Lab) Registry() registry.Options {
	o := registry.Options{Docker: l.Engine().Client()}
	if r := l.Plan.Registry; r != nil {
		o.HostPort, o.Image = r.HostPort, r.Image
	}
	return o
}

// CheckEnv is the environment the lab's checks run in: its cluster, its
// nodes, the lab with its images, and its registry as reachable from here.
func (l *Lab) CheckEnv() check.Env {
	env := check.Env{Config: l.Handle.RESTConfig, Lab: l.Plan.Resolved}
	if l.Engine() != nil {
		env.Nodes = l.Handle
	}
	if p := l.RegistryPort(); p != 0 {
		env.RegistryHost = fmt.Sprintf("localhost:%d", p)
	}
	return env
}

// SaveChecks keeps results as the cluster's last check run (what `kindlab
// bundle create` reports), when kindlab has a record of the cluster.
func (l *Lab) SaveChecks(results []check.Result) error {
	if l.Record == nil {
		return nil
	}
	return l.Store.SaveChecks(l.Cluster, results)
}
