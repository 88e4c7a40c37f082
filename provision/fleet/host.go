package fleet

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/kindlab/kindlab/provision/doctor"
	"github.com/kindlab/kindlab/provision/engine"
)

// What one kind node of Kubernetes 1.31 takes from the host, measured on
// the offline node image (kindlab.local/node:v1.31.14, kind v0.31.0's
// layout) with a lab's workloads running. inotify instances are per user,
// and every node's processes run as root on the host's root user, so they
// add up across clusters: a control plane holds about 28 (kubelet 7,
// kube-controller-manager 7, kube-apiserver 6, systemd 4, containerd 2,
// kube-proxy 1), a worker about 14 (kubelet, systemd, containerd,
// kube-proxy). Past the limit kubelets and systemd fail with "too many
// open files" (kind's known issues), which is why --count is refused
// before anything is created rather than failing a minute in.
const (
	controlPlaneInotify = 30
	workerInotify       = 16
	// Watches per node are a few hundred; the default limit (8192 on old
	// kernels, far more on new ones) is what can bind.
	controlPlaneWatches = 1000
	workerWatches       = 500
	// Resident memory after the lab's checks ran: 650 MiB for a control
	// plane, 250 MiB for a worker.
	controlPlaneMemory = 768 << 20
	workerMemory       = 384 << 20
	// memoryReserve is left for the host, the registry and kindlab.
	memoryReserve = 1 << 30
)

// Shape is what one cluster of a lab needs: its nodes by role.
type Shape struct {
	ControlPlanes int `json:"controlPlanes"`
	Workers       int `json:"workers"`
}

func (s Shape) inotify() int { return s.ControlPlanes*controlPlaneInotify + s.Workers*workerInotify }
func (s Shape) watches() int { return s.ControlPlanes*controlPlaneWatches + s.Workers*workerWatches }
func (s Shape) memory() int64 {
	return int64(s.ControlPlanes)*controlPlaneMemory + int64(s.Workers)*workerMemory
}

// Host is what the machine has left for more clusters.
type Host struct {
	CPUs int `json:"cpus"`
	// MemAvailable is /proc/meminfo's MemAvailable in bytes; -1 if unknown.
	MemAvailable int64 `json:"memAvailable"`
	// InotifyInstances and InotifyWatches are fs.inotify.max_user_*; -1 if unknown.
	InotifyInstances int `json:"inotifyInstances"`
	InotifyWatches   int `json:"inotifyWatches"`
	// InotifyInUse is how many instances root holds now (counted in /proc,
	// or estimated from the kind nodes running when /proc is not readable).
	InotifyInUse int `json:"inotifyInUse"`
	// NodesRunning counts the kind node containers on the engine.
	NodesRunning int `json:"nodesRunning"`
}

// MeasureHost reads the limits and what is in use now.
func MeasureHost(ctx context.Context, e *engine.Engine) Host {
	h := Host{
		CPUs:             runtime.NumCPU(),
		MemAvailable:     memAvailable(),
		InotifyInstances: doctor.ProcInt("/proc/sys/fs/inotify/max_user_instances"),
		InotifyWatches:   doctor.ProcInt("/proc/sys/fs/inotify/max_user_watches"),
		NodesRunning:     kindNodes(ctx, e),
	}
	// Another user's descriptors are only readable by root; elsewhere the
	// running nodes are the best estimate of root's use.
	counted := -1
	if os.Geteuid() == 0 {
		counted = rootInotifyInstances()
	}
	h.InotifyInUse = max(counted, h.NodesRunning*workerInotify)
	return h
}

// Limit is how many more clusters of a shape the host takes, and what
// binds first (for the error message).
type Limit struct {
	Clusters int    `json:"clusters"`
	Reason   string `json:"reason"`
	Fix      string `json:"fix,omitempty"`
}

// MaxClusters is how many more clusters of shape s this host can run, and
// the limit that binds first; its Fix makes room for 4 more than are in use.
func (h Host) MaxClusters(s Shape) Limit { return h.MaxClustersFor(s, 4) }

