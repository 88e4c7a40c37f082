// Endpoint resolution: where the Docker engine is, found the way the docker
// CLI finds it.
//
// kind drives the docker CLI, which already honours DOCKER_HOST=ssh://… and
// docker contexts; kindlab's Go client (registry, kits, bundles) must reach
// the same engine, or a lab would be split over two machines. The order is
// the CLI's: DOCKER_HOST, then DOCKER_CONTEXT, then currentContext in
// $DOCKER_CONFIG/config.json (default ~/.docker/config.json), then the local
// socket. ssh:// endpoints are dialled as docker/cli's connhelper does:
// `ssh … -- host docker system dial-stdio`, its stdin and stdout being the
// connection.
package engine

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/docker/client"
	"github.com/docker/go-connections/tlsconfig"
)

// DefaultHost is the engine when nothing names another.
const DefaultHost = client.DefaultDockerHost

// Where an endpoint came from.
const (
	SourceEnv     = "DOCKER_HOST"
	SourceContext = "context"
	SourceDefault = "default"
)

// Endpoint is the resolved engine.
type Endpoint struct {
	// Host is in DOCKER_HOST form: unix://, tcp://, ssh://, npipe://.
	Host string
	// Source is SourceEnv, SourceContext or SourceDefault.
	Source string
	// Context names the docker context when Source is SourceContext;
	// ContextFrom says what chose it (DOCKER_CONTEXT or the config file).
	Context     string
	ContextFrom string
	// SkipTLSVerify is the context's Endpoints.docker.SkipTLSVerify.
	SkipTLSVerify bool
	// TLSDir holds the context's ca.pem, cert.pem and key.pem when it has
	// any (contexts/tls/<id>/docker).
	TLSDir string
	// Podman says the endpoint is podman's Docker-compatible API service
	// (Source is SourcePodmanEnv or SourcePodmanDefault).
	Podman bool
}

// String names the endpoint and where it came from, for messages:
// `ssh://u@h (docker context "x")`, `ssh://u@h (DOCKER_HOST)`.
func (e Endpoint) String() string {
	host := e.Host
	if u, err := url.Parse(host); err == nil && u.User != nil {
		host = u.Redacted() // never print a password someone put in the URL
	}
	switch e.Source {
	case SourceEnv:
		return host + " (DOCKER_HOST)"
	case SourceContext:
		return fmt.Sprintf("%s (docker context %q from %s)", host, e.Context, e.ContextFrom)
	case SourcePodmanEnv:
		return host + " (podman, " + PodmanHostEnv + ")"
	case SourcePodmanDefault:
		return host + " (podman)"
	}
	return host
}

// FromContext reports whether a docker context chose the endpoint. The
// docker CLI that kind and doctor run then reads the same context itself,
// so nothing has to be passed on to it; with DOCKER_HOST it inherits the
// variable. Either way kindlab leaves the CLI's environment alone.
func (e Endpoint) FromContext() bool { return e.Source == SourceContext }

// Remote reports whether the engine runs elsewhere (anything but a local
// socket): ports it publishes on its 127.0.0.1 are not this machine's.
func (e Endpoint) Remote() bool { return IsRemote(e.Host) }

// IsRemote is Remote for a DOCKER_HOST string (a client's DaemonHost()).
func IsRemote(host string) bool {
	return host != "" && !strings.HasPrefix(host, "unix://") && !strings.HasPrefix(host, "npipe://")
}

