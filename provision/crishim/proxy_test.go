package crishim_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindlab/kindlab/provision/crishim"
)

// syncBuffer collects the shim's log lines from its goroutines.
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

// shortDir is a temp dir whose socket paths fit the 108-byte limit.
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "crishim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startShim runs crishim.Serve, as `kindlab cri-shim` does, in front of
// runtimeEndpoint, and stops it when the test ends.
func startShim(t testing.TB, runtimeEndpoint string) (endpoint string, log *syncBuffer) {
	t.Helper()
	endpoint = "unix://" + filepath.Join(shortDir(t), "cri.sock")
	log = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- crishim.Serve(ctx, crishim.Options{Listen: endpoint, RuntimeEndpoint: runtimeEndpoint, Log: log,
			Ready: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("shim did not start: %v", err)
	case <-time.After(40 * time.Second):
		cancel()
		t.Fatal("shim not ready after 40s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("shim ended with %v", err)
		}
		if _, err := os.Stat(strings.TrimPrefix(endpoint, "unix://")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("shim left its socket behind: %v", err)
		}
	})
	return endpoint, log
}

// podConfig is a pod on the host network (no CNI needed), as the kubelet
// would describe it.
func podConfig(t *testing.T) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "shim-test", Namespace: "kindlab-test", Uid: fmt.Sprintf("uid-%x", rand.Uint64())},
		LogDirectory: t.TempDir(),
		Labels:       map[string]string{"app": "shim-test"},
		Annotations:  map[string]string{"kindlab.dev/test": "yes", "a": "b"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}},
	}
}

