// Package doctor answers "can this machine run the lab, and what do I fix?"
// before a workshop starts: each finding says ok, warn or fail, what it
// means for which lab, and the exact fix.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/system"

	"github.com/kindlab/kindlab/provision/crishim"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/registry"
)

// Level is how bad a finding is.
type Level string

const (
	OK   Level = "ok"
	Warn Level = "warn"
	Fail Level = "fail"
)

// Finding is one thing doctor looked at.
type Finding struct {
	Check   string `json:"check"`
	Level   Level  `json:"level"`
	Detail  string `json:"detail"`
	Affects string `json:"affects,omitempty"`
	Fix     string `json:"fix,omitempty"`
}

// Options say what the user intends to run.
type Options struct {
	// NodeImages are the lab's node images: spec.nodeImage and any
	// spec.nodes[].image (render.Plan.NodeImages).
	NodeImages []string
	// Clusters is how many clusters will run at once (inotify limits scale with it).
	Clusters int
	// RegistryPort is the host port the registry wants.
	RegistryPort int
	// Dir is where disk space is measured (the Docker data root when known).
	Dir string
	// Capacity, when set, judges whether Clusters clusters fit on this
	// host instead of the plain inotify check: the CLI passes fleet's
	// sizing, the one `up --count` measures and enforces (fleet imports
	// this package, so it cannot be called from here). e is the engine
	// to count running nodes on, nil when it did not answer.
	Capacity func(ctx context.Context, e *engine.Engine, clusters int) Finding
	// CRIShimBinary, for a lab with kindlab's CRI shim, is the kindlab
	// binary the nodes would run (crishim.DefaultBinary).
	CRIShimBinary string
	// Engine is the command's engine. nil: Run opens one for itself (and
	// closes it), since whether one can be found is one of its findings.
	Engine *engine.Engine
	// Provider is the --provider flag's value ("": KIND_EXPERIMENTAL_PROVIDER
	// decides, as engine.ChooseProvider does); it names the engine Run
	// opens when Engine is nil.
	Provider string
}

// Run looks at the machine.
func Run(ctx context.Context, opts Options) []Finding {
	if opts.Clusters < 1 {
		opts.Clusters = 1
	}
	if opts.RegistryPort == 0 {
		opts.RegistryPort = registry.DefaultHostPort
	}
	var out []Finding
	prov, err := engine.ChooseProvider(opts.Provider)
	if err != nil {
		out = append(out, Finding{Check: "provider", Level: Fail, Detail: err.Error(), Affects: "every lab",
			Fix: "unset " + engine.ProviderEnv + " (or set it to docker or podman)"})
		// Docker is what doctor examines then: kind's default.
		prov = engine.ProviderDocker
	}
	if f := proxyFinding(os.Getenv); f != nil {
		out = append(out, *f)
	}
	e, openErr := opts.Engine, error(nil)
	if e == nil {
		if e, openErr = engine.Open(ctx, engine.WithProvider(prov)); openErr == nil {
			defer e.Close()
		}
	} else {
		prov = e.Provider()
	}
	examine := docker
	if prov == engine.ProviderPodman {
		examine = podman
	}
	dockerOK, dataRoot, f := examine(ctx, e, openErr)
	out = append(out, f...)
	out = append(out, kernel(), apparmor())
	if opts.Capacity != nil {
		// An engine that did not answer is not asked again: one that
		// accepts connections and never answers would hold doctor.
		answering := e
		if !dockerOK {
			answering = nil
		}
		out = append(out, opts.Capacity(ctx, answering, opts.Clusters))
	} else {
		out = append(out, inotify(opts.Clusters))
	}
	out = append(out, port(ctx, e, opts.RegistryPort, dockerOK))
	dir := opts.Dir
	if dir == "" {
		dir = dataRoot
	}
	out = append(out, disk(dir, opts.Clusters))
	if dockerOK {
		for _, ref := range opts.NodeImages {
			out = append(out, nodeImage(ctx, e, ref)...)
		}
	}
	if dockerOK && opts.CRIShimBinary != "" {
		out = append(out, criShim(ctx, e, opts.CRIShimBinary))
	}
	return out
}

