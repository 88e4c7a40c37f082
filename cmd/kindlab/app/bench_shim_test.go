package app_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kindlab/kindlab/provision/crishim"
	"github.com/kindlab/kindlab/provision/registry"
)

// BenchmarkCRIShimPodStart measures what kindlab's CRI shim costs: on one
// node of the image-volume lab, bursts of 30 pods created at once, timed
// from the first create to all Running, alternately with the kubelet
// talking to the shim and straight to containerd (the same node, the same
// containerd, the kubelet restarted with the other --container-runtime-
// endpoint in between), and the shim process's CPU and memory read from
// /proc in the node while idle and during the bursts.
//
//	make bench-shim   (KINDLAB_BENCH_ROUNDS=N bursts per mode, default 3)
func BenchmarkCRIShimPodStart(b *testing.B) {
	img := requireE2E(b)
	isolate(b)
	name := "kindlab-bench-shim"
	registryBefore := containerExists(registry.ContainerName)
	b.Cleanup(func() { run(b, downArgs(name, registryBefore)...) })
	if code, _, errOut := run(b, "up", shimLab, "--name", name, "--image", img, "--skip-checks"); code != 0 {
		b.Fatalf("up: %s", errOut)
	}
	node := name + "-control-plane"
	cs := e2eClient(b, name)
	ctx := context.Background()
	reader, err := cs.CoreV1().Pods("kindlab-image-volume").Get(ctx, "model-reader", metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	image := reader.Spec.Containers[0].Image // pulled already
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("KINDLAB_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	const pods = 30

	shimPID := func() string {
		out, err := dockerExec(node, "systemctl", "show", "-p", "MainPID", "--value", crishim.UnitName)
		if err != nil || strings.TrimSpace(out) == "0" {
			b.Fatalf("shim's pid: %v %q", err, out)
		}
		return strings.TrimSpace(out)
	}
	pid := shimPID()
	idle := sampleProc(b, node, pid, 10*time.Second, nil)
	b.Logf("shim idle (10 s, lab up, no pods starting): CPU %.2f%% of one core, RSS %d KiB", idle.cpuPercent(), idle.rssMaxKiB)

	times := map[string][]time.Duration{}
	perPod := map[string][]time.Duration{}
	var burst procSample
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		order := []string{"shim", "direct"}
		if r%2 == 1 {
			order = []string{"direct", "shim"}
		}
		for _, mode := range order {
			endpoint := crishim.Endpoint
			if mode == "direct" {
				endpoint = crishim.ContainerdEndpoint
			}
			kubeletEndpoint(b, cs, node, endpoint)
			var sample procSample
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if mode == "shim" {
				wg.Add(1)
				go func() { defer wg.Done(); sample = sampleProc(b, node, shimPID(), 0, stop) }()
			}
			total, each := podBurst(b, cs, node, image, pods)
			close(stop)
			wg.Wait()
			if mode == "shim" {
				burst.add(sample)
			}
			times[mode] = append(times[mode], total)
			perPod[mode] = append(perPod[mode], each...)
			b.Logf("round %d %-6s: %d pods Running in %s (per pod median %s)", r+1, mode, pods, total.Round(time.Millisecond), median(each).Round(time.Millisecond))
		}
	}
	b.StopTimer()
	kubeletEndpoint(b, cs, node, crishim.Endpoint)
	ratio := float64(median(times["shim"])) / float64(median(times["direct"]))
	perPodRatio := float64(median(perPod["shim"])) / float64(median(perPod["direct"]))
	b.Logf("time to %d pods Running, median of %d bursts: through the shim %s, straight to containerd %s: ratio %.3f",
		pods, rounds, median(times["shim"]).Round(time.Millisecond), median(times["direct"]).Round(time.Millisecond), ratio)
	b.Logf("per-pod create→Running median: shim %s, direct %s: ratio %.3f", median(perPod["shim"]).Round(time.Millisecond),
		median(perPod["direct"]).Round(time.Millisecond), perPodRatio)
	b.Logf("shim during the bursts: CPU %.2f%% of one core on average over %s, RSS up to %d KiB (idle: %.2f%%, %d KiB)",
		burst.cpuPercent(), burst.wall.Round(time.Millisecond), burst.rssMaxKiB, idle.cpuPercent(), idle.rssMaxKiB)
	b.ReportMetric(ratio, "shim/direct")
	b.ReportMetric(float64(median(times["shim"]).Milliseconds()), "ms-shim")
	b.ReportMetric(float64(median(times["direct"]).Milliseconds()), "ms-direct")
	b.ReportMetric(idle.cpuPercent(), "%cpu-idle")
	b.ReportMetric(burst.cpuPercent(), "%cpu-burst")
	b.ReportMetric(float64(burst.rssMaxKiB), "KiB-rss-burst")
}

func dockerExec(node string, cmd ...string) (string, error) {
	out, err := exec.Command("docker", append([]string{"exec", node}, cmd...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker exec %s %s: %w: %s", node, strings.Join(cmd, " "), err, out)
	}
	return string(out), nil
}

// kubeletEndpoint restarts the node's kubelet with another
// --container-runtime-endpoint (kubeadm-flags.env) and waits until the node
// is Ready again with a heartbeat newer than the restart.
func kubeletEndpoint(b *testing.B, cs kubernetes.Interface, node, endpoint string) {
	b.Helper()
	script := fmt.Sprintf(`sed -i 's#--container-runtime-endpoint=[^ "]*#--container-runtime-endpoint=%s#' /var/lib/kubelet/kubeadm-flags.env && systemctl restart kubelet`, endpoint)
	restarted := time.Now()
	if _, err := dockerExec(node, "sh", "-c", script); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err == nil {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && c.LastHeartbeatTime.Time.After(restarted.Add(-time.Second)) {
					cmdline, _ := dockerExec(node, "sh", "-c", "tr '\\0' ' ' < /proc/$(pidof kubelet)/cmdline")
					if !strings.Contains(cmdline, "--container-runtime-endpoint="+endpoint) {
						b.Fatalf("kubelet runs with %q, want endpoint %s", cmdline, endpoint)
					}
					time.Sleep(5 * time.Second) // let its first syncs pass
					return
				}
			}
		}
		if ctx.Err() != nil {
			b.Fatalf("node %s not Ready after the kubelet restarted on %s", node, endpoint)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// podBurst creates n pods at once and returns the time from the first
// create to all Running, and each pod's create→Running time; then deletes
// them and waits until they are gone, from the API and from containerd.
func podBurst(b *testing.B, cs kubernetes.Interface, node, image string, n int) (time.Duration, []time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const ns = "kindlab-bench"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "kindlab.dev/bench=shim"})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	zero := int64(0)
	start := time.Now()
	created := make([]time.Time, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			created[i] = time.Now()
			_, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", i), Labels: map[string]string{"kindlab.dev/bench": "shim"}},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &zero,
					Containers: []corev1.Container{{Name: "pause", Image: image, Args: []string{"pause"},
						ImagePullPolicy: corev1.PullIfNotPresent}},
				},
			}, metav1.CreateOptions{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	running := map[string]time.Time{}
	for len(running) < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				b.Fatal("pod watch ended")
			}
			p, ok := ev.Object.(*corev1.Pod)
			if ok && p.Status.Phase == corev1.PodRunning {
				if _, seen := running[p.Name]; !seen {
					running[p.Name] = time.Now()
				}
			}
		case <-ctx.Done():
			b.Fatalf("%d of %d pods Running after 5 minutes", len(running), n)
		}
	}
	var last time.Time
	var each []time.Duration
	for name, at := range running {
		i, _ := strconv.Atoi(strings.TrimPrefix(name, "bench-"))
		each = append(each, at.Sub(created[i]))
		if at.After(last) {
			last = at
		}
	}
	total := last.Sub(start)
	if err := cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero},
		metav1.ListOptions{LabelSelector: "kindlab.dev/bench=shim"}); err != nil {
		b.Fatal(err)
	}
	for {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "kindlab.dev/bench=shim"})
		if err == nil && len(list.Items) == 0 {
			break
		}
		if ctx.Err() != nil {
			b.Fatal("bench pods not gone after 5 minutes")
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The kubelet tears the sandboxes down after the API objects go: the
	// next burst starts when containerd has none of them left.
	for {
		// ctr, not crictl: kind's node images have the former only for sure.
		// stdout only: ctr warns about cgroup v1 on stderr.
		out, err := exec.Command("docker", "exec", node, "ctr", "-n", "k8s.io", "containers", "ls", "-q",
			`labels."io.kubernetes.pod.namespace"==`+ns).Output()
		if err == nil && strings.TrimSpace(string(out)) == "" {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("bench sandboxes still in containerd after 5 minutes: %s %v", out, err)
		}
		time.Sleep(time.Second)
	}
	return total, each
}

