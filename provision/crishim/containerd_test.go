package crishim_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// testContainerd is a containerd started by a test, in a directory of its
// own, with its CRI plugin on and its own socket: the real CRI server the
// shim forwards to.
type testContainerd struct {
	Endpoint string // unix:///…/containerd.sock
	// Image is a busybox image in the test's registry, pullable through
	// the CRI (it is also the sandbox image).
	Image string
	Log   string
}

// startContainerd starts Debian's containerd (1.6: it has no image-volume
// support, but every CRI call the shim forwards is real) with a registry
// next to it. Pod sandboxes run on the host network, so no CNI is needed.
func startContainerd(t testing.TB) *testContainerd {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		registrytest.SkipOrFail(t, "containerd not on PATH (apt-get install containerd)")
	}
	if os.Geteuid() != 0 {
		registrytest.SkipOrFail(t, "running containerd with its CRI plugin needs root")
	}
	busybox, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		registrytest.SkipOrFail(t, "/usr/bin/busybox not installed (apt-get install busybox-static)")
	}
	reg := registrytest.StartDistribution(t)
	ref := reg.Addr + "/kindlab-test/busybox:v1"
	pushBusybox(t, busybox, ref)

	// Unix socket paths are limited to 108 bytes: keep them short.
	dir, err := os.MkdirTemp("", "crishim-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(dir, "certs.d")
	if err := os.MkdirAll(filepath.Join(certs, reg.Addr), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certs, reg.Addr, "hosts.toml"), []byte(registry.HostsTOML(reg.Addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  # This VM has no CAP_SYS_RESOURCE: lowering a sandbox's oom_score_adj
  # would fail.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[7]q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[8]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"), ref,
		filepath.Join(dir, "cni"), certs)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "containerd.log")
	logf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tc := &testContainerd{Endpoint: "unix://" + sock, Image: ref, Log: logFile}
	t.Cleanup(func() {
		// The runc shims outlive containerd by design; the test's pods were
		// removed, so only containerd itself is left to stop.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("containerd log (last 3000 bytes):\n%s", tail(b, 3000))
		}
		// Snapshots may still be mounted if a test failed half-way.
		_ = exec.Command("sh", "-c", "grep -o ' "+dir+"[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l").Run()
		_ = os.RemoveAll(dir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := criClient(t, tc.Endpoint)
	for {
		if _, err := c.Version(ctx, &runtimeapi.VersionRequest{}); err == nil {
			break
		} else if ctx.Err() != nil {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("containerd at %s did not answer CRI Version: %v\n%s", sock, err, tail(b, 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return tc
}

// pushBusybox pushes Debian's static busybox as a one-layer image whose
// default command sleeps (the sandbox's and the test container's process).
func pushBusybox(t testing.TB, busybox []byte, ref string) {
	t.Helper()
	img := registrytest.BusyboxV1Image(t, busybox, []string{"bin/", "etc/", "tmp/", "model/"}, []string{"sh", "cat", "sleep", "ls"})
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func criClient(t testing.TB, endpoint string, opts ...grpc.DialOption) runtimeapi.RuntimeServiceClient {
	t.Helper()
	conn := dial(t, endpoint, opts...)
	return runtimeapi.NewRuntimeServiceClient(conn)
}

func dial(t testing.TB, endpoint string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(endpoint, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
