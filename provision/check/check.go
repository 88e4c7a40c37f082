// Package check proves, on a live cluster, that each Kubernetes 1.31 feature
// a lab turns on really works: every check drives the feature and would fail
// if it were off or broken.
//
// Checks run their API-side steps first (what the apiserver and the
// controllers do), then their node-side steps (what kubelet, kube-proxy and
// the runtime do). Without node access the node-side steps are reported as
// "skipped", never as passed, after the API-side steps have run.
package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kindlab/kindlab/provision/lab"
)

// Status is a check's outcome.
type Status string

const (
	// Pass: the feature did what it promises.
	Pass Status = "pass"
	// Fail: the feature is off or broken; Reason says which step.
	Fail Status = "fail"
	// Unsupported: the host cannot support the feature; Reason is the
	// component's own explanation (e.g. the kubelet's AppArmor rejection).
	Unsupported Status = "unsupported"
	// Skipped: the check could not run a step (e.g. it needs nodes).
	Skipped Status = "skipped"
)

// Result is one check's outcome.
type Result struct {
	Name     string        `json:"name"`
	Feature  string        `json:"feature"`
	Status   Status        `json:"status"`
	Reason   string        `json:"reason,omitempty"`
	Details  []string      `json:"details,omitempty"`
	Duration time.Duration `json:"duration"`
}

// NodeAccess runs commands on cluster nodes (kind nodes: docker exec).
type NodeAccess interface {
	Nodes(ctx context.Context) ([]string, error)
	Exec(ctx context.Context, node string, stdin io.Reader, cmd ...string) ([]byte, error)
}

// Env is what checks run against.
type Env struct {
	Config *rest.Config
	// Client is built from Config when nil.
	Client kubernetes.Interface
	// Lab is the resolved lab; checks read expected content from it (the
	// image-volume artifact's files). May be nil.
	Lab *lab.Resolved
	// Nodes is nil when there are no nodes to reach (an apiserver-only
	// environment): node-side steps are then skipped.
	Nodes NodeAccess
	// RegistryHost is the local registry as reachable from here
	// (e.g. localhost:5001); empty skips the registry step.
	RegistryHost string
	// Timeout bounds each check; zero means DefaultTimeout.
	Timeout time.Duration
	// Parallelism bounds how many checks run at once; zero means
	// DefaultParallelism, 1 runs them one after another in order.
	Parallelism int
	// Progress, when set, is called once per result in the order of the
	// names given to Run, as soon as that result and every one before it
	// are in. Run calls it from its own goroutine, one call at a time.
	Progress func(Result)
	// Gates, when set, gives each check's Gate by the check's name (nil:
	// the check may start at once). A gated check starts only once its
	// gate is open, and fails without running when the gate says it never
	// will be; its Duration counts from its start, not from the wait.
	Gates func(name string) Gate
}

// Gate holds a check back until what it proves is in place (up and reset:
// its lab's workload ready). Done is closed once that is decided; Err is
// then nil (go ahead) or why it never will be.
type Gate interface {
	Done() <-chan struct{}
	Err() error
}

// DefaultTimeout bounds one check.
const DefaultTimeout = 3 * time.Minute

// DefaultParallelism is how many checks run at once when Env.Parallelism
// is zero: enough to overlap the checks' waits (most of a check's time is
// polling the cluster), few enough for a 2-core machine running the lab.
const DefaultParallelism = 4

// Run runs the named checks and returns one result per name, in the order
// of names, whatever order they finish in. Checks run concurrently, at most
// Env.Parallelism at a time, except that a check never runs at the same time
// as another one whose declared shared state collides with its own (see
// Resource). Cancelling ctx stops the running checks (each still undoes what
// it changed, with its own cleanup deadline) and reports the ones not yet
// started as failed.
func Run(ctx context.Context, env Env, names []string) []Result {
	if env.Client == nil && env.Config != nil {
		c, err := kubernetes.NewForConfig(env.Config)
		if err == nil {
			env.Client = c
		} else {
			return failAll(env, names, fmt.Errorf("kubernetes client: %w", err))
		}
	}
	if env.Client == nil {
		return failAll(env, names, errors.New("no cluster to check: Env has neither Client nor Config"))
	}
	defs := make([]*definition, len(names))
	for i, n := range names {
		defs[i] = lookup(n)
	}
	return schedule(ctx, env, names, defs)
}

func failAll(env Env, names []string, err error) []Result {
	out := make([]Result, 0, len(names))
	for _, n := range names {
		r := Result{Name: n, Status: Fail, Reason: err.Error()}
		if env.Progress != nil {
			env.Progress(r)
		}
		out = append(out, r)
	}
	return out
}

// runOne runs one check within its timeout and turns its error into a
// status.
func runOne(ctx context.Context, env Env, def *definition) Result {
	timeout := env.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	start := time.Now()
	c := &run{env: env, res: Result{Name: def.name, Feature: def.feature}}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := func() (err error) {
		// Checks run on their own goroutines: a panicking check is that
		// check's failure, not the end of every other check's cleanup.
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("check panicked: %v", p)
			}
		}()
		return def.run(cctx, c)
	}()
	c.res.Duration = time.Since(start).Round(time.Millisecond)
	var se *statusError
	switch {
	case err == nil:
		c.res.Status = Pass
	case errors.As(err, &se):
		c.res.Status = se.status
		c.res.Reason = se.reason
	default:
		c.res.Status = Fail
		c.res.Reason = err.Error()
	}
	return c.res
}