// Hostname is the engine's host as the endpoint names it: "host" for
// ssh://user@host:22 or tcp://host:2376, "" for a local socket. For ssh it
// may be an alias of ~/.ssh/config; HostIP resolves that.
func (e Endpoint) Hostname() string {
	if !e.Remote() {
		return ""
	}
	u, err := url.Parse(e.Host)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// ProviderEnv is kind's CLI switch between node providers
// (sigs.k8s.io/kind v0.31.0 pkg/internal/runtime/runtime.go: docker, podman,
// nerdctl, finch, nerdctl.lima; kind ignores any other value with a
// warning, kindlab refuses it).
const ProviderEnv = "KIND_EXPERIMENTAL_PROVIDER"

// ProviderFlag is kindlab's global flag that chooses the provider for one
// command (`--provider podman`); it wins over ProviderEnv.
const ProviderFlag = "--provider"

// Providers are the node providers kindlab drives, in the order messages
// list them.
var Providers = []string{ProviderDocker, ProviderPodman}

// UnsupportedProviderError refuses a provider kindlab does not drive.
// Source is where the value came from: ProviderEnv or ProviderFlag.
type UnsupportedProviderError struct{ Value, Source string }

func (e *UnsupportedProviderError) Error() string {
	src := e.Source
	if src == "" {
		src = ProviderEnv
	}
	if src == ProviderEnv {
		return fmt.Sprintf("%s=%q: kindlab drives the %s node providers only (valid: %s; unset %s for docker)",
			ProviderEnv, e.Value, strings.Join(Providers, " and "), strings.Join(Providers, ", "), ProviderEnv)
	}
	return fmt.Sprintf("%s %q: not a node provider kindlab drives (valid: %s)", src, e.Value, strings.Join(Providers, ", "))
}

// ChooseProvider is the node provider of one command: flag (the value of
// ProviderFlag, "" when not given) wins, else ProviderEnv, else docker. A
// value that is not one of Providers is an *UnsupportedProviderError
// naming where it came from.
func ChooseProvider(flag string) (string, error) {
	v, src := flag, ProviderFlag
	if v == "" {
		v, src = os.Getenv(ProviderEnv), ProviderEnv
	}
	switch v {
	case "":
		return ProviderDocker, nil
	case ProviderDocker, ProviderPodman:
		return v, nil
	}
	return "", &UnsupportedProviderError{Value: v, Source: src}
}

// CheckProvider refuses a KIND_EXPERIMENTAL_PROVIDER kindlab does not
// drive: the kind CLI would switch to that provider, kindlab would not.
func CheckProvider() error {
	_, err := ChooseProvider("")
	return err
}

// Resolve finds the engine of the provider ProviderEnv chooses from the
// environment (and, for docker, the docker config directory), without
// contacting it. It refuses a provider kindlab does not drive.
func Resolve() (Endpoint, error) {
	prov, err := ChooseProvider("")
	if err != nil {
		return Endpoint{}, err
	}
	if prov == ProviderPodman {
		return resolvePodman()
	}
	return resolve()
}

// resolve is Resolve without the provider check, which Open makes itself
// (an option may override the environment).
func resolve() (Endpoint, error) {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return Endpoint{Host: h, Source: SourceEnv}, nil
	}
	dir, err := ConfigDir()
	if err != nil {
		return Endpoint{}, err
	}
	name, from := os.Getenv("DOCKER_CONTEXT"), "DOCKER_CONTEXT"
	if name == "" {
		cfgFile := filepath.Join(dir, "config.json")
		name, err = currentContext(cfgFile)
		if err != nil {
			return Endpoint{}, err
		}
		from = cfgFile
	}
	if name == "" || name == "default" {
		// "default" is the CLI's name for "no context": the local socket
		// (DOCKER_HOST was handled above).
		return Endpoint{Host: DefaultHost, Source: SourceDefault}, nil
	}
	return loadContext(dir, name, from)
}

// ConfigDir is $DOCKER_CONFIG, else ~/.docker.
func ConfigDir() (string, error) {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("docker config directory: set DOCKER_CONFIG or HOME: %w", err)
	}
	return filepath.Join(home, ".docker"), nil
}

