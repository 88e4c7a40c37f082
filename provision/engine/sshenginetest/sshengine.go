// Package sshenginetest reaches, for tests, a Docker engine over ssh:// as
// a user would (DOCKER_HOST=ssh://user@host): a real sshd of the test's own
// on a loopback port, a key of the test's own, and the docker CLI's
// `docker system dial-stdio` run on "the remote" by that sshd. The engine
// behind it is this machine's (its socket in the URL), or any other the
// remote docker CLI is pointed at (Options.Target, e.g. the engine of
// package remoteenginetest, whose filesystem is not this machine's).
package sshenginetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// Engine is an engine reached over ssh.
type Engine struct {
	// URL is the DOCKER_HOST to use: ssh://root@127.0.0.1:PORT[/<socket>].
	URL string
	// Opts is KINDLAB_SSH_OPTS for the test's key.
	Opts string
	// Dir holds the keys.
	Dir string
	// InfoID is the engine's ID, as the local socket reports it (only
	// without Options.Target).
	InfoID string
}

// Options shape Start.
type Options struct {
	// Target is the DOCKER_HOST the remote docker CLI dials (sshd sets it
	// in the session, OpenSSH 8.7+ SetEnv); "" puts this machine's engine
	// socket in the URL's path instead, as `ssh://host/var/run/docker.sock`.
	Target string
}

// Start starts sshd for the test (stopped when it ends). It skips, or
// fails under KINDLAB_REQUIRE_DOCKER=1, when sshd, ssh, ssh-keygen or the
// docker CLI are missing or the test does not run as root.
func Start(t testing.TB, opts Options) *Engine {
	t.Helper()
	e := &Engine{}
	path := ""
	if opts.Target == "" {
		local := registrytest.Docker(t) // the engine, before the test points DOCKER_HOST elsewhere
		info, err := local.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(local.DaemonHost(), "unix://") {
			registrytest.SkipOrFail(t, "the engine is not on a local socket ("+local.DaemonHost()+"): sshd here cannot reach it")
		}
		path, e.InfoID = strings.TrimPrefix(local.DaemonHost(), "unix://"), info.ID
	}
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		registrytest.SkipOrFail(t, "sshd not installed (apt-get install openssh-server, or `make deps`)")
	}
	for _, tool := range []string{"ssh", "ssh-keygen", "docker"} {
		if _, err := exec.LookPath(tool); err != nil {
			registrytest.SkipOrFail(t, tool+" not on PATH (apt-get install openssh-client; the docker CLI runs dial-stdio)")
		}
	}
	if os.Geteuid() != 0 {
		registrytest.SkipOrFail(t, "sshd for the test runs as root (it logs in as root)")
	}
	// sshd refuses to start without its privilege separation directory,
	// which the Debian service would create.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	e.Dir = t.TempDir()
	dir := e.Dir
	for _, key := range []string{"host_key", "id"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kindlab-test", "-f", filepath.Join(dir, key)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "id.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`HostKey %[1]s/host_key
AuthorizedKeysFile %[1]s/authorized_keys
ListenAddress 127.0.0.1
PidFile none
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel ERROR
`, dir)
	if opts.Target != "" {
		conf += "SetEnv DOCKER_HOST=" + opts.Target + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	port := registrytest.FreePort(t)
	// Logs to a file: a pipe would be held open by the per-connection
	// sshd processes that idle clients keep alive, and Wait would wait
	// for them.
	logFile := filepath.Join(dir, "sshd.log")
	cmd := exec.Command(sshd, "-D", "-E", logFile, "-f", filepath.Join(dir, "sshd_config"), "-p", strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("sshd did not listen on %s: %v; its log: %s", addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.URL = fmt.Sprintf("ssh://root@%s%s", addr, path)
	e.Opts = fmt.Sprintf("-F /dev/null -i %s -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR", filepath.Join(dir, "id"))
	return e
}

// UseForDockerCLI puts an `ssh` first on PATH for the rest of the test that
// adds Opts to every call: the docker CLI (which kind drives) reads no
// KINDLAB_SSH_OPTS, and ssh reads ~/.ssh/config from the passwd entry's
// home, not $HOME, so a test cannot hand it the key another way without
// touching the user's files. kindlab's own connections then need no
// KINDLAB_SSH_OPTS either.
func (e *Engine) UseForDockerCLI(t testing.TB) {
	t.Helper()
	real, err := exec.LookPath("ssh")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(e.Dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %s %s \"$@\"\n", real, e.Opts)
	if err := os.WriteFile(filepath.Join(bin, "ssh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
}