// TestServeForwardsToContainerd drives a real containerd through the shim
// the way the kubelet drives a node: version and status, an image pulled
// from a registry, a pod sandbox, a container started with a host
// directory mounted, a command run in it, the streaming URL for exec, and
// everything torn down again. Each answer must be containerd's own
// (compared with a direct call where the answer is stable), errors
// included, with their gRPC codes.
func TestServeForwardsToContainerd(t *testing.T) {
	tc := startContainerd(t)
	endpoint, log := startShim(t, tc.Endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	shimConn := dial(t, endpoint)
	shim := runtimeapi.NewRuntimeServiceClient(shimConn)
	images := runtimeapi.NewImageServiceClient(shimConn)
	direct := criClient(t, tc.Endpoint)

	vs, err := shim.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatalf("Version through the shim: %v", err)
	}
	vd, err := direct.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(vs, vd) || vs.RuntimeName != "containerd" {
		t.Errorf("Version through the shim %+v, direct %+v", vs, vd)
	}
	if !strings.Contains(log.String(), "for containerd "+vd.RuntimeVersion+" at "+tc.Endpoint) {
		t.Errorf("shim's start line does not name the runtime: %q", log.String())
	}
	st, err := shim.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatalf("Status through the shim: %v", err)
	}
	runtimeReady := false
	for _, c := range st.GetStatus().GetConditions() {
		runtimeReady = runtimeReady || (c.Type == runtimeapi.RuntimeReady && c.Status)
	}
	if !runtimeReady {
		t.Errorf("Status through the shim: RuntimeReady not true: %+v", st.GetStatus())
	}

	pulled, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: tc.Image}})
	if err != nil {
		t.Fatalf("PullImage %s through the shim: %v", tc.Image, err)
	}
	is, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: tc.Image}})
	if err != nil || is.GetImage().GetId() != pulled.ImageRef {
		t.Fatalf("ImageStatus through the shim: %+v, %v; pulled %s", is.GetImage(), err, pulled.ImageRef)
	}
	list, err := images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil || !slicesContainsImage(list.Images, pulled.ImageRef) {
		t.Fatalf("ListImages through the shim lacks %s: %v", pulled.ImageRef, err)
	}
	if fs, err := images.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}); err != nil || len(fs.ImageFilesystems) == 0 {
		t.Errorf("ImageFsInfo through the shim: %+v, %v", fs, err)
	}

	pod := podConfig(t)
	run, err := shim.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatalf("RunPodSandbox through the shim: %v", err)
	}
	sandbox := run.PodSandboxId
	defer func() {
		if _, err := shim.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sandbox}); err != nil {
			t.Errorf("StopPodSandbox through the shim: %v", err)
		}
		if _, err := shim.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sandbox}); err != nil {
			t.Errorf("RemovePodSandbox through the shim: %v", err)
		}
		left, err := direct.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: sandbox}})
		if err != nil || len(left.Items) != 0 {
			t.Errorf("sandbox %s still listed by containerd after removal through the shim: %v %v", sandbox, left, err)
		}
	}()
	ps, err := direct.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sandbox})
	if err != nil || ps.GetStatus().GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("containerd says sandbox %s is %v (%v)", sandbox, ps.GetStatus().GetState(), err)
	}

	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "hello.txt"), []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cc, err := shim.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sandbox, SandboxConfig: pod,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Image:    &runtimeapi.ImageSpec{Image: tc.Image},
			Command:  []string{"sleep", "3600"},
			Mounts:   []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: data, Readonly: true}},
			LogPath:  "app.log",
		}})
	if err != nil {
		t.Fatalf("CreateContainer through the shim: %v", err)
	}
	ctr := cc.ContainerId
	if _, err := shim.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr}); err != nil {
		t.Fatalf("StartContainer through the shim: %v", err)
	}
	ex, err := shim.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"cat", "/data/hello.txt"}, Timeout: 20})
	if err != nil || ex.ExitCode != 0 || string(ex.Stdout) != "hello from the host\n" {
		t.Fatalf("ExecSync through the shim: %v, exit %d, stdout %q, stderr %q", err, ex.GetExitCode(), ex.GetStdout(), ex.GetStderr())
	}
	// Exec, Attach and PortForward hand back containerd's streaming URL;
	// the kubelet then streams to containerd directly.
	streamURL, err := shim.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: ctr, Cmd: []string{"sh"}, Stdout: true})
	if err != nil || !strings.HasPrefix(streamURL.GetUrl(), "http://127.0.0.1:") {
		t.Errorf("Exec through the shim: %v, url %q (want containerd's streaming server on 127.0.0.1)", err, streamURL.GetUrl())
	}
	cs, err := shim.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr})
	if err != nil || cs.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("ContainerStatus through the shim: %v %v", cs.GetStatus().GetState(), err)
	}
	ls, err := shim.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: sandbox}})
	ld, derr := direct.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: sandbox}})
	if err != nil || derr != nil || len(ls.Containers) != 1 || !reflect.DeepEqual(ls, ld) {
		t.Errorf("ListContainers through the shim %v (%v), direct %v (%v)", ls, err, ld, derr)
	}

	// A call containerd refuses comes back with containerd's code and
	// message, not the shim's. containerd 1.6 has no image volumes: it
	// ignores the mount's image and fails on its empty host path.
	imageMount := &runtimeapi.CreateContainerRequest{PodSandboxId: sandbox, SandboxConfig: pod,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "model-reader"},
			Image:    &runtimeapi.ImageSpec{Image: tc.Image},
			Mounts:   []*runtimeapi.Mount{{ContainerPath: "/model", Image: &runtimeapi.ImageSpec{Image: tc.Image}}},
		}}
	_, serr := shim.CreateContainer(ctx, imageMount)
	_, derr = direct.CreateContainer(ctx, imageMount)
	if serr == nil || derr == nil {
		t.Fatalf("containerd 1.6 accepted an image mount (through the shim: %v, direct: %v)", serr, derr)
	}
	t.Logf("containerd %s on an image mount: %v", vd.RuntimeVersion, serr)
	ss, ds := status.Convert(serr), status.Convert(derr)
	if ss.Code() != ds.Code() || stripIDs(ss.Message()) != stripIDs(ds.Message()) {
		t.Errorf("refusal through the shim %v, direct %v", serr, derr)
	}
	if want := "CreateContainer kindlab-test/shim-test container model-reader: image mount /model (" + tc.Image + ") made read-only"; !strings.Contains(log.String(), want) {
		t.Errorf("shim log lacks %q:\n%s", want, log.String())
	}

	// GetContainerEvents is a server stream: whatever containerd does
	// with it (1.6 does not implement it), the caller sees the same.
	ectx, ecancel := context.WithTimeout(ctx, 3*time.Second)
	defer ecancel()
	codeOf := func(c runtimeapi.RuntimeServiceClient) string {
		s, err := c.GetContainerEvents(ectx, &runtimeapi.GetEventsRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		return status.Code(err).String()
	}
	if s, d := codeOf(shim), codeOf(direct); s != d {
		t.Errorf("GetContainerEvents through the shim ends with %s, direct with %s", s, d)
	}

	if _, err := shim.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctr, Timeout: 1}); err != nil {
		t.Errorf("StopContainer through the shim: %v", err)
	}
	if _, err := shim.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctr}); err != nil {
		t.Errorf("RemoveContainer through the shim: %v", err)
	}
}

// stripIDs drops the 64-hex container IDs a message names, which differ
// between two otherwise identical calls.
func stripIDs(s string) string {
	f := strings.Fields(s)
	for i, w := range f {
		if len(strings.Trim(w, `"`)) >= 64 {
			f[i] = "ID"
		}
	}
	return strings.Join(f, " ")
}

func slicesContainsImage(list []*runtimeapi.Image, id string) bool {
	for _, im := range list {
		if im.Id == id {
			return true
		}
	}
	return false
}

