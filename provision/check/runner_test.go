package check_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindlab/kindlab/provision/check"
)

// span is when one fake check ran.
type span struct{ start, end time.Time }

// recorder records when each fake ran and how many ran at once.
type recorder struct {
	mu       sync.Mutex
	spans    map[string]span
	now, max int
}

func (r *recorder) fake(name string, d time.Duration, changes, needs []check.Resource) check.FakeCheck {
	return check.FakeCheck{Name: name, Changes: changes, Needs: needs, Run: func(ctx context.Context) error {
		r.mu.Lock()
		r.now++
		r.max = max(r.max, r.now)
		start := time.Now()
		r.mu.Unlock()
		var err error
		select {
		case <-time.After(d):
		case <-ctx.Done():
			err = ctx.Err()
		}
		r.mu.Lock()
		r.now--
		r.spans[name] = span{start, time.Now()}
		r.mu.Unlock()
		return err
	}}
}

func overlap(a, b span) bool { return a.start.Before(b.end) && b.start.Before(a.end) }

func collide(a, b check.FakeCheck) bool {
	for _, r := range a.Changes {
		if slices.Contains(b.Changes, r) || slices.Contains(b.Needs, r) {
			return true
		}
	}
	for _, r := range b.Changes {
		if slices.Contains(a.Needs, r) {
			return true
		}
	}
	return false
}

// TestRunnerOrderAndCollisions: later checks finish first, yet results and
// progress come in the given order; no two colliding checks overlap, checks
// needing the same state do overlap, and never more than Parallelism run.
func TestRunnerOrderAndCollisions(t *testing.T) {
	const A, B = check.Resource("a"), check.Resource("b")
	r := &recorder{spans: map[string]span{}}
	ch, nd := func(rs ...check.Resource) []check.Resource { return rs }, func(rs ...check.Resource) []check.Resource { return rs }
	fakes := []check.FakeCheck{
		r.fake("needs-a-1", 300*time.Millisecond, nil, nd(A)),
		r.fake("changes-a", 150*time.Millisecond, ch(A), nil),
		r.fake("needs-a-2", 250*time.Millisecond, nil, nd(A)),
		r.fake("free-1", 200*time.Millisecond, nil, nil),
		r.fake("changes-b-1", 150*time.Millisecond, ch(B), nil),
		r.fake("changes-b-2", 100*time.Millisecond, ch(B), nil),
		r.fake("changes-a-b", 100*time.Millisecond, ch(A, B), nil),
		r.fake("free-2", 50*time.Millisecond, nil, nil),
		r.fake("needs-a-3", 20*time.Millisecond, nil, nd(A)),
	}
	var progress []string
	env := check.Env{Parallelism: 3, Progress: func(res check.Result) {
		progress = append(progress, res.Name)
		// A result is reported only once every earlier one is in.
		if i := len(progress) - 1; res.Name != fakes[i].Name {
			t.Errorf("progress %d is %s, want %s", i, res.Name, fakes[i].Name)
		}
	}}
	res := check.RunFakes(context.Background(), env, fakes)
	if len(res) != len(fakes) || len(progress) != len(fakes) {
		t.Fatalf("%d results, %d progress calls for %d checks", len(res), len(progress), len(fakes))
	}
	for i, f := range fakes {
		if res[i].Name != f.Name || res[i].Status != check.Pass || res[i].Duration <= 0 {
			t.Errorf("result %d: %+v, want %s passed with a duration", i, res[i], f.Name)
		}
	}
	if r.max > 3 {
		t.Errorf("%d checks ran at once, Parallelism is 3", r.max)
	}
	if r.max < 2 {
		t.Errorf("checks never ran concurrently")
	}
	for i, a := range fakes {
		for _, b := range fakes[i+1:] {
			sa, sb := r.spans[a.Name], r.spans[b.Name]
			if collide(a, b) && overlap(sa, sb) {
				t.Errorf("%s (%v) and %s (%v) collide but overlapped", a.Name, a.Changes, b.Name, b.Changes)
			}
		}
	}
	if !overlap(r.spans["needs-a-1"], r.spans["needs-a-2"]) {
		t.Errorf("needs-a-1 and needs-a-2 only need A: they should have run together")
	}
}

