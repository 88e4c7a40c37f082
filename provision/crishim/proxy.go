// Package crishim is kindlab's CRI shim: a CRI server that sits between the
// Kubernetes 1.31 kubelet and containerd inside a kind node and forwards
// every RuntimeService and ImageService call to containerd unchanged, except
// CreateContainer, where every mount that names an image is made read-only.
//
// Why: the 1.31 kubelet builds image-volume mounts with only Name,
// ContainerPath and Image (k8s.io/kubernetes v1.31.14
// pkg/kubelet/kubelet_pods.go, makeMounts), so their CRI `readonly` is false
// whatever the pod says, and containerd 2.1 and later refuse exactly that
// (containerd internal/cri/server/container_image_mount.go, PR #10579:
// "readonly must be true while mount image"). Kubernetes 1.32 fixed the
// kubelet (kubernetes PR #126806: image volumes are always read-only) and
// the fix was never backported; CRI-O 1.31 forces the mount read-only
// itself. The shim sends what the 1.32 kubelet sends, nothing more.
//
// The shim speaks k8s.io/cri-api v0.31, the API the 1.31 kubelet speaks:
// anything a newer containerd adds to a response is beyond what that
// kubelet can read anyway.
package crishim

import (
	"context"
	"fmt"
	"io"
	"log"
	"strings"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Proxy implements the CRI RuntimeService and ImageService by calling the
// same method on a runtime's CRI client. Errors from the runtime are
// returned as they came (gRPC status and message intact), so the kubelet
// and `kubectl describe` show containerd's own words.
type Proxy struct {
	runtime runtimeapi.RuntimeServiceClient
	images  runtimeapi.ImageServiceClient
	log     *log.Logger
}

var (
	_ runtimeapi.RuntimeServiceServer = (*Proxy)(nil)
	_ runtimeapi.ImageServiceServer   = (*Proxy)(nil)
)

// NewProxy returns a proxy over a connection to the runtime's CRI socket.
// Each rewritten CreateContainer is logged to logw as one line (nil: not
// logged), so `journalctl -u kindlab-cri-shim` shows what the shim changed.
func NewProxy(conn *grpc.ClientConn, logw io.Writer) *Proxy {
	if logw == nil {
		logw = io.Discard
	}
	return &Proxy{
		runtime: runtimeapi.NewRuntimeServiceClient(conn),
		images:  runtimeapi.NewImageServiceClient(conn),
		log:     log.New(logw, "", 0),
	}
}

// Register serves p's two services on s.
func (p *Proxy) Register(s *grpc.Server) {
	runtimeapi.RegisterRuntimeServiceServer(s, p)
	runtimeapi.RegisterImageServiceServer(s, p)
}

// MakeImageMountsReadOnly sets Readonly on every mount of the container
// config that names an image (an image volume) and returns the container
// paths it changed. Mounts already read-only and other mounts are left as
// they are.
func MakeImageMountsReadOnly(cfg *runtimeapi.ContainerConfig) []string {
	if cfg == nil {
		return nil
	}
	var changed []string
	for _, m := range cfg.Mounts {
		if m == nil || m.Image == nil || m.Readonly {
			continue
		}
		m.Readonly = true
		changed = append(changed, fmt.Sprintf("%s (%s)", m.ContainerPath, m.Image.Image))
	}
	return changed
}

// CreateContainer is the one call the shim changes: image mounts become
// read-only, as the 1.32 kubelet sends them.
func (p *Proxy) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	if changed := MakeImageMountsReadOnly(req.GetConfig()); len(changed) > 0 {
		meta := req.GetSandboxConfig().GetMetadata()
		p.log.Printf("CreateContainer %s/%s container %s: image mount %s made read-only",
			meta.GetNamespace(), meta.GetName(), req.GetConfig().GetMetadata().GetName(), strings.Join(changed, ", "))
	}
	return p.runtime.CreateContainer(ctx, req)
}

// GetContainerEvents streams the runtime's container events to the caller
// until either side ends the stream.
func (p *Proxy) GetContainerEvents(req *runtimeapi.GetEventsRequest, srv runtimeapi.RuntimeService_GetContainerEventsServer) error {
	stream, err := p.runtime.GetContainerEvents(srv.Context(), req)
	if err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := srv.Send(ev); err != nil {
			return err
		}
	}
}

// The rest forward unchanged. Exec, Attach and PortForward return the URL
// of containerd's streaming server, which the kubelet then talks to
// directly: the streams themselves never pass through the shim.

func (p *Proxy) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return p.runtime.Version(ctx, req)
}

func (p *Proxy) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return p.runtime.RunPodSandbox(ctx, req)
}

func (p *Proxy) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	return p.runtime.StopPodSandbox(ctx, req)
}

func (p *Proxy) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	return p.runtime.RemovePodSandbox(ctx, req)
}

func (p *Proxy) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	return p.runtime.PodSandboxStatus(ctx, req)
}

func (p *Proxy) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	return p.runtime.ListPodSandbox(ctx, req)
}

func (p *Proxy) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	return p.runtime.StartContainer(ctx, req)
}

func (p *Proxy) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	return p.runtime.StopContainer(ctx, req)
}

func (p *Proxy) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	return p.runtime.RemoveContainer(ctx, req)
}

func (p *Proxy) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	return p.runtime.ListContainers(ctx, req)
}

func (p *Proxy) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	return p.runtime.ContainerStatus(ctx, req)
}

func (p *Proxy) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	return p.runtime.UpdateContainerResources(ctx, req)
}

func (p *Proxy) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	return p.runtime.ReopenContainerLog(ctx, req)
}

func (p *Proxy) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	return p.runtime.ExecSync(ctx, req)
}

func (p *Proxy) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	return p.runtime.Exec(ctx, req)
}

func (p *Proxy) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	return p.runtime.Attach(ctx, req)
}

func (p *Proxy) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return p.runtime.PortForward(ctx, req)
}

func (p *Proxy) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	return p.runtime.ContainerStats(ctx, req)
}

func (p *Proxy) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	return p.runtime.ListContainerStats(ctx, req)
}

func (p *Proxy) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	return p.runtime.PodSandboxStats(ctx, req)
}

func (p *Proxy) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	return p.runtime.ListPodSandboxStats(ctx, req)
}

func (p *Proxy) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	return p.runtime.UpdateRuntimeConfig(ctx, req)
}

func (p *Proxy) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	return p.runtime.Status(ctx, req)
}

func (p *Proxy) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	return p.runtime.CheckpointContainer(ctx, req)
}

func (p *Proxy) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	return p.runtime.ListMetricDescriptors(ctx, req)
}

func (p *Proxy) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	return p.runtime.ListPodSandboxMetrics(ctx, req)
}

func (p *Proxy) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return p.runtime.RuntimeConfig(ctx, req)
}

func (p *Proxy) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	return p.images.ListImages(ctx, req)
}

func (p *Proxy) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return p.images.ImageStatus(ctx, req)
}

func (p *Proxy) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	return p.images.PullImage(ctx, req)
}

func (p *Proxy) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	return p.images.RemoveImage(ctx, req)
}

func (p *Proxy) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return p.images.ImageFsInfo(ctx, req)
}
