// Package reset puts a running lab back to how `up` left it, in seconds and
// without recreating the cluster: when an attendee has broken the lab, the
// workloads, the artifacts and the checks are restored, and nodes, control
// plane and registry stay.
//
// "How up left it" is the lab's manifests freshly applied. Reset compares
// the lab's namespaces and the lab's own objects with that, deletes what
// differs, and applies the manifests again:
//
//   - an object of the lab that is missing is created again;
//   - an object of the lab that someone changed (any field manager other
//     than kindlab and the control plane's own: kubectl edit, scale, patch,
//     label, apply …) is deleted and created again, since a server-side
//     apply alone would keep the fields the other manager added;
//   - a pod that restarted or is not ready is deleted, so its controller
//     (or the apply) starts a fresh one; a claim that lost its volume, or a
//     volume released by its claim, is recreated together with its partner;
//   - anything else in the lab's namespaces (a stray pod, a Service or
//     ConfigMap an attendee added, what a controller of a deleted object
//     left) is deleted, except what the control plane itself keeps there
//     (the default ServiceAccount, kube-root-ca.crt, Endpoints);
//   - the lab's namespaces are kept (deleting a namespace takes far longer
//     than emptying it) and their labels and annotations put back; one
//     being deleted is waited for and created again.
//
// Pods are deleted with grace period 0 where that is safe, so they leave
// the API at once; pods whose successor must not start before they have
// stopped (holding a claim, devices, or a StatefulSet identity) get one
// second. Artifacts are pushed again, which puts back a tag that was
// overwritten (the registry is asked first, to report it); then the
// workloads are applied and waited for, and the checks run.
//
// Reset leaves alone what lives outside the lab's namespaces and is not one
// of the lab's objects: cluster-wide objects an attendee made (a
// ServiceCIDR, a PersistentVolume, a ClusterRoleBinding), node state, and
// files changed inside containers; `kindlab down` and `up` start over from
// nothing.
package reset

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/lifecycle"
	"github.com/kindlab/kindlab/provision/progress"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/workload"
)

// Options shape one reset.
type Options struct {
	// Full deletes and recreates every object of the lab's namespaces,
	// changed or not.
	Full bool
	// SkipChecks stops once the workloads are ready.
	SkipChecks bool
	// Timeout bounds the wait for deletions and for the workloads to be
	// ready; zero means workload.DefaultTimeout.
	Timeout time.Duration
	// Parallelism and CheckTimeout are the checks' (check.Env); zero means
	// their defaults.
	Parallelism  int
	CheckTimeout time.Duration
	// Status receives one line per step.
	Status io.Writer
}

// Change is one thing reset put back.
type Change struct {
	// Object is "Kind namespace/name" (or "Kind name" when cluster-wide).
	Object string `json:"object"`
	// Action is deleted, recreated, created or restored (a namespace's
	// labels and annotations).
	Action string `json:"action"`
	Why    string `json:"why"`
}

// Result is what a reset did.
type Result struct {
	Cluster   string               `json:"cluster"`
	Lab       string               `json:"lab"`
	Changes   []Change             `json:"changes"`
	Artifacts []lifecycle.Artifact `json:"artifacts,omitempty"`
	Checks    []check.Result       `json:"checks,omitempty"`
	// Restore is the time to the workloads being ready again; Duration
	// includes the checks.
	Restore  time.Duration `json:"restore"`
	Duration time.Duration `json:"duration"`
}

