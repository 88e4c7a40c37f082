package doctor_test

import (
	"archive/tar"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kindlab/kindlab/provision/doctor"
	"github.com/kindlab/kindlab/provision/engine"
)

// openEngine opens the engine the environment names, as a command does.
func openEngine(t *testing.T) *engine.Engine {
	t.Helper()
	e, err := engine.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func find(t *testing.T, fs []doctor.Finding, check string) doctor.Finding {
	t.Helper()
	for _, f := range fs {
		if f.Check == check {
			return f
		}
	}
	t.Fatalf("no %s finding in %+v", check, fs)
	return doctor.Finding{}
}

func TestAppArmorFindingMatchesTheKernel(t *testing.T) {
	fs := doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)})
	f := find(t, fs, "apparmor")
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	has := err == nil && strings.TrimSpace(string(b)) == "Y"
	if has && f.Level != doctor.OK {
		t.Fatalf("kernel has AppArmor, doctor says %+v", f)
	}
	if !has && (f.Level != doctor.Warn || !strings.Contains(f.Affects, "apparmor") || !strings.Contains(f.Affects, "unsupported")) {
		t.Fatalf("kernel lacks AppArmor, doctor says %+v", f)
	}
}

func TestPortTakenByAnotherProgram(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	f := find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: port}), "registry-port")
	if f.Level != doctor.Fail || !strings.Contains(f.Fix, "--registry-port") {
		t.Fatalf("taken port: %+v", f)
	}
	l.Close()
	f = find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: port}), "registry-port")
	if f.Level != doctor.OK {
		t.Fatalf("free port: %+v", f)
	}
}

func TestDockerFinding(t *testing.T) {
	fs := doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)})
	f := find(t, fs, "docker")
	engine := exec.Command("docker", "version").Run() == nil
	if engine != (f.Level == doctor.OK) {
		t.Fatalf("engine answers: %t, doctor: %+v", engine, f)
	}
	t.Setenv("DOCKER_HOST", "unix:///nonexistent.sock")
	f = find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)}), "docker")
	if f.Level != doctor.Fail || !strings.Contains(f.Fix, "DOCKER_HOST") {
		t.Fatalf("no engine: %+v", f)
	}
	if doctor.Worst([]doctor.Finding{f}) != doctor.Fail {
		t.Fatal("worst of a failure is not fail")
	}
}

func TestMissingNodeImage(t *testing.T) {
	if exec.Command("docker", "version").Run() != nil {
		if os.Getenv("KINDLAB_REQUIRE_DOCKER") == "1" {
			t.Fatal("no Docker engine answers")
		}
		t.Skip("no Docker engine answers")
	}
	fs := doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t),
		NodeImages: []string{"kindlab.invalid/none:v0@sha256:0000000000000000000000000000000000000000000000000000000000000000"}})
	if f := find(t, fs, "node-image"); f.Level != doctor.Warn || !strings.Contains(f.Fix, "offline kit") {
		t.Fatalf("missing image: %+v", f)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestProviderFinding: doctor does not refuse a KIND_EXPERIMENTAL_PROVIDER
// kindlab does not drive like the other verbs (its other findings still
// matter) but reports it as a failure with the fix; kind's CLI would obey
// it (sigs.k8s.io/kind v0.31.0 pkg/internal/runtime/runtime.go), kindlab
// cannot. docker and podman are no finding; podman is examined instead of
// Docker, by its own name.
func TestProviderFinding(t *testing.T) {
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "nerdctl")
	f := find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)}), "provider")
	if f.Level != doctor.Fail || !strings.Contains(f.Detail, `KIND_EXPERIMENTAL_PROVIDER="nerdctl"`) || !strings.Contains(f.Fix, "unset KIND_EXPERIMENTAL_PROVIDER") {
		t.Errorf("finding %+v", f)
	}
	for _, v := range []string{"docker", "podman"} {
		t.Setenv("KIND_EXPERIMENTAL_PROVIDER", v)
		fs := doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)})
		for _, f := range fs {
			if f.Check == "provider" {
				t.Errorf("%s is driven by kindlab, yet: %+v", v, f)
			}
		}
		// The engine's finding is named after it, whether it answers or not.
		find(t, fs, v)
	}
	// The flag wins over the variable.
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "nerdctl")
	find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t), Provider: "podman"}), "podman")
}

