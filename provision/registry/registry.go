// Package registry runs the local OCI registry every lab on this machine
// shares (kind's documented "local registry" setup), wires kind nodes to it,
// and publishes it to the cluster as KEP-1755 describes.
//
// The registry is a distribution registry container named kind-registry,
// published on 127.0.0.1 only, joined to the docker network kind, with its
// data on a named volume so restarts keep what was pushed. It is created
// once and reused; a container of that name without kindlab's label is
// never touched.
package registry

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/go-connections/nat"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/internal/text"
	"github.com/kindlab/kindlab/provision/registry/offlineimage"
)

const (
	// DefaultImage is registry 2.8.3, pinned by digest.
	DefaultImage = "registry:2@sha256:a3d8aaa63ed8681a604f1dea0aa03f100d5895b6a58ace528858a7b332415373"
	// ContainerName is the name kind's docs use; nodes reach the registry
	// by it on the kind network.
	ContainerName = "kind-registry"
	// ContainerPort is where distribution listens inside the container.
	ContainerPort = 5000
	// DefaultHostPort is where the registry is published on 127.0.0.1, and
	// the registry host lab files name (localhost:5001/...).
	DefaultHostPort = 5001
	// NetworkName is the docker network kind puts its nodes on.
	NetworkName = "kind"
	// LabelOwner marks the container and volume as kindlab's.
	LabelOwner = "dev.kindlab.registry"
	// dataPath is where distribution keeps blobs in the registry:2 image.
	dataPath = "/var/lib/registry"
)

// Docker is the part of the Docker Engine API the registry needs.
type Docker interface {
	ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, id string, options container.StartOptions) error
	ContainerRemove(ctx context.Context, id string, options container.RemoveOptions) error
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	CopyFromContainer(ctx context.Context, id, srcPath string) (io.ReadCloser, container.PathStat, error)
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImagePull(ctx context.Context, ref string, options image.PullOptions) (io.ReadCloser, error)
	ImageLoad(ctx context.Context, input io.Reader, opts ...client.ImageLoadOption) (image.LoadResponse, error)
	NetworkInspect(ctx context.Context, id string, options network.InspectOptions) (network.Inspect, error)
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
	NetworkConnect(ctx context.Context, networkID, containerID string, config *network.EndpointSettings) error
	NetworkRemove(ctx context.Context, id string) error
	VolumeCreate(ctx context.Context, options volume.CreateOptions) (volume.Volume, error)
	VolumeInspect(ctx context.Context, id string) (volume.Volume, error)
	VolumeRemove(ctx context.Context, id string, force bool) error
	DaemonHost() string
}

// Options say which registry to run. The zero value is the shared one.
type Options struct {
	// Docker is the engine: the command's engine.Engine client (required).
	Docker Docker
	// Image defaults to DefaultImage. Offline, build one with the
	// offlineimage package and name its tag here.
	Image string
	// HostPort defaults to DefaultHostPort.
	HostPort int
	// Name defaults to ContainerName; tests use their own.
	Name string
	// Volume defaults to Name + "-data".
	Volume string
	// Network defaults to NetworkName.
	Network string
	// ReadyTimeout bounds the wait for the registry to answer; 0 means 30s.
	ReadyTimeout time.Duration
	// proxy, when set, makes the container a pull-through cache of an
	// upstream registry (see EnsureProxy): not published on the host.
	proxy *Proxy
}

