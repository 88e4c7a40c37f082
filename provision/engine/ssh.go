package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/client"
)

// SSHOptsEnv holds extra ssh options for kindlab's own connections to an
// ssh:// engine, split on spaces (no quoting): e.g. "-i /path/key -o
// StrictHostKeyChecking=no". ssh reads ~/.ssh/config from the user's
// password-database home, not $HOME, so this is how a test or a CI job
// hands it a key. The docker CLI (and so kind) does not read it: for those,
// put the same settings in ~/.ssh/config.
const SSHOptsEnv = "KINDLAB_SSH_OPTS"

// sshDialer runs `ssh … docker system dial-stdio` per connection, as
// docker/cli's connhelper does.
type sshDialer struct {
	user, host, port, path string
	// addr is what the Engine API client is given as its host: the ssh
	// URL without user or path, so the HTTP Host header stays valid.
	addr string
}

func newSSHDialer(raw string) (*sshDialer, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ssh" {
		return nil, fmt.Errorf("not an ssh:// URL")
	}
	if _, ok := u.User.Password(); ok {
		return nil, fmt.Errorf("a password in the ssh URL is not supported (use a key or ssh-agent)")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("an ssh URL takes no query or fragment")
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("the ssh URL names no host")
	}
	d := &sshDialer{user: u.User.Username(), host: u.Hostname(), port: u.Port(), path: u.Path, addr: "ssh://" + u.Host}
	return d, nil
}

// sshArgs are the ssh options: the user's, then what dial-stdio needs (no
// tty, a bounded connect), then user, port and host.
func (d *sshDialer) sshArgs() []string {
	args := strings.Fields(os.Getenv(SSHOptsEnv))
	if !strings.Contains(strings.Join(args, " "), "ConnectTimeout") {
		args = append(args, "-o", "ConnectTimeout=30")
	}
	args = append(args, "-T")
	if d.user != "" {
		args = append(args, "-l", d.user)
	}
	if d.port != "" {
		args = append(args, "-p", d.port)
	}
	return args
}

func (d *sshDialer) command() []string {
	args := append(d.sshArgs(), "--", d.host, "docker")
	if d.path != "" && d.path != "/" {
		// ssh://host/run/user/1000/docker.sock: that socket over there.
		args = append(args, "--host", "unix://"+d.path)
	}
	return append(args, "system", "dial-stdio")
}

func (d *sshDialer) dest() string {
	s := d.host
	if d.user != "" {
		s = d.user + "@" + s
	}
	if d.port != "" {
		s += ":" + d.port
	}
	return "ssh " + s
}

func (d *sshDialer) clientOpts() []client.Opt {
	tr := &http.Transport{MaxIdleConns: 6, IdleConnTimeout: 30 * time.Second}
	hc := &http.Client{Transport: tr, CheckRedirect: client.CheckRedirect}
	return []client.Opt{
		client.WithHTTPClient(hc),
		client.WithHost(d.addr),
		// After WithHost, which set a TCP dialer and the environment's
		// proxy: every connection is an ssh process, never via a proxy.
		func(*client.Client) error {
			tr.Proxy = nil
			tr.DialContext = d.dial
			return nil
		},
	}
}

// dial starts one ssh process; its stdin and stdout are the connection.
// The process lives as long as the connection, not the dial's context:
// closing the connection kills it.
func (d *sshDialer) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.dest(), err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("%s: %w", d.dest(), err)
	}
	c := &sshConn{dest: d.dest(), r: outR, w: inW, stderr: &tail{max: 4096}, exited: make(chan struct{})}
	cmd := exec.Command("ssh", d.command()...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, c.stderr
	// Something ssh started (a ProxyCommand) may hold stderr open.
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Start()
	// The child has its own copies now.
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("%s: %w", d.dest(), err)
	}
	c.cmd = cmd
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// sshConn is a net.Conn over an ssh process's stdin and stdout.
type sshConn struct {
	dest    string
	cmd     *exec.Cmd
	r       *os.File // ssh's stdout
	w       *os.File // ssh's stdin
	stderr  *tail
	exited  chan struct{}
	waitErr error // set before exited is closed

	closing   atomic.Bool
	closeOnce sync.Once
}

func (c *sshConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil {
		err = c.explain(err)
	}
	return n, err
}

func (c *sshConn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil {
		err = c.explain(err)
	}
	return n, err
}

// explain turns the EOF or broken pipe of an ssh that failed into its
// exit status and last stderr line ("Permission denied (publickey)", or
// the remote docker's complaint), one line.
func (c *sshConn) explain(err error) error {
	if c.closing.Load() {
		return err
	}
	select {
	case <-c.exited:
	case <-time.After(2 * time.Second):
		return err // still running: the stream just ended
	}
	if c.waitErr == nil {
		return err // a clean end of stream
	}
	msg := c.stderr.lastLine()
	if msg == "" {
		msg = "no message"
	}
	return fmt.Errorf("%s: %v: %s", c.dest, c.waitErr, msg)
}

// Close ends the connection and the ssh process with it.
func (c *sshConn) Close() error {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		c.w.Close()
		if c.cmd.Process != nil {
			_ = c.cmd.Process.Kill()
		}
		<-c.exited
		c.r.Close()
	})
	return nil
}

// CloseWrite half-closes, as a hijacked stream (attach, exec) expects:
// ssh forwards the EOF and dial-stdio half-closes the engine's socket.
func (c *sshConn) CloseWrite() error { return c.w.Close() }

// CloseRead stops reading.
func (c *sshConn) CloseRead() error { return c.r.Close() }

func (c *sshConn) LocalAddr() net.Addr  { return sshAddr(c.dest) }
func (c *sshConn) RemoteAddr() net.Addr { return sshAddr(c.dest) }

func (c *sshConn) SetDeadline(t time.Time) error {
	return errors.Join(c.r.SetReadDeadline(t), c.w.SetWriteDeadline(t))
}
func (c *sshConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *sshConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

type sshAddr string

func (a sshAddr) Network() string { return "ssh" }
func (a sshAddr) String() string  { return string(a) }

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tail) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(t.buf)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// sshHostname asks ssh which host an ssh:// URL really names (`ssh -G`
// applies ~/.ssh/config, so an alias becomes its HostName) without
// connecting.
func sshHostname(raw string) (string, error) {
	d, err := newSSHDialer(raw)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ssh", append(append(d.sshArgs(), "-G"), "--", d.host)...).Output()
	if err != nil {
		return "", fmt.Errorf("ssh -G %s: %w", d.host, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "hostname" {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("ssh -G %s: no hostname", d.host)
}

var _ io.ReadWriteCloser = (*sshConn)(nil)