// TestPodmanWithoutService: podman chosen but no API service answers: the
// podman finding fails with how to start it, and nothing else about podman
// is claimed.
func TestPodmanWithoutService(t *testing.T) {
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "podman")
	t.Setenv("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
	fs := doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)})
	f := find(t, fs, "podman")
	if _, err := exec.LookPath("podman"); err != nil {
		if f.Level != doctor.Fail || !strings.Contains(f.Detail, "podman CLI is not on PATH") {
			t.Errorf("podman finding without the CLI: %+v", f)
		}
		return
	}
	if f.Level != doctor.Fail || !strings.Contains(f.Detail, "unix:///nonexistent/podman.sock") || !strings.Contains(f.Fix, "podman system service --time=0") {
		t.Errorf("podman finding without a service: %+v", f)
	}
	for _, f := range fs {
		if f.Check == "podman-ulimits" || f.Check == "node-image" {
			t.Errorf("judged without an engine: %+v", f)
		}
	}
}

// TestPodmanUlimitsFinding, against the real podman service (.ci/podman.sh):
// a containers.conf (CONTAINERS_CONF) that sets default_ulimits is named;
// one that does not is a failure on a machine where podman's default
// 1048576 is above the hard nofile limit and CAP_SYS_RESOURCE is missing
// (these CI VMs), whose fix names that file.
func TestPodmanUlimitsFinding(t *testing.T) {
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "podman")
	t.Setenv("CONTAINER_HOST", "")
	e, err := engine.Open(context.Background())
	if err == nil {
		defer e.Close()
		err = e.Ping(context.Background())
	}
	if err != nil {
		if os.Getenv("KINDLAB_REQUIRE_PODMAN") == "1" {
			t.Fatalf("podman required: %v", err)
		}
		t.Skipf("no podman service: %v", err)
	}
	dir := t.TempDir()
	with, without := dir+"/with.conf", dir+"/without.conf"
	os.WriteFile(with, []byte("[containers]\ndefault_ulimits = [\"nofile=1024:1024\"]\n"), 0o644)
	os.WriteFile(without, []byte("[containers]\nlog_size_max = -1\n"), 0o644)
	t.Setenv("CONTAINERS_CONF", with)
	f := find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t), Engine: e}), "podman-ulimits")
	if f.Level != doctor.OK || f.Detail != with+` sets default_ulimits = ["nofile=1024:1024"]` {
		t.Errorf("with default_ulimits: %+v", f)
	}
	t.Setenv("CONTAINERS_CONF", without)
	f = find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t), Engine: e}), "podman-ulimits")
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Max >= 1048576 || boundingHasSysResource(t) {
		t.Logf("this machine can raise rlimits (nofile hard %d): %+v", lim.Max, f)
		return
	}
	if f.Level != doctor.Fail || !strings.Contains(f.Detail, "operation not permitted") || !strings.Contains(f.Fix, without+" (CONTAINERS_CONF)") {
		t.Errorf("without default_ulimits: %+v", f)
	}
}

// boundingHasSysResource reads CAP_SYS_RESOURCE (bit 24) of this
// process's capability bounding set.
func boundingHasSysResource(t *testing.T) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n&(1<<24) != 0
		}
	}
	t.Fatal("no CapBnd in /proc/self/status")
	return false
}

// TestProxyFinding: a proxy in the environment is reported (credentials
// hidden) with what it means for pulls; one on this machine's loopback
// fails, since kind hands it to the nodes (kind v0.31.0
// pkg/cluster/internal/providers/common/proxy.go), where 127.0.0.1 is the node.
func TestProxyFinding(t *testing.T) {
	for _, v := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"} {
		t.Setenv(v, "")
	}
	for _, f := range doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)}) {
		if f.Check == "proxy" {
			t.Errorf("no proxy set, yet: %+v", f)
		}
	}
	t.Setenv("HTTPS_PROXY", "http://me:s3cret@proxy.corp:3128")
	f := find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)}), "proxy")
	if f.Level != doctor.OK || strings.Contains(f.Detail, "s3cret") || !strings.Contains(f.Detail, "proxy.corp:3128") || !strings.Contains(f.Detail, "kind-registry") {
		t.Errorf("finding %+v", f)
	}
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
	f = find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)}), "proxy")
	if f.Level != doctor.Fail || !strings.Contains(f.Fix, "kit load") {
		t.Errorf("loopback proxy: %+v", f)
	}
}

