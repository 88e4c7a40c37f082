package state

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary, run again by a test, play a role in
// another process instead of running tests (see TestMain).
const childEnv = "KINDLAB_STATE_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "save":
		os.Exit(saveChild())
	case "hold":
		os.Exit(holdChild())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%s\n", childEnv, os.Getenv(childEnv))
		os.Exit(3)
	}
}

// tally counts what one writer/reader saw.
type tally struct {
	Saves, SaveErrors, Reads, Torn int
	FirstError                     string
}

func (t *tally) add(o tally) {
	t.Saves += o.Saves
	t.SaveErrors += o.SaveErrors
	t.Reads += o.Reads
	t.Torn += o.Torn
	if t.FirstError == "" {
		t.FirstError = o.FirstError
	}
}

// record is a record of writer w's n-th save, big enough (about 20 KiB)
// that a reader catching a write in the middle would see it: every
// override carries the same stamp, so a mix of two saves shows.
func record(cluster string, w, n int) Record {
	stamp := fmt.Sprintf("w%d-%d", w, n)
	r := Record{Cluster: cluster, Lab: stamp, ImageOverrides: map[string]string{}}
	for i := range 300 {
		r.ImageOverrides[fmt.Sprintf("image-%03d", i)] = "registry.example/" + stamp + "/image:v1"
	}
	return r
}

// consistent reports whether a loaded record is one whole save.
func consistent(r Record) bool {
	if len(r.ImageOverrides) != 300 {
		return false
	}
	for _, v := range r.ImageOverrides {
		if v != "registry.example/"+r.Lab+"/image:v1" {
			return false
		}
	}
	return true
}

// hammer saves n records as writer w and reads the record after each save.
func hammer(s Store, cluster string, w, n int) tally {
	var t tally
	fail := func(counter *int, err error) {
		*counter++
		if t.FirstError == "" {
			t.FirstError = err.Error()
		}
	}
	for i := range n {
		t.Saves++
		if err := s.Save(record(cluster, w, i)); err != nil {
			fail(&t.SaveErrors, err)
		}
		t.Reads++
		r, err := s.Load(cluster)
		if err != nil {
			fail(&t.Torn, err)
		} else if !consistent(r) {
			fail(&t.Torn, fmt.Errorf("a record mixing saves: lab %s with %d overrides", r.Lab, len(r.ImageOverrides)))
		}
	}
	return t
}

func saveChild() int {
	w, _ := strconv.Atoi(os.Getenv("W"))
	n, _ := strconv.Atoi(os.Getenv("N"))
	t := hammer(Store{Root: os.Getenv("ROOT")}, os.Getenv("CLUSTER"), w, n)
	_ = json.NewEncoder(os.Stdout).Encode(t)
	return 0
}