// TestRunnerParallelismOne: one at a time, in the given order, as Run did
// before checks ran concurrently.
func TestRunnerParallelismOne(t *testing.T) {
	r := &recorder{spans: map[string]span{}}
	var fakes []check.FakeCheck
	for i := range 5 {
		fakes = append(fakes, r.fake(fmt.Sprint("c", i), time.Duration(50-10*i)*time.Millisecond, nil, nil))
	}
	check.RunFakes(context.Background(), check.Env{Parallelism: 1}, fakes)
	for i := 1; i < len(fakes); i++ {
		prev, cur := r.spans[fakes[i-1].Name], r.spans[fakes[i].Name]
		if cur.start.Before(prev.end) {
			t.Errorf("%s started before %s ended", fakes[i].Name, fakes[i-1].Name)
		}
	}
}

// TestRunnerCancel: cancelling stops the running checks at once and reports
// every check, the ones never started as failed.
func TestRunnerCancel(t *testing.T) {
	const A = check.Resource("a")
	r := &recorder{spans: map[string]span{}}
	fakes := []check.FakeCheck{
		r.fake("long-1", time.Hour, []check.Resource{A}, nil),
		r.fake("long-2", time.Hour, nil, nil),
		r.fake("waits-for-long-1", time.Millisecond, nil, []check.Resource{A}),
		r.fake("beyond-parallelism", time.Millisecond, nil, nil),
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	var progress int
	start := time.Now()
	res := check.RunFakes(ctx, check.Env{Parallelism: 2, Progress: func(check.Result) { progress++ }}, fakes)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Run returned %s after the cancel, want promptly", took)
	}
	if len(res) != len(fakes) || progress != len(fakes) {
		t.Fatalf("%d results, %d progress calls for %d checks", len(res), progress, len(fakes))
	}
	for i, want := range []string{"context canceled", "context canceled", "not started: context canceled", "not started: context canceled"} {
		if res[i].Name != fakes[i].Name || res[i].Status != check.Fail || !strings.Contains(res[i].Reason, want) {
			t.Errorf("result %d: %s %s %q, want %s failed with %q", i, res[i].Name, res[i].Status, res[i].Reason, fakes[i].Name, want)
		}
	}
	if _, ran := r.spans["waits-for-long-1"]; ran {
		t.Errorf("a check that never got its turn ran after the cancel")
	}
}

// TestRunnerPanic: a panicking check is its own failure; the others run.
func TestRunnerPanic(t *testing.T) {
	res := check.RunFakes(context.Background(), check.Env{}, []check.FakeCheck{
		{Name: "boom", Run: func(context.Context) error { panic("boom") }},
		{Name: "fine", Run: func(context.Context) error { return nil }},
		{Name: "broken", Run: func(context.Context) error { return errors.New("broken") }},
	})
	if res[0].Status != check.Fail || !strings.Contains(res[0].Reason, "panicked: boom") || res[1].Status != check.Pass || res[2].Reason != "broken" {
		t.Errorf("got %+v", res)
	}
}

// TestDeclaredCollisions pins which real checks may never overlap, and why
// (the declarations are in each check's file).
func TestDeclaredCollisions(t *testing.T) {
	want := map[[2]string]bool{}
	pair := func(a, b string) { want[[2]string{a, b}], want[[2]string{b, a}] = true, true }
	// kube-proxy-health's taint is PreferNoSchedule: it keeps no pending
	// pod off its node, so it runs beside the checks waiting for pods.
	// kube-proxy-health picks a worker, traffic-distribution a node per
	// zone, from the API's Node list, leaving out the probe Node that
	// node-bound-token adds to it, so they run beside it
	// (TestProbeNodesLeftOut).
	// A check that changes something collides with another run of itself.
	for _, n := range []string{"kube-proxy-health", "pv-reclaim-policy", "node-bound-token", "multi-service-cidr", "allocated-resources-status", "anonymous-auth"} {
		pair(n, n)
	}
	for _, a := range check.Names() {
		for _, b := range check.Names() {
			if got := check.Collide(a, b); got != want[[2]string{a, b}] {
				t.Errorf("%s and %s collide = %v, want %v", a, b, got, !got)
			}
		}
	}
}