// fakeNodeImage loads a tiny image standing in for a kind node: busybox
// for cat and sh, a containerd that reports version, and config.toml.
func fakeNodeImage(t *testing.T, tag, version, configTOML string) string {
	t.Helper()
	if exec.Command("docker", "version").Run() != nil {
		if os.Getenv("KINDLAB_REQUIRE_DOCKER") == "1" {
			t.Fatal("no Docker engine answers")
		}
		t.Skip("no Docker engine answers")
	}
	bb, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		if os.Getenv("KINDLAB_REQUIRE_DOCKER") == "1" {
			t.Fatal("/usr/bin/busybox not installed (apt-get install busybox-static)")
		}
		t.Skip("/usr/bin/busybox not installed")
	}
	files := map[string][]byte{
		"bin/busybox":                bb,
		"usr/local/bin/containerd":   []byte("#!/bin/sh\necho containerd github.com/containerd/containerd " + version + " 0123abcd\n"),
		"etc/containerd/config.toml": []byte(configTOML),
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "etc/", "etc/containerd/", "usr/", "usr/local/", "usr/local/bin/"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755})
	}
	for name, data := range files {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(data))})
		tw.Write(data)
	}
	for _, applet := range []string{"sh", "cat"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker", "import", "--change", "ENV PATH=/usr/local/bin:/bin", "-", tag)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "image", "rm", "-f", tag).Run() })
	return tag
}

// TestRegistryWiringFinding: the hosts.toml files kindlab writes are read
// only by a containerd with config_path, or by containerd 2.x, which
// defaults it to /etc/containerd/certs.d (containerd v2.2.0
// internal/cri/config/config_unix.go); kind's pre-v0.27 images ship 1.x
// without it, and doctor warns.
func TestRegistryWiringFinding(t *testing.T) {
	const v2Config = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.10\"\n"
	const withPath = v2Config + "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"
	e := openEngine(t)
	for _, tc := range []struct {
		name, version, config string
		want                  doctor.Level
	}{
		{"containerd 1.7 without config_path (kind v0.24)", "v1.7.18", v2Config, doctor.Warn},
		{"containerd 1.7 with config_path (kind docs' patch)", "v1.7.18", withPath, doctor.OK},
		{"containerd 2.2 without config_path (kind v0.31)", "v2.2.0", v2Config, doctor.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := fakeNodeImage(t, "kindlab.local/doctortest-node:"+strings.ReplaceAll(tc.version, ".", "-"), tc.version, tc.config)
			f := find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t), NodeImages: []string{img}}), "registry-wiring")
			if f.Level != tc.want {
				t.Errorf("finding %+v, want %s", f, tc.want)
			}
			if tc.want == doctor.Warn && !strings.Contains(f.Fix, "v0.27.0") {
				t.Errorf("no fix: %+v", f)
			}
			// render's warning is the same finding.
			if r := doctor.RegistryWiring(context.Background(), e, img); r == nil || r.Level != tc.want {
				t.Errorf("RegistryWiring = %+v, want level %s", r, tc.want)
			}
		})
	}
	// An image the engine does not have: nothing is pulled, nothing said.
	if r := doctor.RegistryWiring(context.Background(), e, "kindlab.invalid/none:v1"); r != nil {
		t.Errorf("a missing image gave %+v", r)
	}
}

// TestCRIShimFinding: for a lab with kindlab's CRI shim, doctor reads the
// binary the nodes would run against the engine's architecture: Debian's
// static busybox passes the check, a dynamically linked /bin/ls fails it
// with the build command.
func TestCRIShimFinding(t *testing.T) {
	if exec.Command("docker", "version").Run() != nil {
		if os.Getenv("KINDLAB_REQUIRE_DOCKER") == "1" {
			t.Fatal("no Docker engine answers (and KINDLAB_REQUIRE_DOCKER=1 forbids skipping)")
		}
		t.Skip("no Docker engine answers")
	}
	if _, err := os.Stat("/usr/bin/busybox"); err != nil {
		t.Skip("/usr/bin/busybox not installed")
	}
	f := find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t), CRIShimBinary: "/usr/bin/busybox"}), "cri-shim")
	if f.Level != doctor.OK {
		t.Errorf("static binary: %+v", f)
	}
	ls, _ := exec.LookPath("ls")
	f = find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t), CRIShimBinary: ls}), "cri-shim")
	if f.Level != doctor.Fail || !strings.Contains(f.Detail, "dynamically linked") || !strings.Contains(f.Affects, "image-volume") {
		t.Errorf("dynamic binary: %+v", f)
	}
	if fs := doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)}); len(fs) > 0 {
		for _, f := range fs {
			if f.Check == "cri-shim" {
				t.Errorf("a lab without the shim got a cri-shim finding: %+v", f)
			}
		}
	}
}
