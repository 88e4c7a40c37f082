package doctor

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/kindlab/kindlab/provision/engine"
)

// podman examines the podman engine (--provider podman): kind drives the
// podman CLI, kindlab its Docker-compatible API service, so both must
// answer. Besides what docker reports (version, cgroups, data root for the
// disk finding) it checks the rlimits podman asks runc for (podmanUlimits).
func podman(ctx context.Context, e *engine.Engine, openErr error) (bool, string, []Finding) {
	const affects = "every lab"
	if _, err := exec.LookPath("podman"); err != nil {
		return false, "", []Finding{{Check: "podman", Level: Fail, Detail: "the podman CLI is not on PATH (kind's podman provider runs it)", Affects: affects,
			Fix: "install podman (Debian: apt-get install podman), or use --provider docker"}}
	}
	if openErr != nil {
		return false, "", []Finding{{Check: "podman", Level: Fail, Detail: "no podman API service found: " + engine.FirstLine(openErr.Error()), Affects: affects,
			Fix: "unset " + engine.PodmanHostEnv + " to use the local socket, or point it at a unix:// or tcp:// podman service"}}
	}
	info, err := dockerInfo(ctx, e)
	if err != nil {
		return false, "", []Finding{{Check: "podman", Level: Fail, Detail: "no podman API service answers at " + e.Endpoint().String() + ": " + err.Error(),
			Affects: affects + " (kindlab's registry, kits, artifacts and node files go through it)",
			Fix:     "start it: `podman system service --time=0 &` as the user who runs kindlab (or `systemctl start podman.socket`)"}}
	}
	fs := []Finding{{Check: "podman", Level: OK, Detail: fmt.Sprintf("podman engine %s on %s, Docker-compatible API at %s",
		info.ServerVersion, info.OperatingSystem, e.Endpoint())}}
	cg := Finding{Check: "cgroups", Level: OK, Detail: fmt.Sprintf("cgroup v%s, driver %s", info.CgroupVersion, info.CgroupDriver)}
	if info.CgroupVersion == "1" {
		cg.Level = Warn
		cg.Affects = "every lab (kind supports cgroup v1 less and less)"
		cg.Fix = "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1) if clusters fail to start"
	}
	fs = append(fs, cg)
	if !e.Endpoint().Remote() {
		fs = append(fs, podmanUlimits())
	}
	return true, info.DockerRootDir, fs
}

// capSysResource is CAP_SYS_RESOURCE's bit (linux/capability.h).
const capSysResource = 24

// podmanDefaultUlimit is what podman asks runc for, for RLIMIT_NOFILE and
// RLIMIT_NPROC, when containers.conf sets no default_ulimits (podman-run(1),
// --ulimit: "a default value of 1048576 will be used").
const podmanDefaultUlimit = 1048576

// podmanUlimits: podman asks runc for nofile and nproc of 1048576 in every
// container. Raising a hard limit above the caller's needs
// CAP_SYS_RESOURCE; where this machine's bounding set lacks it (some VMs
// and nested containers) and the hard limit is lower, every container fails
// with `runc create failed: … error setting rlimit type 7: operation not
// permitted` unless containers.conf sets default_ulimits at or below the
// limit. Only the local engine is examined: it reads this machine's
// limits and the podman configuration kind's podman CLI reads.
func podmanUlimits() Finding {
	const affects = "every lab: podman cannot start any container (kind's nodes, the registry)"
	var nofile syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile); err != nil {
		return Finding{Check: "podman-ulimits", Level: Warn, Detail: "cannot read RLIMIT_NOFILE: " + err.Error()}
	}
	file, line := podmanConfSetting("default_ulimits")
	if file != "" {
		return Finding{Check: "podman-ulimits", Level: OK, Detail: fmt.Sprintf("%s sets %s", file, line)}
	}
	if hasCap(capSysResource) {
		return Finding{Check: "podman-ulimits", Level: OK, Detail: "podman may raise rlimits to its default 1048576 (CAP_SYS_RESOURCE held)"}
	}
	if nofile.Max >= podmanDefaultUlimit {
		return Finding{Check: "podman-ulimits", Level: OK, Detail: fmt.Sprintf("the hard nofile limit %d covers podman's default 1048576", nofile.Max)}
	}
	conf := os.Getenv("CONTAINERS_CONF")
	where := "a containers.conf and export CONTAINERS_CONF=/path/to/it (for kindlab and the podman service)"
	if conf != "" {
		where = conf + " (CONTAINERS_CONF)"
	}
	return Finding{Check: "podman-ulimits", Level: Fail,
		Detail: fmt.Sprintf("podman asks runc for nofile and nproc 1048576, above the hard limit %d, and CAP_SYS_RESOURCE is not in this machine's capability bounding set: "+
			"containers fail with `runc create failed: … error setting rlimit type 7: operation not permitted`", nofile.Max),
		Affects: affects,
		Fix: fmt.Sprintf("put `[containers]` `default_ulimits = [\"nofile=%d:%d\", \"nproc=32768:32768\"]` in %s, then restart the podman service (kindlab's .ci/podman.sh does this)",
			nofile.Max, nofile.Max, where)}
}

// podmanConfSetting finds key in the containers.conf files podman reads
// (containers.conf(5)): CONTAINERS_CONF alone when set, else the system
// files and drop-ins in order, the last one setting key winning. It
// returns the file and its line, or "" when none sets it.
func podmanConfSetting(key string) (string, string) {
	var files []string
	if c := os.Getenv("CONTAINERS_CONF"); c != "" {
		files = []string{c}
	} else {
		for _, dir := range []string{"/usr/share/containers", "/etc/containers"} {
			files = append(files, filepath.Join(dir, "containers.conf"))
			d, _ := filepath.Glob(filepath.Join(dir, "containers.conf.d", "*.conf"))
			sort.Strings(d)
			files = append(files, d...)
		}
		if os.Geteuid() != 0 {
			if dir, err := os.UserConfigDir(); err == nil {
				files = append(files, filepath.Join(dir, "containers", "containers.conf"))
			}
		}
	}
	var file, found string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if k, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == key {
				file, found = f, l
			}
		}
		fh.Close()
	}
	return file, found
}

// hasCap reports whether capability bit is in this process's bounding set
// (/proc/self/status CapBnd).
func hasCap(bit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<bit) != 0
		}
	}
	return false
}