// TestCreateContainerRewriteReachesContainerd records, at the gRPC client
// boundary between the shim and a real containerd, the CreateContainer
// request that leaves the shim: image mounts arrive read-only, every other
// field (the host-path mount's writable flag included) exactly as the
// kubelet sent it, and containerd's answer comes back to the caller as is.
func TestCreateContainerRewriteReachesContainerd(t *testing.T) {
	tc := startContainerd(t)
	var (
		mu      sync.Mutex
		sent    []*runtimeapi.CreateContainerRequest
		answers []error
	)
	record := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if r, ok := req.(*runtimeapi.CreateContainerRequest); ok {
			// A copy through the wire format: what containerd received.
			b, merr := r.Marshal()
			cp := &runtimeapi.CreateContainerRequest{}
			if merr != nil || cp.Unmarshal(b) != nil {
				t.Errorf("re-encode the request: %v", merr)
			}
			mu.Lock()
			sent, answers = append(sent, cp), append(answers, err)
			mu.Unlock()
		}
		return err
	}
	conn := dial(t, tc.Endpoint, grpc.WithUnaryInterceptor(record))
	log := &syncBuffer{}
	srv := grpc.NewServer()
	crishim.NewProxy(conn, log).Register(srv)
	sock := filepath.Join(shortDir(t), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()
	shim := criClient(t, "unix://"+sock)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	data := t.TempDir()
	pod := podConfig(t)
	// What the 1.31 kubelet sends for the image-volume lab's pod: the image
	// mount without readonly, next to an ordinary writable host mount and
	// an image mount that is already read-only.
	kubelet := &runtimeapi.CreateContainerRequest{PodSandboxId: "not-a-sandbox", SandboxConfig: pod,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "read-model", Attempt: 2},
			Image:    &runtimeapi.ImageSpec{Image: tc.Image},
			Args:     []string{"mounttest", "--file_content=/model/model.txt"},
			Envs:     []*runtimeapi.KeyValue{{Key: "A", Value: "1"}},
			Labels:   map[string]string{"io.kubernetes.container.name": "read-model"},
			Mounts: []*runtimeapi.Mount{
				{ContainerPath: "/model", Image: &runtimeapi.ImageSpec{Image: "localhost:5001/kindlab/model:v1"}},
				{ContainerPath: "/var/run/secrets", HostPath: data, SelinuxRelabel: true},
				{ContainerPath: "/other", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "localhost:5001/kindlab/other:v1"}},
			},
		}}
	want := &runtimeapi.CreateContainerRequest{}
	b, _ := kubelet.Marshal()
	_ = want.Unmarshal(b)
	want.Config.Mounts[0].Readonly = true // the one change the shim makes

	_, serr := shim.CreateContainer(ctx, kubelet)
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 1 {
		t.Fatalf("%d CreateContainer requests reached containerd, want 1", len(sent))
	}
	got := sent[0]
	if !got.Config.Mounts[0].Readonly || got.Config.Mounts[1].Readonly || !got.Config.Mounts[2].Readonly {
		t.Errorf("mounts as containerd received them: %+v", got.Config.Mounts)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request at containerd differs from the kubelet's by more than the image mount's readonly:\n got %+v\nwant %+v", got, want)
	}
	// containerd refuses a sandbox it does not know; the caller gets that
	// refusal, code and message, exactly.
	if answers[0] == nil || serr == nil || status.Code(serr) != status.Code(answers[0]) || status.Convert(serr).Message() != status.Convert(answers[0]).Message() {
		t.Errorf("caller got %v, containerd answered %v", serr, answers[0])
	}
	t.Logf("containerd answered the rewritten request: %v", answers[0])
	if !strings.Contains(log.String(), "container read-model: image mount /model (localhost:5001/kindlab/model:v1) made read-only") ||
		strings.Contains(log.String(), "/other") {
		t.Errorf("shim log should name the one mount it changed:\n%s", log.String())
	}
}

// TestServeSocketChecks: the shim never takes over a socket another
// process serves, replaces one left by a dead shim, refuses a path that is
// not a socket and an endpoint that is not unix://, and gives up, removing
// its socket, when the runtime does not answer.
func TestServeSocketChecks(t *testing.T) {
	dir := shortDir(t)
	ctx := context.Background()
	serve := func(listen string, wait time.Duration) error {
		return crishim.Serve(ctx, crishim.Options{Listen: listen, RuntimeEndpoint: "unix://" + filepath.Join(dir, "no-runtime.sock"), RuntimeWait: wait})
	}

	taken := filepath.Join(dir, "taken.sock")
	l, err := net.Listen("unix", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	err = serve("unix://"+taken, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "listen on "+taken+": another process already serves this socket") {
		t.Errorf("taken socket: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a taken socket took %s to refuse: it must not wait for the runtime", d)
	}

	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	sl.(*net.UnixListener).SetUnlinkOnClose(false)
	sl.Close()
	err = serve("unix://"+stale, time.Second)
	if err == nil || !strings.Contains(err.Error(), "does not answer CRI Version") {
		t.Errorf("stale socket, no runtime: %v (want the stale socket replaced, then the runtime refused)", err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the shim left its socket after giving up: %v", err)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := serve("unix://"+file, time.Second); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Errorf("regular file: %v", err)
	}
	for _, bad := range []string{"tcp://127.0.0.1:1234", "/run/x.sock", "unix://relative.sock"} {
		if err := serve(bad, time.Second); err == nil || !strings.Contains(err.Error(), "--listen: \""+bad+"\" is not a unix socket endpoint") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}