// criShim says whether the nodes can run this kindlab as their CRI shim:
// the checks `up` makes before creating anything (see crishim.CheckBinary).
func criShim(ctx context.Context, e *engine.Engine, bin string) Finding {
	const affects = "image-volume, all-features: kindlab's CRI shim (spec.containerRuntime.imageVolumeReadOnlyShim) runs this binary in every node"
	// A remote engine is fine: the shim's files reach its nodes through a
	// volume filled over the Engine API (package nodefiles), as `up` on
	// one proves (TestEndToEndRemoteEngine asks doctor there too).
	info, err := dockerInfo(ctx, e)
	arch := info.Architecture
	if err != nil {
		return Finding{Check: "cri-shim", Level: Warn, Detail: "cannot ask the engine its architecture: " + err.Error(), Affects: affects}
	}
	if err := crishim.CheckBinary(bin, strings.TrimSpace(arch)); err != nil {
		return Finding{Check: "cri-shim", Level: Fail, Detail: err.Error(), Affects: affects,
			Fix: "build a static kindlab for the engine (make build does) and run it, or set " + crishim.BinaryEnv}
	}
	return Finding{Check: "cri-shim", Level: OK, Detail: bin + " is a static Linux executable for the engine's " + strings.TrimSpace(arch) + ": the nodes can run it as their CRI shim"}
}

// NoEngine reports whether fs say no container engine is reachable: the
// engine's own finding (check "docker" or "podman") failed, its CLI
// missing, its endpoint unresolvable or not answering. That is the
// CLI's exit code 4, as for every command that needs an engine.
func NoEngine(fs []Finding) bool {
	for _, f := range fs {
		if (f.Check == "docker" || f.Check == "podman") && f.Level == Fail {
			return true
		}
	}
	return false
}

// Worst is the most severe level among fs (OK when fs is empty).
func Worst(fs []Finding) Level {
	worst := OK
	for _, f := range fs {
		if f.Level == Fail {
			return Fail
		}
		if f.Level == Warn {
			worst = Warn
		}
	}
	return worst
}

// dockerInfo asks the engine about itself within 30 seconds; the error is
// one line.
func dockerInfo(ctx context.Context, e *engine.Engine) (system.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := e.Client().Info(ctx)
	if err != nil {
		return info, errors.New(engine.FirstLine(err.Error()))
	}
	return info, nil
}

// docker examines the engine: e is nil when opening it failed (openErr).
// kind drives the docker CLI, so it must be on PATH even where the Engine
// API answers.
func docker(ctx context.Context, e *engine.Engine, openErr error) (bool, string, []Finding) {
	const affects = "every lab"
	if _, err := exec.LookPath("docker"); err != nil {
		return false, "", []Finding{{Check: "docker", Level: Fail, Detail: "the docker CLI is not on PATH", Affects: affects,
			Fix: "install Docker Engine (or Docker Desktop) and make sure `docker version` answers"}}
	}
	if openErr != nil {
		return false, "", []Finding{{Check: "docker", Level: Fail, Detail: "no Docker engine found: " + engine.FirstLine(openErr.Error()), Affects: affects,
			Fix: "fix DOCKER_HOST or the docker context (`docker context ls`), or unset them to use the local engine"}}
	}
	info, err := dockerInfo(ctx, e)
	if err != nil {
		return false, "", []Finding{{Check: "docker", Level: Fail, Detail: "no Docker engine answers: " + err.Error(), Affects: affects,
			Fix: "start the Docker daemon (`sudo systemctl start docker`), or point DOCKER_HOST at one"}}
	}
	fs := []Finding{{Check: "docker", Level: OK, Detail: fmt.Sprintf("Docker engine %s on %s", info.ServerVersion, info.OperatingSystem)}}
	cg := Finding{Check: "cgroups", Level: OK, Detail: fmt.Sprintf("cgroup v%s, driver %s", info.CgroupVersion, info.CgroupDriver)}
	if info.CgroupVersion == "1" {
		cg.Level = Warn
		cg.Affects = "every lab (kind supports cgroup v1 less and less)"
		cg.Fix = "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1) if clusters fail to start"
	}
	return true, info.DockerRootDir, append(fs, cg)
}

