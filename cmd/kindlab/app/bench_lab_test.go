package app_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kindcluster "sigs.k8s.io/kind/pkg/cluster"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/registry"
)

// BenchmarkLabUpVsKind measures issue #16's two ratios in one run on one
// machine, so that the machine's speed cancels out:
//
//   - up/kind: `kindlab up LAB` to its checks done, against plain kind
//     (sigs.k8s.io/kind's own create, as `kind create cluster` runs it) given
//     the config `kindlab render LAB -o kind` prints and the same node image,
//     to a Ready control plane (goal ≤ 1.5): the medians of
//     KINDLAB_BENCH_ROUNDS (default 3) rounds, each timing both, in turns
//     first;
//   - reset/(down+up): `kindlab reset LAB` after an attendee's breaks (a
//     Deployment deleted, another scaled to 0), against taking the lab down
//     (keeping the registry) and bringing it up again (goal ≤ 0.1): the
//     median of three resets against the medians of the rounds' downs and
//     ups.
//
// Each phase's seconds are reported too. LAB is all-features unless
// KINDLAB_BENCH_LAB names another.
//
//	make bench-lab
func BenchmarkLabUpVsKind(b *testing.B) {
	img := requireE2E(b)
	dir := isolate(b)
	lab := os.Getenv("KINDLAB_BENCH_LAB")
	if lab == "" {
		lab = "all-features"
	}
	name := "kindlab-bench-lab"
	registryBefore := containerExists(registry.ContainerName)
	b.Cleanup(func() { run(b, downArgs(name, registryBefore)...) })
	ctx := context.Background()
	e, err := engine.Open(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	kind := e.Kind()

	kindKubeconfig := filepath.Join(dir, "kind.kubeconfig")
	p, err := cluster.New(ctx, e)
	if err != nil {
		b.Fatal(err)
	}
	// One sample of each is noise on these machines: plain kind alone took
	// 37 s and 75 s in two runs of one evening (the nodes' start depends
	// on what the disk and the other tenants do). Rounds alternate which
	// goes first, and the ratio is of the medians.
	rounds := 3
	if v := os.Getenv("KINDLAB_BENCH_ROUNDS"); v != "" {
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 1 {
			b.Fatalf("KINDLAB_BENCH_ROUNDS=%q: want a count of at least 1", v)
		}
	}
	timeKind := func() time.Duration {
		// Rendered again each time: the config mounts files render writes
		// into the cluster's state directory, which down removes.
		code, cfg, errOut := run(b, "render", lab, "--name", name, "--image", img, "-o", "kind")
		if code != 0 {
			b.Fatalf("render: exit %d: %s", code, errOut)
		}
		start := time.Now()
		err := kind.Create(name, kindcluster.CreateWithRawConfig([]byte(cfg)),
			kindcluster.CreateWithWaitForReady(5*time.Minute), kindcluster.CreateWithKubeconfigPath(kindKubeconfig))
		took := time.Since(start)
		// Deleted through kindlab's provider, which thaws a pod cgroup left
		// frozen in a node (engine.ThawFrozen) that plain kind cannot kill;
		// the delete is not timed.
		if derr := p.Delete(ctx, name, kindKubeconfig); err != nil || derr != nil {
			b.Fatalf("kind create %s: %v (delete: %v)", name, err, derr)
		}
		b.Logf("plain kind create took %s", took.Round(100*time.Millisecond))
		return took
	}
	labUp := false
	var downs []time.Duration
	timeUp := func(keep bool) time.Duration {
		start := time.Now()
		code, _, errOut := run(b, "up", lab, "--name", name, "--image", img)
		took := time.Since(start)
		if code != 0 {
			b.Fatalf("up: exit %d: %s", code, errOut)
		}
		b.Logf("up took %s:\n%s", took.Round(100*time.Millisecond), errOut)
		labUp = keep
		if !keep {
			// The registry stays, as it does between the labs of a
			// workshop: it holds the images pushed offline (make
			// offline-images, kit load), which a new one would not have.
			start := time.Now()
			if code, _, errOut := run(b, "down", "--name", name, "--keep-registry"); code != 0 {
				b.Fatalf("down: exit %d: %s", code, errOut)
			}
			downs = append(downs, time.Since(start))
		}
		return took
	}
	b.ResetTimer()
	var kinds, ups []time.Duration
	for r := 0; r < rounds; r++ {
		if r%2 == 0 {
			kinds = append(kinds, timeKind())
			// The last up stays for reset (its down is not timed anyway).
			ups = append(ups, timeUp(r == rounds-1))
		} else {
			ups = append(ups, timeUp(false))
			kinds = append(kinds, timeKind())
		}
	}
	if !labUp {
		if code, _, errOut := run(b, "up", lab, "--name", name, "--image", img); code != 0 {
			b.Fatalf("up for reset: exit %d: %s", code, errOut)
		}
	}
	kindTime, upTime := median(kinds), median(ups)
	b.Logf("plain kind: %v; up: %v (medians %s, %s)", rounded(kinds), rounded(ups), kindTime.Round(100*time.Millisecond), upTime.Round(100*time.Millisecond))

	// An attendee's breaks, then reset, three times: the median against
	// the medians of a down and an up (down+up, as a workshop would do
	// instead), each from the rounds above.
	cs := e2eClient(b, name)
	var resets []time.Duration
	for i := 0; i < 3; i++ {
		if err := cs.AppsV1().Deployments("kindlab-kube-proxy-health").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			b.Fatalf("break the lab: %v", err)
		}
		scale, err := cs.AppsV1().Deployments("kindlab-nftables").GetScale(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			b.Fatalf("break the lab: %v", err)
		}
		scale.Spec.Replicas = 0
		if _, err := cs.AppsV1().Deployments("kindlab-nftables").UpdateScale(ctx, "echo", scale, metav1.UpdateOptions{FieldManager: "kubectl"}); err != nil {
			b.Fatalf("break the lab: %v", err)
		}
		start := time.Now()
		code, _, errOut := run(b, "reset", lab, "--name", name)
		took := time.Since(start)
		if code != 0 {
			b.Fatalf("reset: exit %d: %s", code, errOut)
		}
		b.Logf("reset took %s:\n%s", took.Round(100*time.Millisecond), errOut)
		resets = append(resets, took)
	}
	if len(downs) == 0 { // one round: its up stayed for reset
		start := time.Now()
		if code, _, errOut := run(b, "down", "--name", name, "--keep-registry"); code != 0 {
			b.Fatalf("down: exit %d: %s", code, errOut)
		}
		downs = append(downs, time.Since(start))
	}
	resetTime, downUpTime := median(resets), median(downs)+upTime
	b.Logf("reset: %v; down: %v (medians %s, %s)", rounded(resets), rounded(downs), resetTime.Round(100*time.Millisecond), median(downs).Round(100*time.Millisecond))
	b.StopTimer()

	b.ReportMetric(kindTime.Seconds(), "kind-s")
	b.ReportMetric(upTime.Seconds(), "up-s")
	b.ReportMetric(upTime.Seconds()/kindTime.Seconds(), "up/kind")
	b.ReportMetric(resetTime.Seconds(), "reset-s")
	b.ReportMetric(downUpTime.Seconds(), "down+up-s")
	b.ReportMetric(resetTime.Seconds()/downUpTime.Seconds(), "reset/(down+up)")
}

func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Millisecond)
	}
	return out
}
