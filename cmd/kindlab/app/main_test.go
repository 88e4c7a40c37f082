package app_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app"
	"github.com/kindlab/kindlab/provision/state"
)

// roleEnv makes the test binary, run again by a test, be another process
// than the test: kindlab itself ("cli", its arguments after the program
// name), or a process holding a cluster's lock ("hold CLUSTER", until its
// standard input closes). Several real processes are how two users at one
// machine race.
const roleEnv = "KINDLAB_APP_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "":
		os.Exit(m.Run())
	case "cli":
		os.Exit(app.Main(os.Args[1:]))
	case "hold":
		store, err := state.Default()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		l, err := store.Lock(context.Background(), os.Args[2], state.LockOptions{})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		_, _ = io.Copy(io.Discard, os.Stdin)
		l.Unlock()
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "unknown %s\n", roleEnv)
		os.Exit(3)
	}
}

// kindlabProcess is `kindlab ARGS…` as a process of its own, with this
// test's environment (state directory, kubeconfig).
func kindlabProcess(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), roleEnv+"=cli")
	return cmd
}

// holdLock starts a process holding cluster's lock in the test's state
// directory; closing the returned writer makes it let go.
func holdLock(t *testing.T, cluster string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "hold", cluster)
	cmd.Env = append(os.Environ(), roleEnv+"=hold")
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
	if line, err := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(line) != "locked" {
		t.Fatalf("lock holder said %q (%v)", line, err)
	}
	return cmd, stdin
}
