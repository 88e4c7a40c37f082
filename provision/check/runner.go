package check

import (
	"context"
	"fmt"
	"slices"
)

type finished struct {
	i   int
	res Result
}

// schedule runs defs (nil: an unknown name) and returns their results by
// index. One goroutine decides what starts: whenever a check ends it starts,
// in names' order, every pending check that fits within the parallelism and
// collides with no running check. With nothing running the first pending
// check always fits, so the run cannot stall, and with parallelism 1 the
// checks run one after another in order, as before. A check with a closed
// Gate (Env.Gates) is not startable until the gate opens, which wakes the
// loop; a gate that opens with an error fails its check unstarted.
func schedule(ctx context.Context, env Env, names []string, defs []*definition) []Result {
	par := env.Parallelism
	if par <= 0 {
		par = DefaultParallelism
	}
	out := make([]Result, len(defs))
	have := make([]bool, len(defs))
	var pending []int
	for i, d := range defs {
		if d == nil {
			out[i], have[i] = unknown(names[i]), true
			continue
		}
		pending = append(pending, i)
	}
	reported := 0
	report := func() {
		for reported < len(out) && have[reported] {
			if env.Progress != nil {
				env.Progress(out[reported])
			}
			reported++
		}
	}
	report()

	// A gated check is pending but not startable until its gate opens;
	// one goroutine per gate says when (or gives up with ctx).
	gated := map[int]Gate{}
	opened := make(chan int, len(defs))
	gctx, stopGates := context.WithCancel(ctx)
	defer stopGates()
	if env.Gates != nil {
		for _, i := range pending {
			g := env.Gates(names[i])
			if g == nil {
				continue
			}
			gated[i] = g
			go func() {
				select {
				case <-g.Done():
					opened <- i
				case <-gctx.Done():
				}
			}()
		}
	}

	running := map[int]*definition{}
	// Buffered: a check that ends while the loop reports progress does not
	// wait for it. schedule still waits for every check it started.
	done := make(chan finished, len(defs))
	ctxDone := ctx.Done()
	for len(pending) > 0 || len(running) > 0 {
		if ctx.Err() == nil {
			rest := pending[:0]
			for _, i := range pending {
				if _, waits := gated[i]; waits {
					rest = append(rest, i)
					continue
				}
				if len(running) < par && !collides(defs[i], running) {
					running[i] = defs[i]
					go func(i int, d *definition) { done <- finished{i, runOne(ctx, env, d)} }(i, defs[i])
					continue
				}
				rest = append(rest, i)
			}
			pending = rest
		}
		select {
		case f := <-done:
			delete(running, f.i)
			out[f.i], have[f.i] = f.res, true
		case i := <-opened:
			g := gated[i]
			delete(gated, i)
			if err := g.Err(); err != nil && !have[i] {
				out[i], have[i] = Result{Name: defs[i].name, Feature: defs[i].feature, Status: Fail,
					Reason: fmt.Sprintf("not started: %v", err)}, true
				pending = slices.DeleteFunc(pending, func(p int) bool { return p == i })
			}
		case <-ctxDone:
			// Stop starting checks; the running ones see ctx too and end.
			ctxDone = nil
			for _, i := range pending {
				out[i], have[i] = Result{Name: defs[i].name, Feature: defs[i].feature, Status: Fail,
					Reason: fmt.Sprintf("not started: %v", context.Cause(ctx))}, true
			}
			pending = nil
		}
		report()
	}
	return out
}

// collides reports whether d must wait for one of the running checks.
func collides(d *definition, running map[int]*definition) bool {
	for _, r := range running {
		if d.conflicts(r) {
			return true
		}
	}
	return false
}
