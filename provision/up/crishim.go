package up

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"sigs.k8s.io/kind/pkg/cluster/nodes"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/crishim"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/internal/text"
	"github.com/kindlab/kindlab/provision/lifecycle"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
)

// checkCRIShim refuses, before anything is created, a shim the nodes could
// not run: the binary must be a static Linux executable for the engine's
// architecture (the engine's, not this machine's: on a remote engine they
// differ). It reaches the nodes, local or remote, through the node-files
// volume (nodefiles.go).
func checkCRIShim(ctx context.Context, e *engine.Engine, plan *render.Plan) error {
	c := plan.CRIShim
	if c == nil {
		return nil
	}
	info, err := e.Client().Info(ctx)
	if err != nil {
		return fmt.Errorf("ask the Docker engine its architecture (for the CRI shim binary): %w", err)
	}
	return crishim.CheckBinary(c.Binary, info.Architecture)
}

// CopyCRIShim puts the binary where a rendered kind config mounts it from
// (render -o kind, for plain kind on a local engine): a copy in the
// cluster's state directory, so rebuilding or removing kindlab does not
// change what runs in the nodes. `up` puts it in the node-files volume.
func CopyCRIShim(c *render.CRIShimPlan) error {
	if err := os.MkdirAll(filepath.Dir(c.HostBinary), 0o755); err != nil {
		return fmt.Errorf("copy the CRI shim binary: %w", err)
	}
	src, err := os.Open(c.Binary)
	if err != nil {
		return fmt.Errorf("copy the CRI shim binary: %w", err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(c.HostBinary), ".kindlab-*")
	if err != nil {
		return fmt.Errorf("copy the CRI shim binary: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("copy the CRI shim binary %s to %s: %w", c.Binary, c.HostBinary, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("copy the CRI shim binary: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy the CRI shim binary: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.HostBinary); err != nil {
		return fmt.Errorf("copy the CRI shim binary: %w", err)
	}
	return nil
}

// shimState is what systemd says about the shim's unit in a node.
type shimState struct {
	Load, Active, Sub, Result string
	Restarts                  int
}

func readShimState(ctx context.Context, n nodes.Node) (shimState, error) {
	var out bytes.Buffer
	err := n.CommandContext(ctx, "systemctl", "show", crishim.UnitName,
		"--property=LoadState,ActiveState,SubState,Result,NRestarts").SetStdout(&out).Run()
	if err != nil {
		return shimState{}, err
	}
	var s shimState
	for _, line := range strings.Split(out.String(), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "LoadState":
			s.Load = v
		case "ActiveState":
			s.Active = v
		case "SubState":
			s.Sub = v
		case "Result":
			s.Result = v
		case "NRestarts":
			s.Restarts, _ = strconv.Atoi(v)
		}
	}
	return s, nil
}

// failed says whether the shim cannot be serving and will not by itself:
// systemd gave up on it, it keeps dying, or its unit file is not there.
func (s shimState) failed() bool {
	return s.Active == "failed" || s.Restarts >= 2 || s.Load == "not-found"
}

// shimError is a node's shim that did not start, as one line: the node,
// the shim, what it said last, and where its whole log was saved (the
// node itself goes with the failed up).
func shimError(ctx context.Context, n nodes.Node, logDir string, s shimState) error {
	run := func(cmd ...string) string {
		var out bytes.Buffer
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		_ = n.CommandContext(cctx, cmd[0], cmd[1:]...).SetStdout(&out).SetStderr(&out).Run()
		return out.String()
	}
	// _SYSTEMD_UNIT: the lines the shim itself wrote (its stderr), without
	// systemd's own messages about the unit.
	own := run("journalctl", "_SYSTEMD_UNIT="+crishim.UnitName, "-o", "cat", "--no-pager")
	reason := ""
	for _, line := range strings.Split(own, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "-- ") {
			reason = l
		}
	}
	if reason == "" {
		reason = fmt.Sprintf("systemd reports %s/%s, result %s, %d restarts", s.Active, s.Sub, s.Result, s.Restarts)
		if s.Load == "not-found" {
			reason = "systemd has no unit " + crishim.UnitName + " (the mounted unit file is missing)"
		}
	}
	log := fmt.Sprintf("# systemctl status %[1]s\n%[2]s\n# journalctl -u %[1]s\n%[3]s", crishim.UnitName,
		run("systemctl", "status", "--no-pager", "--full", crishim.UnitName), run("journalctl", "-u", crishim.UnitName, "--no-pager", "-o", "short-precise"))
	file := filepath.Join(logDir, n.String()+"-"+strings.TrimSuffix(crishim.UnitName, ".service")+".log")
	where := "its log is saved in " + file
	if err := state.WriteFile(file, log); err != nil {
		where = fmt.Sprintf("its log could not be saved (%v)", err)
	}
	return fmt.Errorf("node %s: kindlab's CRI shim (%s, the kubelet's runtime endpoint) did not start: %s; %s (in the node: journalctl -u %s)",
		n, crishim.UnitName, text.OneLine(reason), where, crishim.UnitName)
}

