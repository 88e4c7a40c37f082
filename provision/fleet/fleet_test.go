package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kindexec "sigs.k8s.io/kind/pkg/exec"

	"github.com/kindlab/kindlab/provision/engine"
)

func TestMembers(t *testing.T) {
	got := Members("ws", 3)
	if strings.Join(got, ",") != "ws-1,ws-2,ws-3" {
		t.Errorf("Members = %v", got)
	}
	if !memberLess("ws-2", "ws-10") || memberLess("ws-10", "ws-9") {
		t.Error("ws-2 sorts before ws-10, ws-9 before ws-10")
	}
}

// The limits of this machine's kind (2 CPUs, 24 GiB, max_user_instances
// 128) and of a roomier one: what binds first must be the one reported.
func TestMaxClusters(t *testing.T) {
	oneNode := Shape{ControlPlanes: 1}
	threeNodes := Shape{ControlPlanes: 1, Workers: 2}
	ci := Host{CPUs: 2, MemAvailable: 22 << 30, InotifyInstances: 128, InotifyWatches: 192536, InotifyInUse: 28}
	for _, tt := range []struct {
		name  string
		host  Host
		shape Shape
		want  int
		bind  string
	}{
		{"inotify binds one-node clusters", ci, oneNode, 3, "max_user_instances=128 with 28 in use"},
		{"inotify binds three-node clusters", ci, threeNodes, 1, "max_user_instances"},
		{"memory binds when inotify is raised", Host{CPUs: 8, MemAvailable: 4 << 30, InotifyInstances: 8192, InotifyWatches: 524288}, threeNodes, 2, "GiB of memory available"},
		{"nothing left", Host{CPUs: 2, MemAvailable: 22 << 30, InotifyInstances: 128, InotifyWatches: 192536, InotifyInUse: 120}, oneNode, 0, "with 120 in use"},
	} {
		l := tt.host.MaxClusters(tt.shape)
		if l.Clusters != tt.want || !strings.Contains(l.Reason, tt.bind) {
			t.Errorf("%s: %d (%s), want %d (%s)", tt.name, l.Clusters, l.Reason, tt.want, tt.bind)
		}
		if l.Clusters < 1000 && l.Fix == "" {
			t.Errorf("%s: no fix given", tt.name)
		}
	}
	// Unknown limits (no /proc) do not refuse anything.
	if l := (Host{CPUs: 1, MemAvailable: -1, InotifyInstances: -1, InotifyWatches: -1}).MaxClusters(oneNode); l.Clusters < 100 {
		t.Errorf("unknown limits refused: %+v", l)
	}
}

func TestParallel(t *testing.T) {
	h := Host{CPUs: 2}
	for _, tt := range []struct{ count, room, want int }{
		{1, 10, 1}, {2, 10, 2}, {12, 10, 2}, {12, 1, 1}, {0, 10, 1},
	} {
		if got := h.Parallel(tt.count, Limit{Clusters: tt.room}); got != tt.want {
			t.Errorf("Parallel(%d, room %d) = %d, want %d", tt.count, tt.room, got, tt.want)
		}
	}
}

// This machine's own numbers are readable (Linux /proc).
func TestMeasureHost(t *testing.T) {
	e, err := engine.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	h := MeasureHost(context.Background(), e)
	if h.CPUs < 1 || h.MemAvailable <= 0 || h.InotifyInstances <= 0 {
		t.Errorf("host not measured: %+v", h)
	}
	t.Logf("%+v; room for %+v one-node clusters", h, h.MaxClusters(Shape{ControlPlanes: 1}))
}

func TestCheckDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "attendees", "day-1")
	if err := checkDir(dir); err != nil {
		t.Fatalf("a missing directory is created: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the write test left %v", entries)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	err := checkDir(filepath.Join(file, "sub"))
	ie, ok := err.(*InputError)
	if !ok || ie.Flag != "--kubeconfig-dir" || !strings.Contains(err.Error(), "not a directory") || strings.Contains(err.Error(), "\n") {
		t.Errorf("a directory under a file: %v", err)
	}
}

