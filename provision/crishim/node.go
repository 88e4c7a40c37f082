package crishim

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Where the shim lives inside a kind node. The unit and the kubelet drop-in
// are files mounted into systemd's directories (kind extraMounts): the node
// image is not changed, and systemd reads them when the node boots.
const (
	// UnitName is the shim's systemd unit in every node.
	UnitName = "kindlab-cri-shim.service"
	// UnitPath is where the unit file is mounted.
	UnitPath = "/etc/systemd/system/" + UnitName
	// DropInPath is the kubelet drop-in that makes the kubelet want the
	// shim and start after it. The kubelet unit is enabled in kind's node
	// image, so this is also what starts the shim at boot: a unit file
	// mounted into multi-user.target.wants/ is not started (systemd wants
	// it enabled), a Wants= of an enabled unit is.
	DropInPath = "/etc/systemd/system/kubelet.service.d/11-kindlab-cri-shim.conf"
	// NodeBinDir is the directory the binary is mounted at, read-only.
	NodeBinDir = "/opt/kindlab/bin"
	// NodeBinary is the binary the unit runs.
	NodeBinary = NodeBinDir + "/kindlab"
	// Endpoint is the shim's CRI socket: what kubeadm's
	// nodeRegistration.criSocket and so the kubelet's
	// --container-runtime-endpoint point at. /run/kindlab-cri is the
	// unit's RuntimeDirectory.
	Endpoint = "unix:///run/kindlab-cri/cri.sock"
	// ContainerdEndpoint is containerd's CRI socket in kind's node image
	// (what kind's own kubeadm config names).
	ContainerdEndpoint = "unix:///run/containerd/containerd.sock"
	// Verb is the hidden kindlab command that runs the shim.
	Verb = "cri-shim"
	// BinaryEnv names another kindlab binary to put in the nodes than the
	// one running (a Linux build for a macOS host, a static build where
	// the installed one is dynamically linked).
	BinaryEnv = "KINDLAB_CRI_SHIM_BINARY"
)

// UnitFile is the shim's systemd unit. Type=notify: systemd marks it active
// only once the socket answers, so the kubelet (ordered after it) never
// races it; Restart=always brings it back if it dies while pods run.
func UnitFile() string {
	return fmt.Sprintf(`# kindlab CRI shim: written by kindlab for labs with
# spec.containerRuntime.imageVolumeReadOnlyShim. The Kubernetes 1.31 kubelet
# sends image-volume mounts without readonly (pkg/kubelet/kubelet_pods.go
# makeMounts) and containerd 2.1+ refuses those ("readonly must be true while
# mount image"); this CRI proxy forwards every call to containerd unchanged
# except that it marks image mounts read-only, as the 1.32 kubelet does.
[Unit]
Description=kindlab CRI shim (image-volume mounts read-only for the 1.31 kubelet)
Wants=containerd.service
After=containerd.service
Before=kubelet.service

[Service]
Type=notify
ExecStart=%s %s --listen %s --runtime-endpoint %s
RuntimeDirectory=kindlab-cri
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
`, NodeBinary, Verb, Endpoint, ContainerdEndpoint)
}

// KubeletDropIn makes the kubelet pull the shim in and start after it.
func KubeletDropIn() string {
	return fmt.Sprintf(`# kindlab: the kubelet talks CRI to the shim (%s), so it starts after it.
[Unit]
Wants=%s
After=%s
`, Endpoint, UnitName, UnitName)
}

// KubeadmPatches point kubeadm, and through it the kubelet, at the shim's
// socket: InitConfiguration for the first control plane, JoinConfiguration
// for every other node. kind applies each patch to the document of that kind.
func KubeadmPatches() []string {
	var out []string
	for _, kind := range []string{"InitConfiguration", "JoinConfiguration"} {
		out = append(out, fmt.Sprintf("kind: %s\nnodeRegistration:\n  criSocket: %s\n", kind, Endpoint))
	}
	return out
}

// DefaultBinary is the kindlab binary delivered into the nodes: $BinaryEnv
// when set, else the running executable.
func DefaultBinary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		return p, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the kindlab binary for the CRI shim: %w (set %s)", err, BinaryEnv)
	}
	return p, nil
}

// elfMachines maps an engine's architecture, as Docker reports it (uname
// -m) or as Go names it, to the ELF machine a binary for it has.
var elfMachines = map[string]elf.Machine{
	"x86_64": elf.EM_X86_64, "amd64": elf.EM_X86_64,
	"aarch64": elf.EM_AARCH64, "arm64": elf.EM_AARCH64,
	"armv7l": elf.EM_ARM, "arm": elf.EM_ARM,
	"ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390,
	"riscv64": elf.EM_RISCV,
}

// goArch names an ELF machine as GOARCH does, for the build command in
// error messages.
var goArch = map[elf.Machine]string{
	elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64", elf.EM_ARM: "arm",
	elf.EM_PPC64: "ppc64le", elf.EM_S390: "s390x", elf.EM_RISCV: "riscv64",
}

// CheckBinary says whether the binary at path can run as the shim inside a
// node of the given architecture (Docker's Info().Architecture, e.g.
// x86_64): a Linux ELF executable for that machine with no program
// interpreter, i.e. statically linked, since a kind node's libc is not the
// host's. The error is one line naming the binary, what is wrong and the
// build command that fixes it.
func CheckBinary(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return fmt.Errorf("kindlab at %s is not a Linux executable (%v); the image-volume CRI shim runs it inside the Linux nodes: "+
				"build one with CGO_ENABLED=0 GOOS=linux GOARCH=%s go build -o kindlab-linux ./cmd/kindlab and set %s=./kindlab-linux",
				path, err, goArchOf(arch), BinaryEnv)
		}
		return fmt.Errorf("read the kindlab binary for the CRI shim: %w", err)
	}
	defer f.Close()
	want, known := elfMachines[arch]
	if !known {
		return fmt.Errorf("the Docker engine's architecture %q is not one kindlab can check its CRI shim binary against (known: x86_64, aarch64, armv7l, ppc64le, s390x, riscv64)", arch)
	}
	if f.Machine != want {
		return fmt.Errorf("kindlab at %s is built for %s but the nodes run on %s; the image-volume CRI shim runs it inside them: "+
			"build one with CGO_ENABLED=0 GOOS=linux GOARCH=%s go build -o kindlab-%s ./cmd/kindlab and set %s to it",
			path, machineName(f.Machine), arch, goArch[want], goArch[want], BinaryEnv)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		interp := "a program interpreter"
		if b := make([]byte, p.Filesz); p.Filesz > 0 && p.Filesz < 4096 {
			if _, err := p.ReadAt(b, 0); err == nil {
				interp = strings.TrimRight(string(b), "\x00")
			}
		}
		return fmt.Errorf("kindlab at %s is dynamically linked (it needs %s); the image-volume CRI shim runs it inside the node and needs a static build: "+
			"CGO_ENABLED=0 go build -o kindlab ./cmd/kindlab (or set %s to one)", path, interp, BinaryEnv)
	}
	return nil
}

func goArchOf(arch string) string {
	if m, ok := elfMachines[arch]; ok {
		return goArch[m]
	}
	return arch
}

func machineName(m elf.Machine) string {
	if a, ok := goArch[m]; ok {
		return a
	}
	return m.String()
}