// procSample is a process's CPU time over a wall-clock span and the
// largest resident set seen, read from /proc inside the node.
type procSample struct {
	cpu, wall time.Duration
	rssMaxKiB int
}

func (s *procSample) add(o procSample) {
	s.cpu += o.cpu
	s.wall += o.wall
	s.rssMaxKiB = max(s.rssMaxKiB, o.rssMaxKiB)
}

func (s procSample) cpuPercent() float64 {
	if s.wall == 0 {
		return 0
	}
	return 100 * float64(s.cpu) / float64(s.wall)
}

// sampleProc reads utime+stime (/proc/PID/stat, in clock ticks of 1/100 s)
// and VmRSS (/proc/PID/status) every half second, for d or until stop.
func sampleProc(b *testing.B, node, pid string, d time.Duration, stop <-chan struct{}) procSample {
	read := func() (time.Duration, int) {
		out, err := dockerExec(node, "sh", "-c", "cat /proc/"+pid+"/stat; grep VmRSS /proc/"+pid+"/status")
		if err != nil {
			return 0, -1
		}
		lines := strings.Split(out, "\n")
		stat := lines[0][strings.LastIndex(lines[0], ")")+2:] // fields from 3 on: state is [0]
		f := strings.Fields(stat)
		utime, _ := strconv.Atoi(f[11])
		stime, _ := strconv.Atoi(f[12])
		rss := 0
		if len(lines) > 1 {
			if fs := strings.Fields(lines[1]); len(fs) >= 2 {
				rss, _ = strconv.Atoi(fs[1])
			}
		}
		return time.Duration(utime+stime) * 10 * time.Millisecond, rss
	}
	var s procSample
	start := time.Now()
	cpu0, rss := read()
	s.rssMaxKiB = rss
	var deadline <-chan time.Time
	if d > 0 {
		deadline = time.After(d)
	}
	for {
		done := false
		select {
		case <-stop:
			done = true
		case <-deadline:
			done = true
		case <-time.After(500 * time.Millisecond):
		}
		cpu, rss := read()
		if rss < 0 { // the node or the process went away (a failed run)
			return s
		}
		s.rssMaxKiB = max(s.rssMaxKiB, rss)
		if done {
			s.cpu, s.wall = cpu-cpu0, time.Since(start)
			return s
		}
	}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
