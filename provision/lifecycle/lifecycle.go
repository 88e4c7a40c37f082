// Package lifecycle holds the stages a lab goes through once its cluster
// exists, as values: up composes [criShim, WireRegistry, PushArtifacts,
// ApplyWorkloads, RunChecks], reset composes [its restore,
// PushArtifacts{Again}, ApplyWorkloads, RunChecks], and a replay or a fleet
// member goes through up. The shape is kind's create actions
// (sigs.k8s.io/kind pkg/cluster/internal/create/actions): small steps that
// share one context, each with its own status line.
package lifecycle

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/progress"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/workload"
)

// Context is what the steps of one run share: the running lab, the status
// lines, and what earlier steps produced.
type Context struct {
	Lab    *running.Lab
	Status *progress.Status
	// Artifacts is what PushArtifacts pushed, in the lab's order.
	Artifacts []Artifact
	// Checks are RunChecks's results, in the lab's order.
	Checks []check.Result
}

// Step is one stage. A step that does not apply to the lab (no registry,
// no artifacts) returns nil at once and prints nothing.
type Step interface {
	Execute(ctx context.Context, c *Context) error
}

// StepFunc makes a function a Step.
type StepFunc func(ctx context.Context, c *Context) error

// Execute runs f.
func (f StepFunc) Execute(ctx context.Context, c *Context) error { return f(ctx, c) }

