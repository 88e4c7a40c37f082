package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	kindexec "sigs.k8s.io/kind/pkg/exec"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// testOptions names a registry of the test's own, so tests never touch the
// machine's shared kind-registry or kind network.
func testOptions(t *testing.T, c *client.Client) registry.Options {
	return registrytest.Options(t, c)
}

func freePort(t *testing.T) int { return registrytest.FreePort(t) }

func push(t *testing.T, port int, repo string) string {
	t.Helper()
	img, err := artifact.Build(fstest.MapFS{"data.txt": {Data: []byte("kept across restarts " + repo)}}, artifact.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := artifact.Push(context.Background(), img, fmt.Sprintf("localhost:%d/%s:v1", port, repo), artifact.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Digest
}

func assertPresent(t *testing.T, port int, repo, digest string) {
	t.Helper()
	out := registrytest.Skopeo(t, "inspect", "--tls-verify=false", "--format", "{{.Digest}}", fmt.Sprintf("docker://localhost:%d/%s:v1", port, repo))
	if got := strings.TrimSpace(string(out)); got != digest {
		t.Fatalf("%s: registry serves %s, pushed %s", repo, got, digest)
	}
}

func TestLifecycle(t *testing.T) {
	c := registrytest.Docker(t)
	o := testOptions(t, c)
	ctx := context.Background()

	st, err := registry.Ensure(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Created || !st.Running || st.HostPort != o.HostPort || st.Endpoint != fmt.Sprintf("localhost:%d", o.HostPort) {
		t.Fatalf("first Ensure: %+v", st)
	}
	info, err := c.ContainerInspect(ctx, o.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range info.HostConfig.PortBindings["5000/tcp"] {
		if b.HostIP != "127.0.0.1" {
			t.Errorf("published on %q: must be 127.0.0.1 only", b.HostIP)
		}
	}
	if _, ok := info.NetworkSettings.Networks[o.Network]; !ok {
		t.Errorf("not on network %s: %v", o.Network, info.NetworkSettings.Networks)
	}
	if info.Config.Labels[registry.LabelOwner] != "true" {
		t.Errorf("labels %v", info.Config.Labels)
	}
	net, err := c.NetworkInspect(ctx, o.Network, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if net.Driver != "bridge" || net.Options["com.docker.network.bridge.enable_ip_masquerade"] != "true" {
		t.Errorf("network %s made unlike kind's: driver %s options %v", o.Network, net.Driver, net.Options)
	}
	digest := push(t, o.HostPort, "kindlab/keep")

	// Reuse: same container, nothing created.
	st2, err := registry.Ensure(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Created || st2.Started || st2.ID != st.ID {
		t.Errorf("second Ensure did not reuse: %+v (first %s)", st2, st.ID)
	}

	// Stopped (machine reboot, docker stop): Ensure starts the same one.
	if err := c.ContainerStop(ctx, o.Name, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	st3, err := registry.Ensure(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !st3.Started || st3.ID != st.ID {
		t.Errorf("Ensure after stop: %+v", st3)
	}
	assertPresent(t, o.HostPort, "kindlab/keep", digest)

	// Container removed, volume kept: a new container serves the old data.
	if err := registry.Remove(ctx, o, registry.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if st, err := registry.Inspect(ctx, o); err != nil || !st.Absent() {
		t.Fatalf("after Remove: %+v, %v", st, err)
	}
	st4, err := registry.Ensure(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !st4.Created || st4.ID == st.ID {
		t.Errorf("Ensure after Remove: %+v", st4)
	}
	assertPresent(t, o.HostPort, "kindlab/keep", digest)

	// Another port for the same registry is refused with the way out.
	o2 := o
	o2.HostPort = o.HostPort + 1
	if _, err := registry.Ensure(ctx, o2); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("--registry-port %d", o.HostPort)) {
		t.Errorf("Ensure on another port: %v", err)
	}

	// Remove with data: container and volume gone.
	if err := registry.Remove(ctx, o, registry.RemoveOptions{DeleteData: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.VolumeInspect(ctx, o.Name+"-data"); !errdefs.IsNotFound(err) {
		t.Errorf("volume still there after Remove with data: %v", err)
	}
	if err := registry.Remove(ctx, o, registry.RemoveOptions{DeleteData: true}); err != nil {
		t.Errorf("Remove of an absent registry: %v", err)
	}
}

func TestRefuseForeignContainer(t *testing.T) {
	c := registrytest.Docker(t)
	o := testOptions(t, c)
	ctx := context.Background()
	resp, err := c.ContainerCreate(ctx, &container.Config{Image: o.Image}, nil, nil, nil, o.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	})

	var notOurs *registry.NotOursError
	if _, err := registry.Ensure(ctx, o); !errors.As(err, &notOurs) || strings.Contains(err.Error(), "\n") {
		t.Errorf("Ensure over a foreign container: %v", err)
	}
	if err := registry.Remove(ctx, o, registry.RemoveOptions{}); !errors.As(err, &notOurs) {
		t.Errorf("Remove of a foreign container: %v", err)
	}
	if _, err := registry.Inspect(ctx, o); !errors.As(err, &notOurs) {
		t.Errorf("Inspect of a foreign container: %v", err)
	}
	if _, err := c.ContainerInspect(ctx, resp.ID); err != nil {
		t.Errorf("the foreign container was touched: %v", err)
	}
}

func TestPortTaken(t *testing.T) {
	c := registrytest.Docker(t)
	ctx := context.Background()

	t.Run("by a program", func(t *testing.T) {
		o := testOptions(t, c)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", o.HostPort))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var taken *registry.PortTakenError
		_, err = registry.Ensure(ctx, o)
		if !errors.As(err, &taken) || !strings.Contains(err.Error(), "--registry-port") {
			t.Fatalf("Ensure on a taken port: %v", err)
		}
		if taken.Free <= o.HostPort || !strings.Contains(err.Error(), fmt.Sprintf("%d is free", taken.Free)) {
			t.Errorf("no free port suggested: %v", err)
		}
		if st, err := registry.Inspect(ctx, o); err != nil || !st.Absent() {
			t.Errorf("a failed Ensure left a container: %+v %v", st, err)
		}
	})

	t.Run("by a container", func(t *testing.T) {
		owner := testOptions(t, c)
		if _, err := registry.Ensure(ctx, owner); err != nil {
			t.Fatal(err)
		}
		o := testOptions(t, c)
		o.HostPort = owner.HostPort
		_, err := registry.Ensure(ctx, o)
		if err == nil || !strings.Contains(err.Error(), owner.Name) || !strings.Contains(err.Error(), "--registry-port") {
			t.Fatalf("Ensure on a port another container publishes: %v, want the owner %s named", err, owner.Name)
		}
	})
}

// dockerNode is a kind nodes.Node over `docker exec`, the way kind's own
// docker provider runs node commands.
type dockerNode struct{ name string }

func (n dockerNode) String() string              { return n.name }
func (n dockerNode) Role() (string, error)       { return "worker", nil }
func (n dockerNode) IP() (string, string, error) { return "", "", nil }
func (n dockerNode) SerialLogs(io.Writer) error  { return nil }
func (n dockerNode) Command(cmd string, args ...string) kindexec.Cmd {
	return kindexec.Command("docker", append([]string{"exec", "-i", n.name, cmd}, args...)...)
}
func (n dockerNode) CommandContext(ctx context.Context, cmd string, args ...string) kindexec.Cmd {
	return kindexec.CommandContext(ctx, "docker", append([]string{"exec", "-i", n.name, cmd}, args...)...)
}

var _ nodes.Node = dockerNode{}

// TestWireNodes writes hosts.toml into node-like containers on the
// registry's network and proves a node reaches the registry by the
// endpoint written there.
func TestWireNodes(t *testing.T) {
	c := registrytest.Docker(t)
	if _, err := exec.LookPath("docker"); err != nil {
		registrytest.SkipOrFail(t, "docker CLI not on PATH (kind runs node commands through it)")
	}
	o := testOptions(t, c)
	ctx := context.Background()
	if _, err := registry.Ensure(ctx, o); err != nil {
		t.Fatal(err)
	}
	ns := startNodes(t, c, o, 2)
	endpoint := fmt.Sprintf("%s:%d", o.Name, registry.ContainerPort)
	hosts := registry.RegistryHosts(5002)
	if err := registry.WireNodesTo(ctx, ns, hosts, endpoint); err != nil {
		t.Fatal(err)
	}
	// Twice: rewiring an already wired node is fine.
	if err := registry.WireNodesTo(ctx, ns, hosts, endpoint); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[host.\"http://%s\"]\n", endpoint)
	for _, n := range ns {
		for _, h := range []string{"localhost:5002", "localhost:5001"} {
			out, err := exec.Command("docker", "exec", n.String(), "cat", "/etc/containerd/certs.d/"+h+"/hosts.toml").CombinedOutput()
			if err != nil || string(out) != want {
				t.Errorf("%s %s hosts.toml = %q (%v), want %q", n, h, out, err, want)
			}
		}
		out, err := exec.Command("docker", "exec", n.String(), "wget", "-q", "-O", "-", "http://"+endpoint+"/v2/").CombinedOutput()
		if err != nil {
			t.Errorf("node %s cannot reach the registry at %s on the network: %v: %s", n, endpoint, err, out)
		}
	}

	gone := dockerNode{name: o.Name + "-missing"}
	ctx2, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := registry.WireNodes(ctx2, []nodes.Node{gone}, 5001); err == nil || !strings.Contains(err.Error(), gone.name) {
		t.Errorf("WireNodes on a missing node: %v", err)
	}
}

// TestConcurrentEnsure: two `kindlab up` at once share one registry.
func TestConcurrentEnsure(t *testing.T) {
	c := registrytest.Docker(t)
	o := testOptions(t, c)
	ctx := context.Background()
	type res struct {
		st  *registry.Status
		err error
	}
	ch := make(chan res, 3)
	for range 3 {
		go func() {
			st, err := registry.Ensure(ctx, o)
			ch <- res{st, err}
		}()
	}
	ids := map[string]bool{}
	created := 0
	var results []res
	for range 3 { // all of them, so none outlives the test's cleanup
		results = append(results, <-ch)
	}
	for _, r := range results {
		if r.err != nil {
			t.Errorf("concurrent Ensure: %v", r.err)
			continue
		}
		ids[r.st.ID] = true
		if r.st.Created {
			created++
		}
		if !r.st.Ready {
			t.Errorf("Ensure returned a registry not answering: %+v", r.st)
		}
	}
	if len(ids) != 1 || created != 1 {
		t.Errorf("%d containers, %d reported created; want 1 and 1", len(ids), created)
	}
}

// startNodes runs n busybox containers on the registry's network, standing
// in for kind nodes.
func startNodes(t *testing.T, c *client.Client, o registry.Options, n int) []nodes.Node {
	t.Helper()
	ctx := context.Background()
	busybox := registrytest.BusyboxImage(t, c)
	var ns []nodes.Node
	for i := range n {
		name := fmt.Sprintf("%s-node%d", o.Name, i)
		resp, err := c.ContainerCreate(ctx, &container.Config{Image: busybox}, nil,
			&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{o.Network: {}}}, nil, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = c.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		})
		if err := c.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		ns = append(ns, dockerNode{name: name})
	}
	return ns
}

// TestOfflineImageBuiltOnDemand: an offline registry image that is not
// loaded yet is built from Debian's binary instead of pulled.
func TestOfflineImageBuiltOnDemand(t *testing.T) {
	c := registrytest.Docker(t)
	o := testOptions(t, c)
	o.Image = fmt.Sprintf("kindlab.local/registry:test-%x", rand.Uint32())
	ctx := context.Background()
	t.Cleanup(func() {
		_ = registry.Remove(context.Background(), o, registry.RemoveOptions{DeleteData: true})
		_, _ = c.ImageRemove(context.Background(), o.Image, image.RemoveOptions{})
	})
	if _, err := c.ImageInspect(ctx, o.Image); !errdefs.IsNotFound(err) {
		t.Fatalf("%s present before the test: %v", o.Image, err)
	}
	st, err := registry.Ensure(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if st.Image != o.Image || !st.Ready {
		t.Errorf("status %+v", st)
	}
}

// TagDigest reads a tag from the registry's storage through the Engine API
// and agrees with what the registry serves over HTTP; a tag that does not
// exist reads as "".
func TestTagDigestThroughEngine(t *testing.T) {
	c := registrytest.Docker(t)
	o := testOptions(t, c)
	ctx := context.Background()
	if _, err := registry.Ensure(ctx, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { registry.Remove(context.Background(), o, registry.RemoveOptions{DeleteData: true}) })
	digest := push(t, o.HostPort, "kindlab/tagged")
	got, err := registry.TagDigest(ctx, o, c, fmt.Sprintf("localhost:%d/kindlab/tagged:v1", o.HostPort))
	if err != nil {
		t.Fatal(err)
	}
	if got != digest {
		t.Errorf("TagDigest = %q, the registry serves %s", got, digest)
	}
	for _, ref := range []string{
		fmt.Sprintf("localhost:%d/kindlab/tagged:v2", o.HostPort),
		fmt.Sprintf("localhost:%d/kindlab/nothing:v1", o.HostPort),
	} {
		if got, err := registry.TagDigest(ctx, o, c, ref); err != nil || got != "" {
			t.Errorf("TagDigest(%s) = %q, %v; want \"\", nil", ref, got, err)
		}
	}
}