// Many goroutines saving and reading one cluster's record: every save
// succeeds and every read is one whole record. (With one shared temporary
// name, about one save in ten failed and one read in eight was torn.)
func TestConcurrentSavesOfOneRecord(t *testing.T) {
	s := Store{Root: t.TempDir()}
	const cluster, writers, saves = "one-node", 8, 150
	if err := s.Save(record(cluster, 0, 0)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var total tally
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := hammer(s, cluster, w, saves)
			mu.Lock()
			total.add(got)
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("%d goroutines: %d saves, %d failed; %d reads, %d torn", writers, total.Saves, total.SaveErrors, total.Reads, total.Torn)
	if total.SaveErrors != 0 || total.Torn != 0 || total.Saves != writers*saves {
		t.Errorf("%d of %d saves failed, %d of %d reads torn; first: %s", total.SaveErrors, total.Saves, total.Torn, total.Reads, total.FirstError)
	}
	assertNoTempFiles(t, s.ClusterDir(cluster))
}

// The same from several processes (the test binary run again), while this
// one reads too: rename(2) is atomic across processes, a shared temporary
// name is not.
func TestConcurrentSavesOfOneRecordAcrossProcesses(t *testing.T) {
	s := Store{Root: t.TempDir()}
	const cluster, procs, saves = "one-node", 4, 150
	if err := s.Save(record(cluster, 0, 0)); err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	var outs []*strings.Builder
	for w := range procs {
		cmd := exec.Command(os.Args[0], "save", cluster)
		cmd.Env = append(os.Environ(), childEnv+"=save", "ROOT="+s.Root, "CLUSTER="+cluster,
			"W="+strconv.Itoa(w+1), "N="+strconv.Itoa(saves))
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	// Read while they write.
	done := make(chan struct{})
	readerResult := make(chan tally)
	go func() {
		var rt tally
		for {
			select {
			case <-done:
				readerResult <- rt
				return
			default:
			}
			rt.Reads++
			if r, err := s.Load(cluster); err != nil {
				rt.Torn++
				rt.FirstError = err.Error()
			} else if !consistent(r) {
				rt.Torn++
				rt.FirstError = "a record mixing saves: lab " + r.Lab
			}
		}
	}()
	var total tally
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("writer process %d: %v", i+1, err)
		}
		var got tally
		if err := json.Unmarshal([]byte(outs[i].String()), &got); err != nil {
			t.Fatalf("writer process %d said %q: %v", i+1, outs[i].String(), err)
		}
		total.add(got)
	}
	close(done)
	reader := <-readerResult
	t.Logf("%d processes: %d saves, %d failed; %d reads in them, %d torn; %d reads here, %d torn",
		procs, total.Saves, total.SaveErrors, total.Reads, total.Torn, reader.Reads, reader.Torn)
	total.add(reader)
	if total.SaveErrors != 0 || total.Torn != 0 || total.Saves != procs*saves {
		t.Errorf("%d saves failed, %d reads torn (of %d); first: %s", total.SaveErrors, total.Torn, total.Reads, total.FirstError)
	}
	assertNoTempFiles(t, s.ClusterDir(cluster))
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != recordFile {
			t.Errorf("left in %s: %s", dir, e.Name())
		}
	}
}

// holdChild takes a cluster's lock, says "locked", and holds it until its
// standard input closes (or it is killed).
func holdChild() int {
	s := Store{Root: os.Getenv("ROOT")}
	l, err := s.Lock(context.Background(), os.Getenv("CLUSTER"), LockOptions{})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
	l.Unlock()
	return 0
}

// startHolder runs a process holding cluster's lock; closing the returned
// writer makes it let go.
func startHolder(t *testing.T, s Store, cluster string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "hold", cluster)
	cmd.Env = append(os.Environ(), childEnv+"=hold", "ROOT="+s.Root, "CLUSTER="+cluster)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		t.Fatalf("holder said %q (%v)", line, err)
	}
	return cmd, stdin
}