var kernelVersion = regexp.MustCompile(`^(\d+)\.(\d+)`)

func kernel() Finding {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return Finding{Check: "kernel", Level: Warn, Detail: "cannot read the kernel version: " + err.Error()}
	}
	rel := utsString(u.Release[:])
	m := kernelVersion.FindStringSubmatch(rel)
	if m == nil {
		return Finding{Check: "kernel", Level: Warn, Detail: "kernel version " + rel + " not understood"}
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < 5 || (major == 5 && minor < 13) {
		return Finding{Check: "kernel", Level: Fail, Detail: "kernel " + rel + " is older than 5.13",
			Affects: "nftables, all-features (kube-proxy's nftables mode needs 5.13+)",
			Fix:     "run the nftables labs on a host with Linux 5.13 or newer"}
	}
	return Finding{Check: "kernel", Level: OK, Detail: "kernel " + rel + " (nftables mode needs 5.13+)"}
}

func utsString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

func apparmor() Finding {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	if err == nil && strings.TrimSpace(string(b)) == "Y" {
		return Finding{Check: "apparmor", Level: OK, Detail: "AppArmor is enabled in the kernel"}
	}
	return Finding{Check: "apparmor", Level: Warn, Detail: "AppArmor is not available in this kernel",
		Affects: "apparmor, all-features: the kubelet rejects pods that ask for AppArmor; the apparmor check reports \"unsupported\" instead of proving enforcement",
		Fix:     "run the apparmor lab on a host with AppArmor (Ubuntu, Debian, SUSE); everything else works here"}
}

// kind's known-issues page: each cluster needs inotify instances; 8192 per
// few clusters is the documented comfortable value.
func inotify(clusters int) Finding {
	instances := ProcInt("/proc/sys/fs/inotify/max_user_instances")
	watches := ProcInt("/proc/sys/fs/inotify/max_user_watches")
	needInstances, needWatches := 512*clusters, 524288
	detail := fmt.Sprintf("max_user_instances=%d, max_user_watches=%d for %d cluster(s)", instances, watches, clusters)
	if instances < 0 || watches < 0 {
		return Finding{Check: "inotify", Level: Warn, Detail: "cannot read inotify limits"}
	}
	if instances < needInstances || watches < needWatches {
		return Finding{Check: "inotify", Level: Warn, Detail: detail,
			Affects: "every lab with several nodes or clusters: kubelets fail with \"too many open files\"",
			Fix: fmt.Sprintf("sudo sysctl fs.inotify.max_user_instances=%d fs.inotify.max_user_watches=%d",
				max(needInstances, instances), max(needWatches, watches))}
	}
	return Finding{Check: "inotify", Level: OK, Detail: detail}
}

// ProcInt reads an integer from a /proc or /sys file, -1 when it cannot
// (fleets size themselves by the same inotify limits).
func ProcInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

func port(ctx context.Context, e *engine.Engine, p int, dockerOK bool) Finding {
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	l, err := net.Listen("tcp", addr)
	if err == nil {
		l.Close()
		return Finding{Check: "registry-port", Level: OK, Detail: addr + " is free for the local registry"}
	}
	if dockerOK {
		owner := publisher(ctx, e, p)
		if owner == registry.ContainerName {
			return Finding{Check: "registry-port", Level: OK, Detail: addr + " is the local registry, already running"}
		}
		if owner != "" {
			return Finding{Check: "registry-port", Level: Fail, Detail: addr + " is taken by container " + owner,
				Affects: registryAffects,
				Fix:     fmt.Sprintf("stop %s, or use --registry-port %d", owner, p+1)}
		}
	}
	if !dockerOK {
		// The engine did not answer, so whether the port is the local
		// registry's (fine) or another program's cannot be told.
		return Finding{Check: "registry-port", Level: Warn, Detail: addr + " is taken, and with no engine answering kindlab cannot tell whether by its local registry",
			Affects: registryAffects, Fix: fmt.Sprintf("run doctor again once the engine answers; if it is not the registry, free the port or use --registry-port %d", p+1)}
	}
	return Finding{Check: "registry-port", Level: Fail, Detail: addr + " is taken by another program",
		Affects: registryAffects,
		Fix:     fmt.Sprintf("free the port (`ss -ltnp 'sport = :%d'` shows who has it), or use --registry-port %d", p, p+1)}
}

