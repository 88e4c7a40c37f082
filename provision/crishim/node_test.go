package crishim_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kindlab/kindlab/provision/crishim"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// uname is the engine's name (Docker's Info().Architecture) for this
// machine's architecture, and other one that is not it.
func uname(t *testing.T) (here, other string) {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64", "aarch64"
	case "arm64":
		return "aarch64", "x86_64"
	}
	t.Skipf("no test architecture pair for %s", runtime.GOARCH)
	return "", ""
}

// TestCheckBinary reads real executables of this machine: Debian's static
// busybox passes, a dynamically linked /bin/ls is refused naming its
// interpreter, and each refusal is one line naming the file and the build
// command that fixes it.
func TestCheckBinary(t *testing.T) {
	here, other := uname(t)
	const static = "/usr/bin/busybox"
	if _, err := os.Stat(static); err != nil {
		registrytest.SkipOrFail(t, "/usr/bin/busybox not installed (apt-get install busybox-static)")
	}
	if err := crishim.CheckBinary(static, here); err != nil {
		t.Errorf("static %s for %s: %v", static, here, err)
	}
	ls, _ := exec.LookPath("ls")
	text := filepath.Join(t.TempDir(), "kindlab")
	if err := os.WriteFile(text, []byte("#!/bin/sh\necho not elf\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, arch string
		want       []string
	}{
		{ls, here, []string{"kindlab at " + ls + " is dynamically linked", "ld-linux", "CGO_ENABLED=0 go build", crishim.BinaryEnv}},
		{static, other, []string{"kindlab at " + static + " is built for " + runtime.GOARCH + " but the nodes run on " + other, "GOOS=linux GOARCH="}},
		{text, here, []string{"kindlab at " + text + " is not a Linux executable", "GOOS=linux GOARCH=" + runtime.GOARCH}},
		{static, "mips", []string{`architecture "mips"`}},
	} {
		err := crishim.CheckBinary(tc.path, tc.arch)
		if err == nil {
			t.Errorf("%s on %s: accepted", tc.path, tc.arch)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("not one line: %q", err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s on %s: %q lacks %q", tc.path, tc.arch, err, w)
			}
		}
	}
}

// TestNodeFiles: the unit runs the hidden verb on the shim's socket in
// front of containerd's, is Type=notify and restarts; the drop-in orders
// the kubelet after it; the kubeadm patches point init and join at it.
func TestNodeFiles(t *testing.T) {
	unit := crishim.UnitFile()
	for _, want := range []string{
		"ExecStart=/opt/kindlab/bin/kindlab cri-shim --listen unix:///run/kindlab-cri/cri.sock --runtime-endpoint unix:///run/containerd/containerd.sock\n",
		"Type=notify\n", "RuntimeDirectory=kindlab-cri\n", "Restart=always\n", "After=containerd.service\n", "Before=kubelet.service\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	dropIn := crishim.KubeletDropIn()
	if !strings.Contains(dropIn, "[Unit]\nWants=kindlab-cri-shim.service\nAfter=kindlab-cri-shim.service\n") {
		t.Errorf("drop-in:\n%s", dropIn)
	}
	patches := crishim.KubeadmPatches()
	if len(patches) != 2 {
		t.Fatalf("%d patches, want init and join", len(patches))
	}
	for i, kind := range []string{"InitConfiguration", "JoinConfiguration"} {
		var p struct {
			Kind             string
			NodeRegistration struct{ CRISocket string } `json:"nodeRegistration"`
		}
		if err := yaml.UnmarshalStrict([]byte(patches[i]), &p); err != nil {
			t.Fatalf("patch %d: %v\n%s", i, err, patches[i])
		}
		if p.Kind != kind || p.NodeRegistration.CRISocket != crishim.Endpoint {
			t.Errorf("patch %d: %+v", i, p)
		}
	}
	if ok, _ := filepath.Match("*.service", filepath.Base(crishim.UnitPath)); !ok || filepath.Base(crishim.UnitPath) != crishim.UnitName {
		t.Errorf("unit path %s", crishim.UnitPath)
	}
}
