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
