package doctor_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/provision/doctor"
)

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
		NodeImage: "kindlab.invalid/none:v0@sha256:0000000000000000000000000000000000000000000000000000000000000000"})
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

// TestProviderFinding: doctor does not refuse KIND_EXPERIMENTAL_PROVIDER
// like the other verbs (its other findings still matter) but reports it as
// a failure with the fix; kind's CLI would obey it (sigs.k8s.io/kind v0.31.0
// pkg/internal/runtime/runtime.go), kindlab cannot.
func TestProviderFinding(t *testing.T) {
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "podman")
	f := find(t, doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)}), "provider")
	if f.Level != doctor.Fail || !strings.Contains(f.Detail, `KIND_EXPERIMENTAL_PROVIDER="podman"`) || !strings.Contains(f.Fix, "unset KIND_EXPERIMENTAL_PROVIDER") {
		t.Errorf("finding %+v", f)
	}
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "docker")
	for _, f := range doctor.Run(context.Background(), doctor.Options{RegistryPort: freePort(t)}) {
		if f.Check == "provider" {
			t.Errorf("docker is what kindlab uses, yet: %+v", f)
		}
	}
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
