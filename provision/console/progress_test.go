package console

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindlab/kindlab/provision/state"
)

// locks is the Activity of the progress test: the clusters whose real
// lock (state.Store.Lock) the test holds, and their real progress files
// read with state.ReadProgress, as kindlab's backend reads them. (The
// backend tells a held lock by its holder's pid being alive; the test's
// own pid stays alive, so the test says when it lets go.)
type locks struct {
	store state.Store
	mu    sync.Mutex
	held  map[string]*state.Lock
}

func (l *locks) take(t *testing.T, cluster string) *state.Lock {
	t.Helper()
	lk, err := l.store.Lock(context.Background(), cluster, state.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.held[cluster] = lk
	l.mu.Unlock()
	return lk
}

func (l *locks) release(cluster string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held[cluster].Unlock()
	delete(l.held, cluster)
}

func (l *locks) Operations(context.Context) ([]Operation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Operation
	for c := range l.held {
		raw, err := os.ReadFile(l.store.LockFile(c))
		if err != nil {
			return nil, err
		}
		var h state.Holder
		if err := json.Unmarshal(raw, &h); err != nil {
			return nil, err
		}
		out = append(out, Operation{Cluster: c, Command: h.Command, PID: h.PID, Since: h.Since})
	}
	return out, nil
}

func (l *locks) Progress(_ context.Context, op Operation, from int64) ([]string, int64, error) {
	return state.ReadProgress(l.store.ProgressFile(op.Cluster), from)
}

// A line the holder of a cluster's lock prints (through Lock.Tee, as up,
// down, reset and replay do) reaches the instructor's event stream as a
// "progress" event of that cluster while the lock is held, after the
// operation's start line; a huge line arrives cut; the lines printed just
// before the lock goes arrive before its end line; the instructor's page
// shows the last lines under the cluster's row, or in a box of their own
// for a cluster without a row (an up creating it).
func TestOperationProgressReachesTheStream(t *testing.T) {
	r := newRoom(t)
	act := &locks{store: state.Store{Root: t.TempDir()}, held: map[string]*state.Lock{}}
	s, err := New(Options{Lister: r, Checker: r, Resetter: r, Kubeconfigs: r, Inspector: r, Activity: act,
		Refresh: 50 * time.Millisecond, Follow: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(ctx, s)
	t.Cleanup(func() { cancel(); ts.Close() })
	events := stream(t, ts, "")

	lk := act.take(t, "nftables-1")
	isProgress := func(want string) func(Event) bool {
		return func(e Event) bool {
			return e.Type == "progress" && e.Cluster == "nftables-1" && strings.Contains(e.Line, want)
		}
	}
	got := events.until(t, isProgress(": started at "))
	if !strings.Contains(got[len(got)-1].Line, fmt.Sprintf("(pid %d)", os.Getpid())) {
		t.Errorf("start line %q", got[len(got)-1].Line)
	}
	w := lk.Tee(nil)
	began := time.Now()
	fmt.Fprintf(w, " • Creating cluster nftables-1\n")
	events.until(t, isProgress(" • Creating cluster nftables-1"))
	t.Logf("a line written through the lock reached the stream in %s", time.Since(began).Round(time.Millisecond))

	_, body, _ := do(t, ts, req{path: "/"})
	if !strings.Contains(body, `<pre class="oplines" data-oplines="nftables-1"`) || !strings.Contains(body, " • Creating cluster nftables-1\n") {
		t.Errorf("instructor page lacks the line under the row:\n%s", body)
	}
	_, body, _ = do(t, ts, req{path: "/?o=json"})
	var page struct {
		OperationLines map[string][]string `json:"operationLines"`
	}
	if err := json.Unmarshal([]byte(body), &page); err != nil || len(page.OperationLines["nftables-1"]) != 2 {
		t.Errorf("operationLines: %+v %v", page.OperationLines, err)
	}

	// 1 MiB on one line with escape sequences: one event, cut.
	fmt.Fprintf(w, "\x1b[31m%s\n", strings.Repeat("y", 1<<20))
	got = events.until(t, isProgress("yyyy"))
	if l := got[len(got)-1].Line; len([]rune(l)) > state.ProgressLineRunes+1 || strings.Contains(l, "\x1b") {
		t.Errorf("a huge line arrived as %d runes", len([]rune(l)))
	}
	fmt.Fprintf(w, " • Waiting for the nodes\n")
	got = events.until(t, isProgress(" • Waiting for the nodes"))
	if len(got) != 1 {
		t.Errorf("the rest of the huge line came as lines of its own: %d events before the next line", len(got)-1)
	}

	// Printed, then the lock goes at once: the line still comes, before
	// the end line.
	fmt.Fprintf(w, " ✓ Creating cluster nftables-1 (2.0s)\n")
	act.release("nftables-1")
	got = events.until(t, isProgress(": ended after "))
	var seen bool
	for _, e := range got {
		seen = seen || e.Type == "progress" && e.Line == " ✓ Creating cluster nftables-1 (2.0s)"
	}
	if !seen {
		t.Errorf("the last line before the lock went is missing: %+v", got)
	}

	// A cluster the matrix has no row for yet: its own box.
	nw := act.take(t, "nftables-9")
	fmt.Fprintf(nw.Tee(nil), " • Preparing nodes\n")
	events.until(t, func(e Event) bool {
		return e.Type == "progress" && e.Cluster == "nftables-9" && e.Line == " • Preparing nodes"
	})
	_, body, _ = do(t, ts, req{path: "/"})
	if !strings.Contains(body, `<div class="opbox"><h3>nftables-9</h3><pre class="oplines" data-oplines="nftables-9"`) {
		t.Errorf("no box for a cluster without a row:\n%s", body)
	}
	act.release("nftables-9")
}