func (o Options) withDefaults() (Options, error) {
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if o.HostPort == 0 && o.proxy == nil {
		o.HostPort = DefaultHostPort
	}
	if o.proxy == nil && (o.HostPort < 1 || o.HostPort > 65535) {
		return o, fmt.Errorf("--registry-port %d: want a TCP port between 1 and 65535", o.HostPort)
	}
	if o.Name == "" {
		o.Name = ContainerName
	}
	if o.Volume == "" {
		o.Volume = o.Name + "-data"
	}
	if o.Network == "" {
		o.Network = NetworkName
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.Docker == nil {
		// Every caller holds the command's engine (package engine): a
		// client made here would be a second one, never closed.
		return o, errors.New("registry: no Docker engine given (Options.Docker is nil)")
	}
	return o, nil
}

// Status describes the registry container.
type Status struct {
	Name string `json:"name"`
	// State is docker's state (running, exited, ...) or "absent".
	State   string `json:"state"`
	Running bool   `json:"running"`
	ID      string `json:"id,omitempty"`
	Image   string `json:"image,omitempty"`
	// HostPort is the port on 127.0.0.1; Endpoint is what to push to.
	HostPort int    `json:"hostPort,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	// ClusterEndpoint is how nodes on the kind network reach it.
	ClusterEndpoint string   `json:"clusterEndpoint,omitempty"`
	Networks        []string `json:"networks,omitempty"`
	// Volume holds what was pushed; it is also set while the container
	// is absent if the volume was kept (registry down without
	// --delete-data, or down after the last lab).
	Volume string `json:"volume,omitempty"`
	// Ready says the registry answered GET /v2/ on 127.0.0.1 just now.
	Ready bool `json:"ready"`
	// Created and Started say what this call did (Ensure only).
	Created bool `json:"created,omitempty"`
	Started bool `json:"started,omitempty"`
}

// Absent reports whether no registry container exists.
func (s *Status) Absent() bool { return s.State == "absent" }

// NotOursError is returned when a container holds the registry's name but
// was not created by kindlab.
type NotOursError struct{ Name, ID, Image string }

func (e *NotOursError) Error() string {
	return fmt.Sprintf("container %s (%s, image %s) exists but was not created by kindlab (no label %s): kindlab will not reuse or remove it; remove it yourself (docker rm -f %s) or stop the lab that owns it",
		e.Name, shortID(e.ID), e.Image, LabelOwner, e.Name)
}

// PortTakenError is returned when the host port is not free.
type PortTakenError struct {
	Port  int
	Owner string // what holds it, when Docker knows
	// Free is a nearby port found free just now, 0 if none was.
	Free int
}

func (e *PortTakenError) Error() string {
	owner := "another program on this machine"
	if e.Owner != "" {
		owner = e.Owner
	}
	way := "pass --registry-port with a free port"
	if e.Free != 0 {
		way = fmt.Sprintf("pass --registry-port with a free port (%d is free now)", e.Free)
	}
	return fmt.Sprintf("port 127.0.0.1:%d is taken by %s: %s, or free the port", e.Port, owner, way)
}

func portTaken(ctx context.Context, opts Options, owner string) *PortTakenError {
	e := &PortTakenError{Port: opts.HostPort, Owner: owner}
	if !localDaemon(opts.Docker) {
		return e
	}
	published := publishedPorts(ctx, opts.Docker)
	for p := opts.HostPort + 1; p <= opts.HostPort+50 && p <= 65535; p++ {
		if _, taken := published[p]; !taken && portFree(p) {
			e.Free = p
			break
		}
	}
	return e
}

// Inspect returns the registry's status; a missing container is State
// "absent", not an error.
func Inspect(ctx context.Context, opts Options) (*Status, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	st, _, err := inspect(ctx, opts)
	if err != nil {
		return nil, err
	}
	if st.Running && localDaemon(opts.Docker) {
		probe, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st.Ready = answers(probe, st.HostPort) == nil
	}
	return st, nil
}

func inspect(ctx context.Context, opts Options) (*Status, *container.InspectResponse, error) {
	c, err := opts.Docker.ContainerInspect(ctx, opts.Name)
	if errdefs.IsNotFound(err) {
		st := &Status{Name: opts.Name, State: "absent"}
		// What was pushed outlives the container (see Remove): say where.
		if v, err := opts.Docker.VolumeInspect(ctx, opts.Volume); err == nil && v.Labels[LabelOwner] == "true" {
			st.Volume = v.Name
		}
		return st, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("inspect container %s: %w", opts.Name, err)
	}
	if c.Config == nil || c.Config.Labels[LabelOwner] != "true" {
		img := ""
		if c.Config != nil {
			img = c.Config.Image
		}
		return nil, nil, &NotOursError{Name: opts.Name, ID: c.ID, Image: img}
	}
	st := &Status{
		Name:            opts.Name,
		ID:              c.ID,
		Image:           c.Config.Image,
		ClusterEndpoint: fmt.Sprintf("%s:%d", opts.Name, ContainerPort),
	}
	if c.State != nil {
		st.State, st.Running = c.State.Status, c.State.Running
	}
	if c.HostConfig != nil {
		for _, b := range c.HostConfig.PortBindings[containerPort()] {
			if p, err := strconv.Atoi(b.HostPort); err == nil {
				st.HostPort = p
				st.Endpoint = fmt.Sprintf("localhost:%d", p)
			}
		}
	}
	if c.NetworkSettings != nil {
		for n := range c.NetworkSettings.Networks {
			st.Networks = append(st.Networks, n)
		}
		sort.Strings(st.Networks)
	}
	for _, m := range c.Mounts {
		if m.Destination == dataPath && m.Type == mount.TypeVolume {
			st.Volume = m.Name
		}
	}
	return st, &c, nil
}

func containerPort() nat.Port { return nat.Port(fmt.Sprintf("%d/tcp", ContainerPort)) }

// Ensure makes the registry run: it reuses kindlab's container (starting it
// and joining it to the kind network if needed) or creates it, then waits
// until it answers on 127.0.0.1.
func Ensure(ctx context.Context, opts Options) (*Status, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	unlock, err := lock(ctx, opts.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, c, err := inspect(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := ensureNetwork(ctx, opts.Docker, opts.Network); err != nil {
		return nil, err
	}
	if st.Absent() {
		created := true
		if err := create(ctx, opts); errors.Is(err, errRaced) {
			// Another kindlab made it between our inspect and create:
			// reuse theirs, as a later run would.
			created = false
		} else if err != nil {
			return nil, err
		}
		st, c, err = inspect(ctx, opts)
		if err != nil {
			return nil, err
		}
		if st.Absent() {
			return nil, fmt.Errorf("registry container %s vanished while being created: run again", opts.Name)
		}
		st.Created = created
	}
	if opts.proxy == nil && st.HostPort != opts.HostPort {
		return nil, fmt.Errorf("registry %s already publishes 127.0.0.1:%d, not %d: pass --registry-port %d to share it, or remove it first with `kindlab registry down`",
			opts.Name, st.HostPort, opts.HostPort, st.HostPort)
	}
	if _, ok := c.NetworkSettings.Networks[opts.Network]; !ok {
		if err := opts.Docker.NetworkConnect(ctx, opts.Network, c.ID, nil); err != nil && !isAlreadyConnected(err) {
			return nil, fmt.Errorf("connect %s to docker network %s: %w", opts.Name, opts.Network, err)
		}
		st.Networks = append(st.Networks, opts.Network)
	}
	if !st.Running {
		if err := start(ctx, opts, c.ID); err != nil {
			return nil, err
		}
		st.Running, st.State, st.Started = true, "running", true
	}
	if err := waitReady(ctx, opts); err != nil {
		return nil, err
	}
	st.Ready = true
	return st, nil
}

func start(ctx context.Context, opts Options, id string) error {
	err := opts.Docker.ContainerStart(ctx, id, container.StartOptions{})
	if err == nil {
		return nil
	}
	if isPortConflict(err) {
		return portTaken(ctx, opts, portOwner(ctx, opts))
	}
	return fmt.Errorf("start registry container %s: %w", opts.Name, err)
}

// errRaced means a container of the name appeared after the inspect.
var errRaced = errors.New("registry container created concurrently")

func create(ctx context.Context, opts Options) error {
	if opts.proxy == nil {
		if owner := portOwner(ctx, opts); owner != "" {
			return portTaken(ctx, opts, owner)
		}
		if localDaemon(opts.Docker) && !portFree(opts.HostPort) {
			return portTaken(ctx, opts, "")
		}
	}
	if err := ensureImage(ctx, opts); err != nil {
		return err
	}
	if _, err := opts.Docker.VolumeCreate(ctx, volume.CreateOptions{Name: opts.Volume, Labels: map[string]string{LabelOwner: "true"}}); err != nil {
		return fmt.Errorf("create volume %s: %w", opts.Volume, err)
	}
	cfg := &container.Config{
		Image:        opts.Image,
		Labels:       map[string]string{LabelOwner: "true"},
		ExposedPorts: nat.PortSet{containerPort(): {}},
	}
	host := &container.HostConfig{
		// Only loopback: the registry has no authentication.
		PortBindings:  nat.PortMap{containerPort(): {{HostIP: "127.0.0.1", HostPort: strconv.Itoa(opts.HostPort)}}},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyAlways},
		Mounts:        []mount.Mount{{Type: mount.TypeVolume, Source: opts.Volume, Target: dataPath}},
	}
	if p := opts.proxy; p != nil {
		// Nodes reach a cache on the kind network; the host has no use for it.
		host.PortBindings = nil
		cfg.Labels[LabelProxy] = p.Upstream
		cfg.Env = []string{"REGISTRY_PROXY_REMOTEURL=" + p.RemoteURL}
	}
	netCfg := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{opts.Network: {}}}
	resp, err := opts.Docker.ContainerCreate(ctx, cfg, host, netCfg, nil, opts.Name)
	if err != nil {
		if errdefs.IsConflict(err) {
			return errRaced
		}
		return fmt.Errorf("create registry container %s: %w", opts.Name, err)
	}
	if err := start(ctx, opts, resp.ID); err != nil {
		// Nothing half-made is left claiming to be the registry.
		_ = opts.Docker.ContainerRemove(context.WithoutCancel(ctx), resp.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		return err
	}
	return nil
}

func ensureImage(ctx context.Context, opts Options) error {
	_, err := opts.Docker.ImageInspect(ctx, opts.Image)
	if err == nil {
		return nil
	}
	if !errdefs.IsNotFound(err) {
		return fmt.Errorf("inspect registry image %s: %w", opts.Image, err)
	}
	if strings.HasPrefix(opts.Image, offlineimage.Repository+":") {
		// Nothing to pull it from: it is built here, from Debian's binary.
		if _, err := offlineimage.Ensure(ctx, opts.Docker, "", opts.Image); err != nil {
			return fmt.Errorf("build registry image %s: %w", opts.Image, err)
		}
		return nil
	}
	rc, err := opts.Docker.ImagePull(ctx, opts.Image, image.PullOptions{})
	if err == nil {
		// The pull runs as long as its progress stream is read.
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err == nil {
			if _, err = opts.Docker.ImageInspect(ctx, opts.Image); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("registry image %s is not present and could not be pulled (%v): where no registry can be pulled from, pass --registry-image %s (built here from Debian's docker-registry package)",
		opts.Image, oneLine(err), offlineimage.Tag)
}

// portOwner names the container that publishes the port, if any.
func portOwner(ctx context.Context, opts Options) string {
	return publishedPorts(ctx, opts.Docker)[opts.HostPort]
}

// publishedPorts maps host ports running containers publish to a
// description of the container.
func publishedPorts(ctx context.Context, d Docker) map[int]string {
	out := map[int]string{}
	cs, err := d.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return out
	}
	for _, c := range cs {
		name := shortID(c.ID)
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		for _, p := range c.Ports {
			if p.PublicPort != 0 {
				out[int(p.PublicPort)] = fmt.Sprintf("docker container %s (image %s)", name, c.Image)
			}
		}
	}
	return out
}

// localDaemon reports whether the engine's published ports are this
// machine's, so probing the port here means something.
func localDaemon(d Docker) bool {
	h := d.DaemonHost()
	return h == "" || strings.HasPrefix(h, "unix://") || strings.HasPrefix(h, "npipe://")
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return !errors.Is(err, syscall.EADDRINUSE)
	}
	l.Close()
	return true
}

func isPortConflict(err error) bool {
	s := err.Error()
	return strings.Contains(s, "port is already allocated") || strings.Contains(s, "address already in use")
}

func isAlreadyConnected(err error) bool {
	return strings.Contains(err.Error(), "already exists in network") || strings.Contains(err.Error(), "already attached")
}

func waitReady(ctx context.Context, opts Options) error {
	if !localDaemon(opts.Docker) || opts.proxy != nil {
		// Ports published by a remote engine are not on this loopback.
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()
	var last error
	for {
		err := answers(ctx, opts.HostPort)
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("registry %s did not answer on 127.0.0.1:%d within %s (last: %v): see `docker logs %s`",
				opts.Name, opts.HostPort, opts.ReadyTimeout, oneLine(last), opts.Name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// answers checks the registry API on 127.0.0.1:port once.
func answers(ctx context.Context, port int) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/v2/", port)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// RemoveOptions say what Remove deletes.
type RemoveOptions struct {
	// DeleteData also deletes the volume holding what was pushed.
	DeleteData bool
}

// Remove deletes the registry container (and with DeleteData its volume).
// The caller decides when the last lab using it is gone. Removing an absent
// registry is not an error; removing a foreign container is refused.
func Remove(ctx context.Context, opts Options, ro RemoveOptions) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	unlock, err := lock(ctx, opts.Name)
	if err != nil {
		return err
	}
	defer unlock()
	st, _, err := inspect(ctx, opts)
	if err != nil {
		return err
	}
	if !st.Absent() {
		if err := opts.Docker.ContainerRemove(ctx, st.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove registry container %s: %w", opts.Name, err)
		}
	}
	if ro.DeleteData {
		if err := opts.Docker.VolumeRemove(ctx, opts.Volume, true); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove registry volume %s: %w", opts.Volume, err)
		}
	}
	return nil
}

// ensureNetwork creates the docker network kind uses when it is missing,
// with the settings kind itself would choose (pkg/cluster/internal/
// providers/docker/network.go in kind v0.31.0): a bridge with IP
// masquerading, the default bridge's MTU, and an IPv6 ULA subnet derived
// from the name, falling back to IPv4 only where IPv6 is unavailable. A
// network kind later finds is then one it would have made.
//
// Why a copy: kind exposes no network API (its ensureNetwork and
// generateULASubnetFromName live under pkg/cluster/internal, which Go
// forbids importing, and they shell out to the docker CLI), and kind makes
// the network only while creating a cluster, whereas the registry must
// join it before (or without) one. It talks to the engine only through
// the Docker interface, i.e. the command's engine.Engine client.
func ensureNetwork(ctx context.Context, d Docker, name string) error {
	if err := createNetwork(ctx, d, name); err != nil {
		return err
	}
	return dedupeNetworks(ctx, d, name)
}

// dedupeNetworks removes all but one network of the name, as kind does:
// Docker lets racing creates make several, and then nothing can join the
// name. Every racer keeps the same one (most containers, then lowest ID).
func dedupeNetworks(ctx context.Context, d Docker, name string) error {
	ns, err := networksNamed(ctx, d, name)
	if err != nil || len(ns) < 2 {
		return err
	}
	sort.Slice(ns, func(i, j int) bool {
		if len(ns[i].Containers) != len(ns[j].Containers) {
			return len(ns[i].Containers) > len(ns[j].Containers)
		}
		return ns[i].ID < ns[j].ID
	})
	for _, n := range ns[1:] {
		if err := d.NetworkRemove(ctx, n.ID); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove duplicate docker network %s (%s): %w", name, shortID(n.ID), err)
		}
	}
	return nil
}

func networksNamed(ctx context.Context, d Docker, name string) ([]network.Summary, error) {
	ns, err := d.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if err != nil {
		return nil, fmt.Errorf("list docker networks: %w", err)
	}
	var out []network.Summary
	for _, n := range ns {
		if n.Name == name { // the filter matches substrings
			out = append(out, n)
		}
	}
	return out, nil
}

func createNetwork(ctx context.Context, d Docker, name string) error {
	exists, err := networkExists(ctx, d, name)
	if err != nil || exists {
		return err
	}
	opts := map[string]string{"com.docker.network.bridge.enable_ip_masquerade": "true"}
	if br, err := d.NetworkInspect(ctx, "bridge", network.InspectOptions{}); err == nil {
		if mtu := br.Options["com.docker.network.driver.mtu"]; mtu != "" {
			if _, err := strconv.Atoi(mtu); err == nil {
				opts["com.docker.network.driver.mtu"] = mtu
			}
		}
	}
	const maxAttempts = 5
	for attempt := int32(0); attempt < maxAttempts; attempt++ {
		yes := true
		_, err = d.NetworkCreate(ctx, name, network.CreateOptions{
			Driver:     "bridge",
			Options:    opts,
			EnableIPv6: &yes,
			IPAM:       &network.IPAM{Config: []network.IPAMConfig{{Subnet: ulaSubnet(name, attempt)}}},
		})
		if err == nil || isNetworkExists(err) {
			return nil
		}
		if isIPv6Unavailable(err) && !isPoolOverlap(err) {
			_, err = d.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Options: opts})
			if err == nil || isNetworkExists(err) {
				return nil
			}
			return fmt.Errorf("create docker network %s: %w", name, err)
		}
		if !isPoolOverlap(err) {
			return fmt.Errorf("create docker network %s: %w", name, err)
		}
		if exists, _ := networkExists(ctx, d, name); exists {
			return nil
		}
	}
	return fmt.Errorf("create docker network %s: no free IPv6 subnet after %d attempts: %w", name, maxAttempts, err)
}

func networkExists(ctx context.Context, d Docker, name string) (bool, error) {
	ns, err := networksNamed(ctx, d, name)
	return len(ns) > 0, err
}

func isNetworkExists(err error) bool {
	return strings.Contains(err.Error(), "already exists")
}

// isPoolOverlap is dockerd's refusal of a subnet in use, or podman's
// (kind v0.31.0 pkg/cluster/internal/providers/podman/network.go
// isPoolOverlapError: netavark's and CNI's wording). On podman it is the
// common case: kind's first ULA subnet is the one Docker's kind network
// already holds on a host that runs both engines, and kind's podman
// provider then probes the next, as this does.
func isPoolOverlap(err error) bool {
	s := err.Error()
	for _, m := range []string{
		"Pool overlaps with other one on this address space", "networks have overlapping",
		"is already used on the host or by another config", "is being used by a network interface",
		"is already being used by a cni configuration",
	} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

func isIPv6Unavailable(err error) bool {
	s := err.Error()
	return strings.Contains(s, "Cannot read IPv6 setup for bridge") || strings.Contains(s, "(iptables failed: ip6tables")
}

func oneLine(err error) string {
	if err == nil {
		return ""
	}
	return text.OneLine(err.Error())
}

func shortID(id string) string { return id[:min(12, len(id))] }

// ulaSubnet is kind's generateULASubnetFromName: a /64 in fc00::/8 from the
// SHA-1 of the name and the attempt, so kind and kindlab pick the same one.
func ulaSubnet(name string, attempt int32) string {
	ip := make([]byte, 16)
	ip[0] = 0xfc
	h := sha1.New()
	_, _ = h.Write([]byte(name))
	_ = binary.Write(h, binary.LittleEndian, attempt)
	bs := h.Sum(nil)
	for i := 2; i < 8; i++ {
		ip[i] = bs[i]
	}
	return (&net.IPNet{IP: net.IP(ip), Mask: net.CIDRMask(64, 128)}).String()
}

// kindClusterLabel is the label kind puts on its node containers.
const kindClusterLabel = engine.KindClusterLabel
