package app_test

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// The first Ctrl-C cancels the command's context; a process stuck where
// no context reaches (here reading manifests from a standard input that
// never ends; a FIFO given as a kit used to be the example, and is now
// refused at once) must still die on the second, as kubectl and kind do.
func TestSecondInterruptKills(t *testing.T) {
	isolate(t)
	stdin, feed, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	defer feed.Close() // never written: the read waits
	cmd := kindlabProcess("migrate", "apparmor", "-")
	cmd.Stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	// Time to start and block on the FIFO, with the handler registered.
	time.Sleep(time.Second)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		// Not stuck after all: nothing more to prove, but it must not have
		// been killed by the first signal (the handler was there).
		t.Fatalf("exited on the first SIGINT (%v): the test needs a command stuck in the kernel", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		ee, ok := err.(interface{ Sys() any })
		if !ok {
			t.Fatalf("exit after the second SIGINT: %v", err)
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Errorf("after the second SIGINT: %v, want killed by SIGINT", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("still running 2s after the second SIGINT")
	}
}