// registryAffects is which labs the local registry's port matters to:
// base, which every built-in lab includes, runs the registry.
const registryAffects = "every lab with a local registry (base gives every built-in lab one)"

// publisher names the running container(s) publishing port p, "" for none
// (or when the engine cannot say): what `docker ps --filter publish=P`
// shows (engine.Publishers, which podman's API serves too).
func publisher(ctx context.Context, e *engine.Engine, p int) string {
	names, err := e.Publishers(ctx, p)
	if err != nil {
		return ""
	}
	return strings.Join(names, "\n")
}

// A node image is about 1 GB and each node writes its own layer on top.
func disk(dir string, clusters int) Finding {
	if dir == "" {
		dir = "/var/lib/docker"
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		if err := syscall.Statfs("/", &st); err != nil {
			return Finding{Check: "disk", Level: Warn, Detail: "cannot measure free space: " + err.Error()}
		}
		dir = "/"
	}
	free := float64(st.Bavail) * float64(st.Bsize) / (1 << 30)
	need := 4.0 + 2.0*float64(clusters)
	detail := fmt.Sprintf("%.1f GiB free under %s", free, dir)
	if free < need {
		return Finding{Check: "disk", Level: Fail, Detail: detail, Affects: "every lab",
			Fix: fmt.Sprintf("free at least %.0f GiB (docker system prune removes unused images and containers)", need)}
	}
	return Finding{Check: "disk", Level: OK, Detail: detail}
}

var containerdVersion = regexp.MustCompile(`v?(\d+)\.(\d+)\.(\d+)`)

// RegistryWiring is doctor's registry-wiring finding for a node image the
// engine already has, or nil when it has not (nothing is pulled): whether
// the image's containerd reads the hosts.toml files kindlab writes. render
// prints it as a warning. It runs two short containers of the image on e.
func RegistryWiring(ctx context.Context, e *engine.Engine, image string) *Finding {
	if _, _, err := e.ImageID(ctx, image); err != nil {
		return nil
	}
	for _, f := range nodeImage(ctx, e, image) {
		if f.Check == "registry-wiring" {
			return &f
		}
	}
	return nil
}