func currentContext(file string) (string, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("docker config %s: %w", file, err)
	}
	var cfg struct {
		CurrentContext string `json:"currentContext"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return "", fmt.Errorf("docker config %s: %w", file, err)
	}
	return cfg.CurrentContext, nil
}

// contextID is the directory name the CLI's context store gives a context.
func contextID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])
}

func loadContext(dir, name, from string) (Endpoint, error) {
	id := contextID(name)
	metaFile := filepath.Join(dir, "contexts", "meta", id, "meta.json")
	b, err := os.ReadFile(metaFile)
	if errors.Is(err, fs.ErrNotExist) {
		return Endpoint{}, fmt.Errorf("docker context %q (from %s) does not exist: no %s (list contexts with `docker context ls`, or unset %s)",
			name, from, metaFile, unsetHint(from))
	}
	if err != nil {
		return Endpoint{}, fmt.Errorf("docker context %q (from %s): %w", name, from, err)
	}
	var meta struct {
		Endpoints map[string]struct {
			Host          string `json:"Host"`
			SkipTLSVerify bool   `json:"SkipTLSVerify"`
		} `json:"Endpoints"`
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return Endpoint{}, fmt.Errorf("docker context %q (from %s): %s: %w", name, from, metaFile, err)
	}
	ep := Endpoint{Host: DefaultHost, Source: SourceContext, Context: name, ContextFrom: from}
	if d, ok := meta.Endpoints["docker"]; ok {
		if d.Host != "" {
			ep.Host = d.Host
		}
		ep.SkipTLSVerify = d.SkipTLSVerify
	}
	tlsDir := filepath.Join(dir, "contexts", "tls", id, "docker")
	if st, err := os.Stat(tlsDir); err == nil && st.IsDir() {
		ep.TLSDir = tlsDir
	}
	return ep, nil
}

func unsetHint(from string) string {
	if from == "DOCKER_CONTEXT" {
		return "DOCKER_CONTEXT"
	}
	return "currentContext with `docker context use default`"
}

// newClient returns an Engine API client for the endpoint, negotiating the
// API version (engines as old as API 1.41 work). It does not contact the
// engine; for ssh the first request starts ssh. Only Open calls it: the
// Engine owns and closes the one client a command uses.
func (e Endpoint) newClient() (*client.Client, error) {
	opts, err := e.clientOpts()
	if err != nil {
		return nil, fmt.Errorf("%s engine %s: %w", e.kindName(), e, err)
	}
	opts = append(opts, client.WithVersionFromEnv(), client.WithAPIVersionNegotiation())
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("%s engine %s: %w", e.kindName(), e, err)
	}
	return c, nil
}

func (e Endpoint) clientOpts() ([]client.Opt, error) {
	scheme, _, ok := strings.Cut(e.Host, "://")
	if !ok {
		return nil, fmt.Errorf("not an engine address (want unix://, tcp://, ssh:// or npipe://)")
	}
	switch scheme {
	case "ssh":
		d, err := newSSHDialer(e.Host)
		if err != nil {
			return nil, err
		}
		return d.clientOpts(), nil
	case "unix", "npipe", "tcp", "http", "https":
	default:
		return nil, fmt.Errorf("unsupported scheme %s:// (want unix://, tcp://, ssh:// or npipe://)", scheme)
	}
	if e.Podman {
		// podman's service takes no Docker TLS settings (DOCKER_CERT_PATH
		// is Docker's); its tcp:// is plain, as `podman --url tcp://` is.
		return []client.Opt{client.WithHost(e.Host)}, nil
	}
	if e.Source == SourceContext {
		tc, err := e.contextTLS()
		if err != nil {
			return nil, err
		}
		if tc == nil {
			return []client.Opt{client.WithHost(e.Host)}, nil
		}
		// As the CLI does: a client of our own carrying the TLS config,
		// which WithHost then points at the host (the client speaks https
		// because its transport has TLS).
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, CheckRedirect: client.CheckRedirect}
		return []client.Opt{client.WithHTTPClient(hc), client.WithHost(e.Host)}, nil
	}
	// DOCKER_HOST or the default: DOCKER_CERT_PATH and DOCKER_TLS_VERIFY
	// apply, exactly as client.FromEnv applies them.
	return []client.Opt{client.WithTLSClientConfigFromEnv(), client.WithHost(e.Host)}, nil
}

// contextTLS is the CLI's Endpoint.tlsConfig: TLS when the context has
// key material or skips verification, none otherwise.
func (e Endpoint) contextTLS() (*tls.Config, error) {
	if e.TLSDir == "" {
		if e.SkipTLSVerify {
			return &tls.Config{InsecureSkipVerify: true}, nil //nolint:gosec // the context asks for it
		}
		return nil, nil
	}
	o := tlsconfig.Options{InsecureSkipVerify: e.SkipTLSVerify, ExclusiveRootPools: true}
	if f := filepath.Join(e.TLSDir, "ca.pem"); exists(f) {
		o.CAFile = f
	}
	cert, key := filepath.Join(e.TLSDir, "cert.pem"), filepath.Join(e.TLSDir, "key.pem")
	if exists(cert) && exists(key) {
		o.CertFile, o.KeyFile = cert, key
	}
	tc, err := tlsconfig.Client(o)
	if err != nil {
		return nil, fmt.Errorf("TLS material in %s: %w", e.TLSDir, err)
	}
	return tc, nil
}

// kindName names the engine in messages: "docker" or "podman".
func (e Endpoint) kindName() string {
	if e.Podman {
		return ProviderPodman
	}
	return "docker"
}

func exists(f string) bool { _, err := os.Stat(f); return err == nil }

// HostIP is the engine host's IP address as this machine reaches it: the
// address to give kind's apiServerAddress so the API server is published
// where kubectl here can connect. An ssh alias is first resolved through
// ssh's own configuration (`ssh -G`).
func (e Endpoint) HostIP() (string, error) {
	h := e.Hostname()
	if h == "" {
		return "", fmt.Errorf("docker engine %s is local", e)
	}
	if ip := net.ParseIP(h); ip != nil {
		return ip.String(), nil
	}
	if strings.HasPrefix(e.Host, "ssh://") {
		if real, err := sshHostname(e.Host); err == nil && real != "" {
			h = real
			if ip := net.ParseIP(h); ip != nil {
				return ip.String(), nil
			}
		}
	}
	ips, err := net.LookupIP(h)
	if err != nil {
		return "", fmt.Errorf("docker engine %s: look up %s: %w", e, h, err)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil // kind's default family is IPv4
		}
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("docker engine %s: %s has no IP address", e, h)
	}
	return ips[0].String(), nil
}