// Parallel clusters' lines arrive whole and tagged, however the writes split.
func TestPrefixWriter(t *testing.T) {
	var buf bytes.Buffer
	lw := &lockedWriter{w: &buf}
	a, b := lw.prefixed("ws-1"), lw.prefixed("ws-2")
	a.Write([]byte(" • Preparing"))
	b.Write([]byte(" ✓ Ready\n"))
	a.Write([]byte(" nodes\n\n"))
	want := "[ws-2] ✓ Ready\n[ws-1] • Preparing nodes\n"
	if buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
}

// A failed docker command says why in Docker's words, not as kind's whole
// command line and exit status.
func TestReasonShowsTheCommandsOutput(t *testing.T) {
	err := fmt.Errorf("create cluster ws-2: %w", &kindexec.RunError{
		Command: []string{"docker", "run", "--name", "ws-2-control-plane", "--privileged"},
		Output:  []byte("Unable to find image\ndocker: Error response from daemon: Conflict. The container name \"/ws-2-control-plane\" is already in use.\nSee 'docker run --help'.\n"),
		Inner:   errors.New("exit status 125"),
	})
	want := "create cluster ws-2: `docker run` failed: docker: Error response from daemon: Conflict. The container name \"/ws-2-control-plane\" is already in use."
	if got := reason(err); got != want {
		t.Errorf("reason = %q\nwant     %q", got, want)
	}
	if got := reason(errors.New("plain\nerror")); got != "plain error" {
		t.Errorf("reason of a plain error = %q", got)
	}
}

// TestCapacityFindingAgreesWithUp: doctor --clusters N says FAIL exactly
// when up --count N would refuse (Up refuses toCreate > MaxClusters), and
// gives up's reason and fix, so the two never advise different limits.
func TestCapacityFindingAgreesWithUp(t *testing.T) {
	ci := Host{CPUs: 2, MemAvailable: 22 << 30, InotifyInstances: 128, InotifyWatches: 192536, InotifyInUse: 28}
	roomy := Host{CPUs: 8, MemAvailable: 64 << 30, InotifyInstances: 8192, InotifyWatches: 524288}
	for _, h := range []Host{ci, roomy} {
		for _, s := range []Shape{BaseShape, {ControlPlanes: 1}} {
			l := h.MaxClusters(s)
			for n := 1; n <= l.Clusters+2; n++ {
				f := h.CapacityFinding(s, n)
				upRefuses := n > l.Clusters
				if (f.Level == "fail") != upRefuses {
					t.Errorf("%+v %+v --clusters %d: doctor %s, up refuses: %t", h, s, n, f.Level, upRefuses)
				}
				fix := h.MaxClustersFor(s, n).Fix // what up --count n says, n new
				if !strings.Contains(f.Detail, l.Reason) || upRefuses && f.Fix != fix {
					t.Errorf("doctor's finding %+v does not give up's reason %q and fix %q", f, l.Reason, fix)
				}
			}
		}
	}
	// Found by the fresh-user review: --count 3000's fix named a limit for
	// a handful of clusters. It is sized for the count asked, and says when
	// memory would bind next.
	ci = Host{CPUs: 2, MemAvailable: 22 << 30, InotifyInstances: 128, InotifyWatches: 192536, InotifyInUse: 28}
	oneNode := Shape{ControlPlanes: 1}
	fix := ci.MaxClustersFor(oneNode, 3000).Fix
	if want := fmt.Sprintf("max_user_instances=%d ", 2*(28+3000*oneNode.inotify())); !strings.Contains(fix, want) || !strings.Contains(fix, "memory then allows") {
		t.Errorf("fix for 3000: %q, want %q and the memory limit", fix, want)
	}
	if s := ShapeOfNodes([]string{"control-plane", "worker", "worker"}); s != BaseShape {
		t.Errorf("ShapeOfNodes = %+v", s)
	}
}