// Run resets a running lab: it restores the lab's objects (the package
// comment says how), then goes through the steps up ends with — the
// artifacts pushed again (reporting a tag put back), the workloads applied
// and waited for, the checks — on the registry and engine the lab came up
// with, remote engines included.
func Run(ctx context.Context, l *running.Lab, opts Options) (*Result, error) {
	start := time.Now()
	r := l.Resolved()
	res := &Result{Cluster: l.Cluster, Lab: r.Name, Changes: []Change{}}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = workload.DefaultTimeout
	}
	lc := &lifecycle.Context{Lab: l, Status: &progress.Status{W: opts.Status}}
	apply := lifecycle.ApplyWorkloads{Timeout: timeout, WaitsOnly: true}
	if !opts.SkipChecks {
		// Each check starts as soon as its own workload is ready again.
		apply.Checks = &lifecycle.RunChecks{Parallelism: opts.Parallelism, Timeout: opts.CheckTimeout}
	}
	steps := []lifecycle.Step{
		&restore{full: opts.Full, timeout: timeout, res: res},
		lifecycle.PushArtifacts{Again: true},
		apply,
	}
	if err := lifecycle.Run(ctx, lc, steps...); err != nil {
		return nil, err
	}
	res.Artifacts, res.Checks = lc.Artifacts, lc.Checks
	res.Restore = time.Since(start)
	if !lc.WorkloadsReady.IsZero() {
		res.Restore = lc.WorkloadsReady.Sub(start)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// restore is reset's own step: compare the lab's namespaces and objects
// with its manifests, delete what differs, put namespaces' metadata back.
type restore struct {
	full    bool
	timeout time.Duration
	res     *Result
}

func (s *restore) Execute(ctx context.Context, lc *lifecycle.Context) error {
	r := lc.Lab.Resolved()
	st := lc.Status
	st.Start("Comparing lab %s with its manifests 🔎", r.Name)
	// A reset lists a few dozen resource types and applies every manifest;
	// client-go's default of 5 requests a second would be most of its time.
	cfg := rest.CopyConfig(lc.Lab.Handle.RESTConfig)
	cfg.QPS, cfg.Burst = 200, 400
	c, err := newClient(cfg)
	if err != nil {
		st.Fail()
		return err
	}
	inv, err := c.inventory(ctx, r)
	if err != nil {
		st.Fail()
		return err
	}
	p := inv.plan(s.full)
	st.Label += fmt.Sprintf(": %d to delete, %d missing", len(p.deletes)+len(p.await), len(p.missing))
	st.End(true)

	if len(p.deletes)+len(p.await) > 0 {
		st.Start("Deleting %d changed or extra object(s) 🧹", len(p.deletes)+len(p.await))
		wctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := c.delete(wctx, p)
		cancel()
		if err != nil {
			st.Fail()
			return err
		}
		st.End(true)
	}
	res := s.res
	for _, o := range append(append([]*object(nil), p.deletes...), p.await...) {
		action := "deleted"
		if o.desired {
			action = "recreated"
		}
		res.Changes = append(res.Changes, Change{Object: describe(o.u), Action: action, Why: o.why})
	}
	for _, d := range p.missing {
		res.Changes = append(res.Changes, Change{Object: describe(d), Action: "created", Why: "missing"})
	}
	for _, o := range p.relabel {
		if err := c.restoreMetadata(ctx, o); err != nil {
			return err
		}
		res.Changes = append(res.Changes, Change{Object: describe(o.u), Action: "restored", Why: o.why})
	}
	return nil
}

// key names an object the way the API does, whatever the version.
type key struct {
	Group, Kind, Namespace, Name string
}

func keyOf(u *unstructured.Unstructured) key {
	gvk := u.GroupVersionKind()
	return key{gvk.Group, gvk.Kind, u.GetNamespace(), u.GetName()}
}

// object is a live object in reset's scope.
type object struct {
	u       *unstructured.Unstructured
	res     dynamic.ResourceInterface
	desired bool
	// want is the manifest's object, for a desired one.
	want *unstructured.Unstructured
	// why it is deleted, or its metadata restored.
	why string
}

type client struct {
	dyn    dynamic.Interface
	disc   discovery.DiscoveryInterface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newClient(cfg *rest.Config) (*client, error) {
	c, err := workload.NewClients(cfg)
	if err != nil {
		return nil, err
	}
	return &client{dyn: c.Dynamic, disc: c.Discovery, mapper: c.Mapper}, nil
}

// resourceFor maps an object to the client for it.
func (c *client) resourceFor(u *unstructured.Unstructured) (dynamic.ResourceInterface, bool, error) {
	gvk := u.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: the cluster does not serve %s: %w", describe(u), gvk.GroupVersion(), err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(u.GetNamespace()), true, nil
	}
	return c.dyn.Resource(m.Resource), false, nil
}

func describe(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", u.GetKind(), ns, u.GetName())
	}
	return fmt.Sprintf("%s %s", u.GetKind(), u.GetName())
}

// wait polls until every object is gone (or replaced by a new one of the
// same name), and says which are left when ctx ends.
func (c *client) wait(ctx context.Context, objs []*object) error {
	pending := objs
	for {
		var left []*object
		for _, o := range pending {
			cur, err := o.res.Get(ctx, o.u.GetName(), metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
			case err == nil && cur.GetUID() != o.u.GetUID():
			case err != nil && ctx.Err() == nil:
				return fmt.Errorf("wait for %s to go: %w", describe(o.u), err)
			default:
				left = append(left, o)
			}
		}
		if len(left) == 0 {
			return nil
		}
		pending = left
		select {
		case <-ctx.Done():
			var names []string
			for _, o := range left {
				why := ""
				if fs := o.u.GetFinalizers(); len(fs) > 0 {
					why = fmt.Sprintf(" (finalizers %s)", strings.Join(fs, ", "))
				}
				names = append(names, describe(o.u)+why)
			}
			sort.Strings(names)
			return fmt.Errorf("still being deleted: %s: %w", strings.Join(names, ", "), context.Cause(ctx))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