func nodeImage(ctx context.Context, e *engine.Engine, image string) []Finding {
	if _, _, err := e.ImageID(ctx, image); err != nil {
		return []Finding{{Check: "node-image", Level: Warn, Detail: image + " is not in the Docker engine",
			Affects: "every lab: `kindlab up` pulls it (about 1 GB) unless it is loaded from an offline kit",
			Fix:     "docker pull " + image + " (or load the workshop's offline kit)"}}
	}
	fs := []Finding{{Check: "node-image", Level: OK, Detail: image + " is present"}}
	out, err := e.RunOnce(ctx, image, "containerd", "--version")
	if err != nil {
		return append(fs, Finding{Check: "containerd", Level: Warn, Detail: "cannot read containerd's version in the node image: " + err.Error()})
	}
	m := containerdVersion.FindStringSubmatch(out)
	if m == nil {
		return append(fs, Finding{Check: "containerd", Level: Warn, Detail: "containerd version not understood: " + out})
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	fs = append(fs, registryWiring(ctx, e, image, major))
	if major < 2 || (major == 2 && minor < 1) {
		return append(fs, Finding{Check: "containerd", Level: Fail, Detail: "the node image has containerd " + m[0],
			Affects: "image-volume, all-features: containerd before 2.1 cannot mount image volumes (pods fail with `failed to mkdir \"\"`)",
			Fix:     "use a node image from kind v0.28.0 or newer (the labs pin kind v0.31.0's kindest/node:v1.31.14)"})
	}
	return append(fs, Finding{Check: "containerd", Level: OK, Detail: "the node image has containerd " + m[0] +
		" (image volumes need 2.1+, and on Kubernetes 1.31 kindlab's CRI shim)"})
}

// configPath matches containerd's CRI registry config_path setting, in
// either quoting.
var configPath = regexp.MustCompile(`(?m)^\s*config_path\s*=\s*["']([^"']*)["']`)

// registryWiring says whether the node image's containerd reads the
// hosts.toml files kindlab writes under /etc/containerd/certs.d (the
// local registry and mirrors): its config.toml sets config_path, or it is
// containerd 2.x, whose CRI plugin defaults config_path to
// /etc/containerd/certs.d:/etc/docker/certs.d (containerd v2.2.0
// internal/cri/config/config_unix.go). Node images with containerd 1.x
// (kind before v0.27.0) and no config_path ignore them.
func registryWiring(ctx context.Context, e *engine.Engine, image string, containerdMajor int) Finding {
	const check = "registry-wiring"
	toml, err := e.RunOnce(ctx, image, "cat", "/etc/containerd/config.toml")
	if err != nil {
		return Finding{Check: check, Level: Warn, Detail: "cannot read /etc/containerd/config.toml in the node image: " + err.Error()}
	}
	if m := configPath.FindStringSubmatch(toml); m != nil {
		if strings.Contains(m[1], registry.CertsDir) {
			return Finding{Check: check, Level: OK, Detail: "the node image's containerd reads " + registry.CertsDir + " (config_path " + m[1] + ")"}
		}
	} else if containerdMajor >= 2 {
		return Finding{Check: check, Level: OK, Detail: "the node image's containerd 2 reads " + registry.CertsDir + " by default (no config_path set)"}
	}
	return Finding{Check: check, Level: Warn,
		Detail:  "the node image's containerd does not read " + registry.CertsDir + " (no config_path; kind node images before v0.27.0)",
		Affects: "every lab with the local registry or artifacts: nodes ignore the registry wiring and pull localhost:5001 images from nowhere",
		Fix:     "use a node image from kind v0.27.0 or newer (the labs pin kind v0.31.0's kindest/node:v1.31.14)"}
}

// proxyFinding explains what an HTTP proxy in the environment means for a
// lab, or nil when none is set: kind passes HTTP(S)_PROXY and NO_PROXY to
// the nodes (sigs.k8s.io/kind v0.31.0 pkg/cluster/internal/providers/common/proxy.go),
// so their containerd pulls upstream images through the proxy, and `up`
// adds the local registry and its caches to the nodes' NO_PROXY. A proxy on
// this machine's loopback is the one case that cannot work: inside a node,
// 127.0.0.1 is the node.
func proxyFinding(getenv func(string) string) *Finding {
	p, noProxy := registry.ProxyFromEnv(getenv)
	if p == "" {
		return nil
	}
	shown := registry.RedactURL(p)
	if registry.LoopbackProxy(p) {
		return &Finding{Check: "proxy", Level: Fail, Affects: "every lab that pulls an image from outside the local registry",
			Detail: fmt.Sprintf("the proxy %s is on this machine's loopback: kind gives it to the nodes, where 127.0.0.1 is the node itself, so their pulls through it fail", shown),
			Fix:    "point HTTP_PROXY/HTTPS_PROXY at an address of this host the kind network reaches (e.g. the docker bridge gateway, 172.17.0.1), or load the images with `kindlab kit load` first"}
	}
	detail := fmt.Sprintf("proxy %s: kind passes it to the nodes; their containerd pulls registry.k8s.io and docker.io images through it", shown)
	hosts := registry.NoProxyHosts(nil)
	if noProxy != "" {
		detail += fmt.Sprintf(" (NO_PROXY %s)", noProxy)
	}
	detail += fmt.Sprintf("; `up` adds %s to the nodes' NO_PROXY, so the local registry and its caches are reached directly", strings.Join(hosts, ","))
	return &Finding{Check: "proxy", Level: OK, Detail: detail}
}