// A second process asking for a held cluster fails at once naming the
// holder's pid and command; asked to wait, it gets the lock as soon as the
// holder lets go.
func TestLockAcrossProcesses(t *testing.T) {
	s := Store{Root: t.TempDir()}
	const cluster = "one-node"
	holder, release := startHolder(t, s, cluster)

	start := time.Now()
	_, err := s.Lock(context.Background(), cluster, LockOptions{})
	took := time.Since(start)
	var busy *BusyError
	if !errors.As(err, &busy) || !errors.Is(err, ErrBusy) {
		t.Fatalf("lock of a held cluster: %v, want a *BusyError", err)
	}
	if took > time.Second {
		t.Errorf("refusing took %s, want at once", took)
	}
	wantCmd := filepath.Base(os.Args[0]) + " hold " + cluster
	if busy.Holder.PID != holder.Process.Pid || busy.Holder.Command != wantCmd {
		t.Errorf("holder %+v, want pid %d command %q", busy.Holder, holder.Process.Pid, wantCmd)
	}
	msg := err.Error()
	for _, want := range []string{"cluster one-node is busy", fmt.Sprintf("process %d (%s)", holder.Process.Pid, wantCmd), "--wait-lock"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}

	// Waiting: told once, then the lock once the holder lets go.
	status := &syncBuffer{}
	got := make(chan error, 1)
	var l *Lock
	go func() {
		var err error
		l, err = s.Lock(context.Background(), cluster, LockOptions{Wait: 30 * time.Second, Status: status})
		got <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(status.String(), "Waiting for cluster one-node") {
		if time.Now().After(deadline) {
			t.Fatalf("the waiting Lock said %q", status.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-got:
		t.Fatalf("Lock returned while the holder still holds it: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	released := time.Now()
	release.Close()
	if err := <-got; err != nil {
		t.Fatalf("waiting Lock: %v", err)
	}
	t.Logf("got the lock %s after the holder let go; told: %q", time.Since(released).Round(time.Millisecond), strings.TrimSpace(status.String()))
	if n := strings.Count(status.String(), "\n"); n != 1 {
		t.Errorf("told %d lines while waiting, want 1", n)
	}
	if h := readHolder(s.LockFile(cluster)); h.PID != os.Getpid() {
		t.Errorf("lock file names %+v, want this process %d", h, os.Getpid())
	}
	l.Unlock()

	// A wait that runs out names the holder and how long it waited.
	_, release = startHolder(t, s, cluster)
	_, err = s.Lock(context.Background(), cluster, LockOptions{Wait: 200 * time.Millisecond})
	if !errors.As(err, &busy) || busy.Waited < 200*time.Millisecond || !strings.Contains(err.Error(), "after waiting") {
		t.Errorf("a wait that runs out: %v", err)
	}
	release.Close()
}

// The lock of a process that died (kill -9) does not block: the kernel
// released it, whatever the file still says.
func TestLockOfADeadProcessDoesNotBlock(t *testing.T) {
	s := Store{Root: t.TempDir()}
	const cluster = "one-node"
	holder, _ := startHolder(t, s, cluster)
	dead := holder.Process.Pid
	if err := holder.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	holder.Wait()
	if h := readHolder(s.LockFile(cluster)); h.PID != dead {
		t.Fatalf("the stale lock file names %+v, want the dead pid %d", h, dead)
	}
	start := time.Now()
	l, err := s.Lock(context.Background(), cluster, LockOptions{})
	if err != nil {
		t.Fatalf("lock after its holder died: %v", err)
	}
	defer l.Unlock()
	if took := time.Since(start); took > time.Second {
		t.Errorf("took %s", took)
	}
	if h := readHolder(s.LockFile(cluster)); h.PID != os.Getpid() {
		t.Errorf("lock file names %+v, want this process", h)
	}
}

// Within one process a lock is held per Lock: a second Lock of the same
// cluster is refused, another cluster is not; Unlock lets the next one in;
// a cancelled wait gives up; names that are not cluster names are refused.
func TestLockInOneProcess(t *testing.T) {
	s := Store{Root: t.TempDir()}
	a, err := s.Lock(context.Background(), "a", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(context.Background(), "a", LockOptions{}); !errors.Is(err, ErrBusy) {
		t.Errorf("second lock of a: %v", err)
	}
	b, err := s.Lock(context.Background(), "b", LockOptions{})
	if err != nil {
		t.Errorf("lock of b while a is held: %v", err)
	}
	b.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if _, err := s.Lock(ctx, "a", LockOptions{Wait: -1}); !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a wait cut short by its context: %v", err)
	}
	a.Unlock()
	a.Unlock() // twice is harmless
	again, err := s.Lock(context.Background(), "a", LockOptions{})
	if err != nil {
		t.Errorf("lock after unlock: %v", err)
	}
	again.Unlock()
	for _, bad := range []string{"", ".", "..", "a/b", `a\b`} {
		if _, err := s.Lock(context.Background(), bad, LockOptions{}); err == nil || errors.Is(err, ErrBusy) {
			t.Errorf("lock of %q: %v", bad, err)
		}
	}
	// Down removes a cluster's directory; the lock file is elsewhere.
	if err := s.Save(Record{Cluster: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.LockFile("a")); err != nil {
		t.Errorf("the lock file went with the cluster's state: %v", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
