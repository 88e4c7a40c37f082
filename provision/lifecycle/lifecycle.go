// Package lifecycle holds the stages a lab goes through once its cluster
// exists, as values: up composes [WaitReady (which only starts its wait),
// criShim, WireRegistry, PushArtifacts, ApplyWorkloads{Checks}], reset composes [its restore,
// PushArtifacts{Again}, ApplyWorkloads{Checks}] (each check starting as
// soon as its own workload is ready), and a replay or a fleet
// member goes through up. The shape is kind's create actions
// (sigs.k8s.io/kind pkg/cluster/internal/create/actions): small steps that
// share one context, each with its own status line.
package lifecycle

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
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
	// WorkloadsReady is when ApplyWorkloads saw the last workload ready.
	WorkloadsReady time.Time

	// controlPlane, set by WaitReady, opens when the control plane is
	// Ready (or with why not); nodesReady then opens when every node is;
	// nodesBegan is when the wait for them began. stopNodes ends both
	// waits and returns once they have.
	controlPlane *check.Latch
	nodesReady   *check.Latch
	nodesBegan   time.Time
	stopNodes    func()
}

// syncStatus makes Status's writer safe for lines from several goroutines
// (WaitReady's line ends while later steps print theirs); each line is one
// Write.
func (c *Context) syncStatus() {
	if c.Status == nil {
		c.Status = &progress.Status{}
	}
	if c.Status.W != nil {
		c.Status.W = locked(c.Status.W)
	}
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

// Run executes the steps in order and stops at the first error. When a
// WaitReady left the wait for every node going, Run returns once it has
// ended too, with its error.
func Run(ctx context.Context, c *Context, steps ...Step) error {
	defer func() {
		if c.stopNodes != nil {
			c.stopNodes()
		}
	}()
	for _, s := range steps {
		if err := s.Execute(ctx, c); err != nil {
			return err
		}
	}
	return awaitNodes(ctx, c)
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
// and waits until it is ready; with Checks, it runs the lab's checks
// meanwhile, each as soon as its own workload is ready.
type ApplyWorkloads struct {
	// Timeout bounds the wait; zero means workload.DefaultTimeout.
	Timeout time.Duration
	// WaitsOnly prints only the lines about what is waited for (reset's
	// habit), not one per object applied.
	WaitsOnly bool
	// Checks, when set, runs the lab's checks in this step rather than
	// after it: a check starts once the workload of its own name is ready
	// (a lab's check proves what its own workload sets up, in its own
	// namespace; a check without a workload of its name starts at once),
	// while the slower workloads are still starting. A workload that never
	// gets ready fails its check unstarted and then the step, as it would
	// fail alone.
	Checks *RunChecks
}

// Execute implements Step.
func (a ApplyWorkloads) Execute(ctx context.Context, c *Context) error {
	if err := awaitControlPlane(ctx, c); err != nil {
		return err
	}
	r := c.Lab.Plan.Resolved
	if len(r.Workloads) == 0 {
		if a.Checks != nil {
			return a.Checks.Execute(ctx, c)
		}
		return nil
	}
	checks := c.Lab.Plan.Checks
	if a.Checks == nil || len(checks) == 0 {
		st := c.Status
		st.Start("Applying workloads 🚀")
		if err := a.apply(ctx, c, st.W, nil); err != nil {
			st.Fail()
			return err
		}
		c.WorkloadsReady = time.Now()
		st.End(true)
		return nil
	}

	latches := map[string]*check.Latch{}
	for _, w := range r.Workloads {
		latches[w.Name] = check.NewLatch()
	}
	gates := func(name string) check.Gate {
		if l, ok := latches[name]; ok {
			return l
		}
		return nil
	}
	st := c.Status
	st.Start("Applying workloads, each check as soon as its workload is ready 🚀🔍")
	// The workloads' lines and the checks' come from two goroutines.
	var w io.Writer
	if st.W != nil {
		w = locked(st.W)
	}
	reportNodes(c, w)
	applied := make(chan error, 1)
	go func() {
		err := a.apply(ctx, c, w, func(name string, err error) {
			if err != nil {
				err = fmt.Errorf("workload %s is not ready: %w", name, err)
			}
			latches[name].Open(err)
		})
		// An apply failed: no workload was waited for (those before the
		// failed one were applied, so not "not applied"), and none will be.
		for name, l := range latches {
			l.Open(fmt.Errorf("workload %s was not waited for: %v", name, err))
		}
		c.WorkloadsReady = time.Now()
		applied <- err
	}()
	c.Checks = a.Checks.run(ctx, c, w, gates)
	if err := <-applied; err != nil {
		st.Fail()
		return err
	}
	st.End(true)
	return nil
}

// apply applies the lab's workloads and waits for them, printing to w;
// ready, when set, hears of each workload's end.
func (a ApplyWorkloads) apply(ctx context.Context, c *Context, w io.Writer, ready func(string, error)) error {
	return workload.ApplyLab(ctx, c.Lab.Handle.RESTConfig, c.Lab.Plan.Resolved, workload.Options{Timeout: a.Timeout, Ready: ready, Progress: func(msg string) {
		if w != nil && (!a.WaitsOnly || strings.HasPrefix(msg, "waiting") || strings.HasPrefix(msg, "ready:")) {
			fmt.Fprintf(w, "   %s\n", msg)
		}
	}})
}

// locked returns w serialised for several goroutines (w itself if it is).
func locked(w io.Writer) io.Writer {
	if l, ok := w.(*lockedWriter); ok {
		return l
	}
	return &lockedWriter{w: w}
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
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
	if len(c.Lab.Plan.Checks) == 0 {
		return nil
	}
	st := c.Status
	st.Start("Running checks 🔍")
	c.Checks = r.run(ctx, c, st.W, nil)
	st.End(true)
	return nil
}

// run runs the checks, each behind its gate and, while WaitReady's wait
// for every node goes on, behind that too, printing to w.
func (r RunChecks) run(ctx context.Context, c *Context, w io.Writer, gates func(string) check.Gate) []check.Result {
	if nodes := c.nodesReady; nodes != nil {
		own := gates
		gates = func(name string) check.Gate {
			if own == nil {
				return nodes
			}
			return check.AllOf(own(name), nodes)
		}
	}
	env := c.Lab.CheckEnv()
	env.Parallelism, env.Timeout, env.Gates = r.Parallelism, r.Timeout, gates
	env.Progress = check.ProgressTo(w)
	res := check.Run(ctx, env, c.Lab.Plan.Checks)
	if err := c.Lab.SaveChecks(res); err != nil && w != nil {
		fmt.Fprintf(w, "   warning: %v\n", err)
	}
	return res
}

func short(digest string) string {
	if len(digest) > 19 {
		return digest[:19]
	}
	return digest
}