// MaxClustersFor is MaxClusters with a Fix sized for want new clusters: the
// inotify limits that fit them (twice what they and the ones in use need,
// as kind's known-issues page advises generous limits), and, when memory
// would then bind below want, that too.
func (h Host) MaxClustersFor(s Shape, want int) Limit {
	nodes := fmt.Sprintf("%d node(s)", s.ControlPlanes+s.Workers)
	want = max(want, 1)
	inotifyFix := fmt.Sprintf("raise it: sudo sysctl fs.inotify.max_user_instances=%d fs.inotify.max_user_watches=%d",
		max(h.InotifyInstances, 2*(h.InotifyInUse+want*s.inotify())), max(h.InotifyWatches, 524288, 2*want*s.watches()))
	if h.MemAvailable > 0 && s.memory() > 0 {
		if byMemory := int((h.MemAvailable - memoryReserve) / s.memory()); byMemory < want {
			inotifyFix += fmt.Sprintf("; memory then allows %d (%.1f GiB available, about %.1f GiB a cluster)",
				max(byMemory, 0), float64(h.MemAvailable)/(1<<30), float64(s.memory())/(1<<30))
		}
	}
	var limits []Limit
	if h.InotifyInstances > 0 && s.inotify() > 0 {
		limits = append(limits, Limit{
			Clusters: (h.InotifyInstances - h.InotifyInUse) / s.inotify(),
			Reason: fmt.Sprintf("fs.inotify.max_user_instances=%d with %d in use, and a cluster of %s needs about %d",
				h.InotifyInstances, h.InotifyInUse, nodes, s.inotify()),
			Fix: inotifyFix,
		})
	}
	if h.InotifyWatches > 0 && s.watches() > 0 {
		limits = append(limits, Limit{
			Clusters: h.InotifyWatches / s.watches(),
			Reason:   fmt.Sprintf("fs.inotify.max_user_watches=%d, and a cluster of %s needs about %d", h.InotifyWatches, nodes, s.watches()),
			Fix:      inotifyFix,
		})
	}
	if h.MemAvailable > 0 && s.memory() > 0 {
		limits = append(limits, Limit{
			Clusters: int((h.MemAvailable - memoryReserve) / s.memory()),
			Reason: fmt.Sprintf("%.1f GiB of memory available, and a cluster of %s needs about %.1f GiB (1 GiB is kept for the host)",
				float64(h.MemAvailable)/(1<<30), nodes, float64(s.memory())/(1<<30)),
			Fix: "free memory, or run fewer clusters",
		})
	}
	best := Limit{Clusters: 1 << 20, Reason: "no host limit could be read"}
	for _, l := range limits {
		if l.Clusters < best.Clusters {
			best = l
		}
	}
	best.Clusters = max(best.Clusters, 0)
	return best
}

// Parallel is how many clusters to create at once: creating one keeps
// about a core busy (kubeadm, etcd and the apiserver starting), so one per
// CPU, never more than are asked for or than fit.
func (h Host) Parallel(count int, limit Limit) int {
	return max(1, min(count, max(h.CPUs, 1), limit.Clusters))
}

func memAvailable() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}

// rootInotifyInstances counts the inotify descriptors of processes whose
// real user is root: the user whose max_user_instances kind nodes use up.
func rootInotifyInstances() int {
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return -1
	}
	n := 0
	for _, p := range procs {
		if !rootOwned(p) {
			continue
		}
		fds, err := os.ReadDir(filepath.Join(p, "fd"))
		if err != nil {
			continue // exited meanwhile
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(p, "fd", fd.Name())); err == nil && l == "anon_inode:inotify" {
				n++
			}
		}
	}
	return n
}

func rootOwned(proc string) bool {
	b, err := os.ReadFile(filepath.Join(proc, "status"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			return len(f) > 0 && f[0] == "0"
		}
	}
	return false
}

// kindNodes counts kind node containers, running or not (a stopped node
// starts again with the engine); 0 when the engine cannot say (or there is
// none: nil e).
func kindNodes(ctx context.Context, e *engine.Engine) int {
	if e == nil {
		return 0
	}
	cs, err := e.KindNodeContainers(ctx)
	if err != nil {
		return 0
	}
	return len(cs)
}

// BaseShape is the base lab's layout (one control plane, two workers), for
// sizing when no lab is named.
var BaseShape = Shape{ControlPlanes: 1, Workers: 2}

// ShapeOfNodes is the shape of a lab's node list.
func ShapeOfNodes(roles []string) Shape {
	var s Shape
	for _, r := range roles {
		if r == "control-plane" {
			s.ControlPlanes++
		} else {
			s.Workers++
		}
	}
	return s
}

// CapacityFinding is doctor's verdict on running clusters more clusters of
// shape s here, by the same measure and limit `up --count` applies
// (MaxClusters): Fail when up --count would refuse that many.
func (h Host) CapacityFinding(s Shape, clusters int) doctor.Finding {
	l := h.MaxClustersFor(s, clusters)
	detail := fmt.Sprintf("room for %d more cluster(s) of %d node(s): %s", l.Clusters, s.ControlPlanes+s.Workers, l.Reason)
	if clusters <= l.Clusters {
		return doctor.Finding{Check: "capacity", Level: doctor.OK, Detail: detail}
	}
	return doctor.Finding{Check: "capacity", Level: doctor.Fail, Detail: detail,
		Affects: fmt.Sprintf("--count %d: up refuses more than %d, and past the inotify limit kubelets fail with \"too many open files\"", clusters, l.Clusters),
		Fix:     l.Fix}
}