// statusError ends a check with a status other than pass or fail.
type statusError struct {
	status Status
	reason string
}

func (e *statusError) Error() string { return string(e.status) + ": " + e.reason }

func unsupported(format string, args ...any) error {
	return &statusError{status: Unsupported, reason: fmt.Sprintf(format, args...)}
}

func skipped(format string, args ...any) error {
	return &statusError{status: Skipped, reason: fmt.Sprintf(format, args...)}
}

// run is one check in progress.
type run struct {
	env Env
	res Result
}

func (c *run) client() kubernetes.Interface { return c.env.Client }

// detail records a step that succeeded, so a failure later shows how far
// the check got, and a skip shows what the API side proved.
func (c *run) detail(format string, args ...any) {
	c.res.Details = append(c.res.Details, fmt.Sprintf(format, args...))
}

// APISidePassed is the prefix of the reason of a check skipped for lack of
// nodes after its API-side steps passed.
const APISidePassed = "needs nodes (API side passed)"

// needNodes ends the check as skipped when there is no node access.
func (c *run) needNodes(what string) error {
	if c.env.Nodes == nil {
		if len(c.res.Details) == 0 {
			return skipped("needs nodes: %s", what)
		}
		return skipped("%s: %s", APISidePassed, what)
	}
	return nil
}

// exec runs a command on a node, with the command and its output in the
// error.
func (c *run) exec(ctx context.Context, node string, cmd ...string) (string, error) {
	out, err := c.env.Nodes.Exec(ctx, node, nil, cmd...)
	if err != nil {
		return string(out), fmt.Errorf("on node %s, %s: %w", node, strings.Join(cmd, " "), err)
	}
	return string(out), nil
}

// firstPoll is poll's first wait: most of what a check waits for (a
// controller's update, kube-proxy's sync, the kubelet's status) happens
// within a few hundred milliseconds, and each poll costs one API or exec
// call, so waiting a full interval from the start only adds time.
const firstPoll = 100 * time.Millisecond

// poll calls cond until it reports done, returns an error, or ctx ends,
// waiting 100 ms after the first call and half as long again after each
// later one, up to interval; on timeout the error carries cond's last "why
// not", and when the check itself was stopped (cancelled, or its own
// timeout) it says so.
func poll(ctx context.Context, interval, timeout time.Duration, cond func(ctx context.Context) (done bool, why string, err error)) error {
	outer := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	backoff := wait.Backoff{Duration: min(firstPoll, interval), Factor: 1.5, Cap: interval, Steps: math.MaxInt32}
	var why string
	for {
		done, w, err := cond(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if w != "" {
			why = w
		}
		select {
		case <-ctx.Done():
			if why == "" {
				why = "condition not met"
			}
			if outer.Err() != nil {
				return fmt.Errorf("%s (stopped: %w)", why, context.Cause(outer))
			}
			return fmt.Errorf("%s (after %s)", why, timeout)
		case <-time.After(backoff.Step()):
		}
	}
}

// cleanupContext outlives the check's own context so that cleanup runs
// even when the check timed out.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}

// joinCleanup adds a cleanup failure to the check's outcome: leftover state
// (a tainted node, a full Service range) is a failure even if the feature
// worked.
func joinCleanup(err *error, cerr error) {
	if cerr == nil {
		return
	}
	if *err == nil {
		*err = fmt.Errorf("cleanup: %w", cerr)
		return
	}
	// %v, not %w: a skipped or unsupported outcome with leftovers is a failure.
	*err = fmt.Errorf("%v; cleanup: %v", *err, cerr)
}

// AllOf is a Gate that opens once every one of gates (nil ones left out)
// has opened, with the error of the first of them, in order, that has one.
// It is nil when no gate is given.
func AllOf(gates ...Gate) Gate {
	var gs []Gate
	for _, g := range gates {
		if g != nil {
			gs = append(gs, g)
		}
	}
	switch len(gs) {
	case 0:
		return nil
	case 1:
		return gs[0]
	}
	l := NewLatch()
	go func() {
		for _, g := range gs {
			<-g.Done()
		}
		var err error
		for _, g := range gs {
			if err = g.Err(); err != nil {
				break
			}
		}
		l.Open(err)
	}()
	return l
}

// Latch is a Gate opened once, by its first Open.
type Latch struct {
	once sync.Once
	done chan struct{}
	err  error
}

// NewLatch returns a closed Latch.
func NewLatch() *Latch { return &Latch{done: make(chan struct{})} }

// Open opens the latch with err (nil: go ahead); later calls do nothing.
func (l *Latch) Open(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
	})
}

// Done implements Gate.
func (l *Latch) Done() <-chan struct{} { return l.done }

// Err implements Gate; nil until the latch is open.
func (l *Latch) Err() error {
	select {
	case <-l.done:
		return l.err
	default:
		return nil
	}
}