// shimWatch watches the shims of a cluster kind is creating. kind starts
// kubeadm with preflight checks skipped, so a kubelet that cannot reach
// its runtime only shows as kubeadm waiting minutes for a healthy kubelet:
// a node whose shim failed is diagnosed and its container killed, which
// ends kind's create at once.
type shimWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

func watchCRIShim(ctx context.Context, p *cluster.Provider, name, logDir string) *shimWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &shimWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
			ns, err := p.ListNodes(name)
			if err != nil {
				continue
			}
			for _, n := range ns {
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				s, err := readShimState(cctx, n)
				ccancel()
				// systemd may not answer yet while the node boots.
				if err != nil || !s.failed() {
					continue
				}
				serr := shimError(ctx, n, logDir, s)
				w.mu.Lock()
				w.err = serr
				w.mu.Unlock()
				killNode(p.Engine(), n.String())
				return
			}
		}
	}()
	return w
}

// stop ends the watch and returns the shim failure it found, if any.
func (w *shimWatch) stop() error {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// killNode stops a node container so that kind's create, waiting on it,
// fails now; the failed up then removes the cluster as usual.
func killNode(e *engine.Engine, name string) {
	d := e.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = d.ContainerKill(ctx, name, "KILL")
}

// criShimStep proves, on every node, that the shim is active and that the
// kubelet was pointed at it (kubeadm writes --container-runtime-endpoint
// into kubeadm-flags.env from nodeRegistration.criSocket).
type criShimStep struct {
	// logDir is where the shim's journal goes when it failed.
	logDir string
}

func (cs criShimStep) Execute(ctx context.Context, lc *lifecycle.Context) error {
	c := lc.Lab.Plan.CRIShim
	if c == nil {
		return nil
	}
	h, st := lc.Lab.Handle, lc.Status
	st.Start("Checking kindlab's CRI shim on every node (image-volume mounts read-only) 🧩")
	ns, err := h.KindNodes()
	if err != nil {
		st.Fail()
		return err
	}
	// The nodes at once: each asks two things through a node exec.
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range ns {
		g.Go(func() error { return cs.checkNode(gctx, n, c.Endpoint) })
	}
	if err := g.Wait(); err != nil {
		st.Fail()
		return err
	}
	st.Label = fmt.Sprintf("kindlab's CRI shim runs on %d node(s): kubelet → %s → containerd; image-volume mounts made read-only 🧩", len(ns), c.Endpoint)
	st.End(true)
	return nil
}

// checkNode proves the shim active on n and the kubelet pointed at it.
func (cs criShimStep) checkNode(ctx context.Context, n nodes.Node, endpoint string) error {
	s, err := readShimState(ctx, n)
	if err != nil {
		return fmt.Errorf("node %s: ask systemd about %s: %w", n, crishim.UnitName, err)
	}
	if s.Active != "active" {
		return shimError(ctx, n, cs.logDir, s)
	}
	var flags bytes.Buffer
	if err := n.CommandContext(ctx, "cat", "/var/lib/kubelet/kubeadm-flags.env").SetStdout(&flags).Run(); err != nil {
		return fmt.Errorf("node %s: read the kubelet's flags: %w", n, err)
	}
	if want := "--container-runtime-endpoint=" + endpoint; !strings.Contains(flags.String(), want) {
		return fmt.Errorf("node %s: the kubelet does not talk to kindlab's CRI shim: /var/lib/kubelet/kubeadm-flags.env lacks %s (%s)",
			n, want, text.OneLine(strings.TrimSpace(flags.String())))
	}
	return nil
}