// TestProgressLines: what `kindlab check`, up and reset print per check and
// at the end.
func TestProgressLines(t *testing.T) {
	var b strings.Builder
	p := check.ProgressTo(&b)
	p(check.Result{Name: "nftables", Status: check.Pass, Duration: 2140 * time.Millisecond})
	p(check.Result{Name: "apparmor", Status: check.Fail, Reason: "broke\nsecond line", Duration: time.Second})
	p(check.Result{Name: "image-volume", Status: check.Unsupported, Reason: "old containerd"})
	want := "   ✓ nftables pass (2.1s)\n   ✗ apparmor fail (1s): broke …\n   - image-volume unsupported (0s)\n"
	if b.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", b.String(), want)
	}
	if check.ProgressTo(nil) != nil {
		t.Errorf("ProgressTo(nil) prints somewhere")
	}
	got := check.Summary([]check.Result{{Duration: 2 * time.Second}, {Duration: 3 * time.Second}}, 3100*time.Millisecond, 0)
	if want := "2 checks in 3.1s (5s of checks, up to 4 at a time)"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
}

// TestRunnerGates: a gated check starts only once its gate opens, after
// ungated ones that come later in the order; a gate opened with an error
// fails its check unstarted; results stay in the given order.
func TestRunnerGates(t *testing.T) {
	r := &recorder{spans: map[string]span{}}
	fakes := []check.FakeCheck{
		r.fake("gated", 20*time.Millisecond, nil, nil),
		r.fake("free", 20*time.Millisecond, nil, nil),
		r.fake("broken", 20*time.Millisecond, nil, nil),
	}
	gate, broken := check.NewLatch(), check.NewLatch()
	opened := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		broken.Open(errors.New("workload broken: Deployment x/y has 0 of 1 replicas ready"))
		opened <- time.Now()
		gate.Open(nil)
	}()
	env := check.Env{Parallelism: 4, Gates: func(name string) check.Gate {
		switch name {
		case "gated":
			return gate
		case "broken":
			return broken
		}
		return nil
	}}
	var order []string
	env.Progress = func(res check.Result) { order = append(order, res.Name) }
	res := check.RunFakes(context.Background(), env, fakes)
	at := <-opened
	if !slices.Equal(order, []string{"gated", "free", "broken"}) {
		t.Errorf("progress order %v", order)
	}
	if res[0].Status != check.Pass || res[1].Status != check.Pass {
		t.Errorf("results %+v", res)
	}
	if s := r.spans["gated"]; s.start.Before(at) {
		t.Errorf("gated check started at %s, before its gate opened at %s", s.start, at)
	}
	if s := r.spans["free"]; !s.end.Before(at) {
		t.Errorf("the ungated check waited for another's gate: ended %s, gate %s", s.end, at)
	}
	if _, ran := r.spans["broken"]; ran || res[2].Status != check.Fail || !strings.Contains(res[2].Reason, "0 of 1 replicas") {
		t.Errorf("broken gate: ran %v, result %+v", ran, res[2])
	}
}

// TestAllOf: a gate of several opens once the last of them opens, with the
// first error in the order given; no gate is no gate.
func TestAllOf(t *testing.T) {
	if check.AllOf() != nil || check.AllOf(nil, nil) != nil {
		t.Fatal("AllOf of no gate is not nil")
	}
	a := check.NewLatch()
	if check.AllOf(nil, a) != check.Gate(a) {
		t.Fatal("AllOf of one gate is not that gate")
	}
	b, c := check.NewLatch(), check.NewLatch()
	g := check.AllOf(a, b, c)
	errB, errC := errors.New("b"), errors.New("c")
	c.Open(errC)
	b.Open(errB)
	select {
	case <-g.Done():
		t.Fatal("opened before every gate did")
	case <-time.After(50 * time.Millisecond):
	}
	a.Open(nil)
	select {
	case <-g.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("did not open after every gate did")
	}
	if g.Err() != errB {
		t.Fatalf("err %v, want the first in order (b)", g.Err())
	}
}