// Run executes the steps in order and stops at the first error.
func Run(ctx context.Context, c *Context, steps ...Step) error {
	for _, s := range steps {
		if err := s.Execute(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// WireRegistry starts or reuses the shared registry and wires every node
// and the cluster (KEP-1755 local-registry-hosting) to it, with a mirror
// for every registry the lab's images come from.
type WireRegistry struct{}

// Execute implements Step.
func (WireRegistry) Execute(ctx context.Context, c *Context) error {
	plan := c.Lab.Plan
	if plan.Registry == nil {
		return nil
	}
	st := c.Status
	st.Start("Wiring local registry 127.0.0.1:%d to the nodes 🗄", plan.Registry.HostPort)
	ns, err := c.Lab.Handle.KindNodes()
	if err != nil {
		st.Fail()
		return err
	}
	cs, err := kubernetes.NewForConfig(c.Lab.Handle.RESTConfig)
	if err != nil {
		st.Fail()
		return err
	}
	var refs []string
	for _, im := range plan.Images {
		refs = append(refs, im.Reference)
	}
	if _, err := registry.Up(ctx, c.Lab.Registry(), ns, cs, registry.MirrorHosts(refs)); err != nil {
		st.Fail()
		return err
	}
	st.End(true)
	return nil
}

// Artifact is one of the lab's artifacts in the registry after PushArtifacts.
type Artifact struct {
	Name      string `json:"name"`
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	// Layers and LayersPushed count the artifact's layers and those the
	// registry lacked.
	Layers       int `json:"layers"`
	LayersPushed int `json:"layersPushed"`
	// Restored (with Again) says the tag pointed elsewhere (Was) or at
	// nothing before the push.
	Restored bool   `json:"restored"`
	Was      string `json:"was,omitempty"`
}

// PushArtifacts builds each of the lab's artifacts and pushes what the
// registry lacks: over HTTP to the registry's port on this machine, or,
// when the engine is remote (its published ports are on its own loopback),
// into the registry through the Engine API.
type PushArtifacts struct {
	// Again is reset's push: the registry is started should it have gone,
	// and each tag is read before the push, to say what was put back, and
	// after, to prove it points at the artifact (a push replaces a tag that
	// points elsewhere: go-containerregistry skips the manifest only when
	// the tag already has its digest).
	Again bool
}

// Execute implements Step.
func (p PushArtifacts) Execute(ctx context.Context, c *Context) error {
	arts := c.Lab.Plan.Resolved.Artifacts
	if len(arts) == 0 {
		return nil
	}
	st := c.Status
	if p.Again {
		st.Start("Pushing %d artifact(s) again 📦", len(arts))
	} else {
		st.Start("Pushing %d artifact(s) 📦", len(arts))
	}
	res, err := p.push(ctx, c)
	if err != nil {
		st.Fail()
		return err
	}
	for _, a := range res {
		switch {
		case !p.Again:
			st.Label += fmt.Sprintf("; %s %s (%d of %d layers sent)", a.Reference, short(a.Digest), a.LayersPushed, a.Layers)
		case a.Restored:
			st.Label += fmt.Sprintf("; %s put back to %s", a.Reference, short(a.Digest))
		}
	}
	c.Artifacts = res
	st.End(true)
	return nil
}

func (p PushArtifacts) push(ctx context.Context, c *Context) ([]Artifact, error) {
	l := c.Lab
	arts := l.Plan.Resolved.Artifacts
	ro := l.Registry()
	if p.Again {
		if _, err := registry.Ensure(ctx, ro); err != nil {
			return nil, err
		}
	}
	read := func(ref string) (string, error) { return artifact.TagDigest(ctx, ref) }
	push := func() ([]artifact.LabResult, error) { return artifact.PushLab(ctx, arts, ro.HostPort, nil) }
	if l.Engine().Endpoint().Remote() {
		e := l.Engine().Client()
		read = func(ref string) (string, error) { return registry.TagDigest(ctx, ro, e, ref) }
		push = func() ([]artifact.LabResult, error) { return artifact.ImportLab(ctx, arts, ro, e) }
	}
	before := map[string]string{}
	if p.Again {
		for _, a := range arts {
			d, err := read(registry.PushReference(a.Reference, ro.HostPort))
			if err != nil {
				return nil, fmt.Errorf("artifact %s: %w", a.Name, err)
			}
			before[a.Name] = d
		}
	}
	pushed, err := push()
	if err != nil {
		return nil, err
	}
	out := make([]Artifact, 0, len(pushed))
	for _, r := range pushed {
		a := Artifact{Name: r.Name, Reference: r.Reference, Digest: r.Digest, Layers: r.Layers, LayersPushed: r.LayersPushed}
		if p.Again {
			now, err := read(registry.PushReference(r.Reference, ro.HostPort))
			if err != nil {
				return nil, fmt.Errorf("artifact %s: %w", r.Name, err)
			}
			if now != r.Digest {
				return nil, fmt.Errorf("artifact %s: %s points at %s after the push, not %s", r.Name, r.PushedTo, now, r.Digest)
			}
			if was := before[r.Name]; was != r.Digest {
				a.Restored, a.Was = true, was
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// ApplyWorkloads applies every workload of the lab with server-side apply
// and waits until it is ready.
type ApplyWorkloads struct {
	// Timeout bounds the wait; zero means workload.DefaultTimeout.
	Timeout time.Duration
	// WaitsOnly prints only the lines about what is waited for (reset's
	// habit), not one per object applied.
	WaitsOnly bool
}

// Execute implements Step.
func (a ApplyWorkloads) Execute(ctx context.Context, c *Context) error {
	r := c.Lab.Plan.Resolved
	if len(r.Workloads) == 0 {
		return nil
	}
	st := c.Status
	st.Start("Applying workloads 🚀")
	err := workload.ApplyLab(ctx, c.Lab.Handle.RESTConfig, r, workload.Options{Timeout: a.Timeout, Progress: func(msg string) {
		if st.W != nil && (!a.WaitsOnly || strings.HasPrefix(msg, "waiting")) {
			fmt.Fprintf(st.W, "   %s\n", msg)
		}
	}})
	if err != nil {
		st.Fail()
		return err
	}
	st.End(true)
	return nil
}

// RunChecks runs the lab's checks (check.Run: concurrently, lines in the
// lab's order) and keeps the results as the cluster's last check run; a
// failed write of those is a warning, since the lab is up either way.
type RunChecks struct {
	// Parallelism and Timeout are check.Env's; zero means its defaults.
	Parallelism int
	Timeout     time.Duration
}

// Execute implements Step.
func (r RunChecks) Execute(ctx context.Context, c *Context) error {
	names := c.Lab.Plan.Checks
	if len(names) == 0 {
		return nil
	}
	st := c.Status
	st.Start("Running checks 🔍")
	env := c.Lab.CheckEnv()
	env.Parallelism, env.Timeout = r.Parallelism, r.Timeout
	env.Progress = check.ProgressTo(st.W)
	c.Checks = check.Run(ctx, env, names)
	if err := c.Lab.SaveChecks(c.Checks); err != nil && st.W != nil {
		fmt.Fprintf(st.W, "   warning: %v\n", err)
	}
	st.End(true)
	return nil
}

func short(digest string) string {
	if len(digest) > 19 {
		return digest[:19]
	}
	return digest
}
