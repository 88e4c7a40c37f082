package check

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kindlab/kindlab/provision/crishim"
)

func init() {
	register(definition{
		name: "image-volume", feature: "Image volumes (ImageVolume, alpha)", position: 90,
		// Its probe pod is a server-side dry run (nothing is created); it
		// waits for the workload's pod to run, and a pod still pending would
		// stay off a tainted node. The registry is only read.
		needs: []Resource{NodeTaints},
		run:   checkImageVolume,
	})
}

const (
	imageVolumeNamespace = "kindlab-image-volume"
	imageVolumePod       = "model-reader"
	imageVolumeReader    = "read-model"
)

// checkImageVolume proves the apiserver accepts and keeps image volumes,
// that the artifact is in the local registry, and that a container reads the
// artifact's file with the expected content (an empty mount fails).
func checkImageVolume(ctx context.Context, c *run) error {
	cs := c.client()
	// A server-side dry run shows what the apiserver does with an image
	// volume now, whatever happened when the workload was applied (with the
	// gate off, 1.31 silently drops the source).
	ref := defaultModelRef
	if c.env.Lab != nil && len(c.env.Lab.Artifacts) > 0 {
		ref = c.env.Lab.Artifacts[0].Reference
	}
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kindlab-image-volume-probe", Namespace: imageVolumeNamespace},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "probe", Image: probeImage(c),
				VolumeMounts: []corev1.VolumeMount{{Name: "model", MountPath: "/model"}}}},
			Volumes: []corev1.Volume{{Name: "model", VolumeSource: corev1.VolumeSource{
				Image: &corev1.ImageVolumeSource{Reference: ref, PullPolicy: corev1.PullIfNotPresent}}}},
		},
	}
	dry, err := cs.CoreV1().Pods(imageVolumeNamespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return fmt.Errorf("the apiserver refuses a pod with an image volume (ImageVolume gate off?): %w", err)
	}
	if len(dry.Spec.Volumes) == 0 || dry.Spec.Volumes[0].Image == nil {
		return fmt.Errorf("the apiserver dropped the image volume source from a dry-run pod: ImageVolume gate off")
	}
	c.detail("apiserver accepts and keeps image volumes (server-side dry run)")
	pod, err := getPod(ctx, c, imageVolumeNamespace, imageVolumePod, "image-volume")
	if err != nil {
		return err
	}
	var vol *corev1.ImageVolumeSource
	for _, v := range pod.Spec.Volumes {
		if v.Image != nil {
			vol = v.Image
		}
	}
	if vol == nil {
		return fmt.Errorf("pod %s/%s has no image volume: the apiserver dropped it (ImageVolume gate off)", imageVolumeNamespace, imageVolumePod)
	}
	c.detail("pod %s mounts image %s", imageVolumePod, vol.Reference)

	want, file, err := expectedModel(c, pod, vol.Reference)
	if err != nil {
		return err
	}
	if c.env.RegistryHost != "" {
		digest, err := registryManifest(ctx, c.env.RegistryHost, vol.Reference)
		if err != nil {
			return err
		}
		c.detail("registry %s serves %s (%s)", c.env.RegistryHost, vol.Reference, digest)
	}
	if err := c.needNodes("the kubelet and the runtime mount the image"); err != nil {
		return err
	}
	shim := c.env.Lab != nil && c.env.Lab.ImageVolumeReadOnlyShim
	var logs, node, runtime string
	err = poll(ctx, 500*time.Millisecond, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		p, err := cs.CoreV1().Pods(imageVolumeNamespace).Get(ctx, imageVolumePod, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("get pod %s/%s: %w", imageVolumeNamespace, imageVolumePod, err)
		}
		done, why := initDone(p, imageVolumeReader)
		if node == "" && p.Spec.NodeName != "" {
			node = p.Spec.NodeName
			n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return false, "", fmt.Errorf("get node %s: %w", node, err)
			}
			runtime = n.Status.NodeInfo.ContainerRuntimeVersion
		}
		if msg, ok := runtimeRefusesImageMount(p); ok {
			if shim {
				return false, "", fmt.Errorf("containerd on node %s still got a writable image mount although the lab runs kindlab's CRI shim "+
					"(spec.containerRuntime.imageVolumeReadOnlyShim): is that node's kubelet talking to it? (docker exec %s systemctl status %s); containerd says: %s",
					node, node, crishim.UnitName, msg)
			}
			return false, "", unsupported("the container runtime cannot mount image volumes for this kubelet: containerd 2.1+ accepts only read-only image mounts "+
				"and the Kubernetes 1.31 kubelet does not mark them read-only (pkg/kubelet/kubelet_pods.go makeMounts; fixed in 1.32 by kubernetes PR #126806); "+
				"the runtime says: %s. Turn on spec.containerRuntime.imageVolumeReadOnlyShim (kindlab's CRI shim) to mount it on 1.31; "+
				"Kubernetes 1.32+ or CRI-O need no shim", msg)
		}
		if !done {
			if reason := oldContainerd(runtime); reason != "" {
				return false, "", unsupported("node %s runs %s: %s; the pod waits: %s", node, runtime, reason, why)
			}
			if l, _ := podLogs(ctx, c, imageVolumeNamespace, imageVolumePod, imageVolumeReader); strings.TrimSpace(l) != "" {
				why += "; reader says: " + strings.TrimSpace(l)
			}
			return false, why, nil
		}
		logs, err = podLogs(ctx, c, imageVolumeNamespace, imageVolumePod, imageVolumeReader)
		return err == nil, "", err
	})
	if err != nil {
		return err
	}
	got := mounttestContent(logs)
	if got == "" {
		return fmt.Errorf("%s in the image volume is empty or missing (the runtime mounted nothing?): reader logged %q", file, strings.TrimSpace(logs))
	}
	if want != "" && got != want {
		return fmt.Errorf("%s in the image volume reads %q, want %q (the artifact's file)", file, got, want)
	}
	c.detail("the container read %s from the image volume: %q", file, firstLine(got))
	if shim {
		c.detail("mounted on Kubernetes 1.31 through kindlab's CRI shim on node %s (%s): the 1.31 kubelet sends image mounts without readonly "+
			"(pkg/kubelet/kubelet_pods.go makeMounts) and containerd 2.1+ refuses those (\"readonly must be true while mount image\"); "+
			"the shim marks them read-only, as the 1.32 kubelet does (kubernetes PR #126806). Kubernetes 1.32+ or CRI-O need no shim", node, runtime)
		if line := shimRewrite(ctx, c, node); line != "" {
			c.detail("the shim's journal on %s: %s", node, line)
		}
	}
	return nil
}

// shimRewrite finds the shim's log line for the reader container on a node:
// the proof that this mount went through it. "" when it cannot be read.
func shimRewrite(ctx context.Context, c *run, node string) string {
	if node == "" {
		return ""
	}
	out, err := c.exec(ctx, node, "journalctl", "_SYSTEMD_UNIT="+crishim.UnitName, "-o", "cat", "--no-pager")
	if err != nil {
		return ""
	}
	want := fmt.Sprintf("CreateContainer %s/%s container %s:", imageVolumeNamespace, imageVolumePod, imageVolumeReader)
	last := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, want) {
			last = line
		}
	}
	return last
}

// oldContainerd says why a node's runtime cannot mount image volumes at
// all, from the version the kubelet reports (node.status.nodeInfo
// .containerRuntimeVersion, e.g. containerd://1.7.18), or "" when it can or
// the runtime is not containerd. containerd gained image volumes in 2.1.0
// (containerd PR #10579); 2.0 and 1.7 fail with `failed to mkdir ""`
// (kind #3745) or may mount nothing.
func oldContainerd(runtime string) string {
	v, ok := strings.CutPrefix(runtime, "containerd://")
	if !ok {
		return ""
	}
	v = strings.TrimPrefix(v, "v")
	var major, minor int
	if n, _ := fmt.Sscanf(v, "%d.%d", &major, &minor); n != 2 {
		return ""
	}
	if major > 2 || (major == 2 && minor >= 1) {
		return ""
	}
	return fmt.Sprintf("containerd mounts image volumes from 2.1.0 on (containerd PR #10579), this is %d.%d; "+
		"2.0 and 1.7 have no image-volume support (pods fail with `failed to mkdir \"\"`, kind #3745): use a node image with containerd 2.1+ "+
		"(kind v0.29.0 or later, e.g. kindest/node:v1.31.14 of kind v0.31.0) together with kindlab's CRI shim", major, minor)
}

// runtimeRefusesImageMount spots containerd refusing the 1.31 kubelet's
// image mount (its CRI request lacks readonly: true): the pod can never
// start there, whatever the manifest says.
func runtimeRefusesImageMount(p *corev1.Pod) (string, bool) {
	for _, st := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		w := st.State.Waiting
		if w == nil || !strings.Contains(w.Message, "readonly must be true while mount image") {
			continue
		}
		msg := w.Message
		// The rest is the whole CRI mount, annotations included.
		if i := strings.Index(msg, ": container_path"); i > 0 {
			msg = msg[:i]
		}
		return msg, true
	}
	return "", false
}

// expectedModel finds the file the reader prints (its --file_content flag)
// inside the lab's artifact for the volume's reference. Without the lab,
// any non-empty content passes.
func expectedModel(c *run, pod *corev1.Pod, ref string) (content, file string, err error) {
	var mountPath string
	for _, ic := range pod.Spec.InitContainers {
		if ic.Name != imageVolumeReader {
			continue
		}
		for _, a := range ic.Args {
			if f, ok := strings.CutPrefix(a, "--file_content="); ok {
				file = f
			}
		}
		for _, m := range ic.VolumeMounts {
			if strings.HasPrefix(file, m.MountPath+"/") {
				mountPath = m.MountPath
			}
		}
	}
	if file == "" || mountPath == "" {
		return "", "", fmt.Errorf("pod %s/%s: init container %s does not read a file from the image volume", imageVolumeNamespace, imageVolumePod, imageVolumeReader)
	}
	if c.env.Lab == nil {
		return "", file, nil
	}
	for _, a := range c.env.Lab.Artifacts {
		if a.Reference != ref {
			continue
		}
		dir, err := a.Dir.Sub()
		if err != nil {
			return "", "", fmt.Errorf("artifact %s: %w", a.Name, err)
		}
		b, err := fs.ReadFile(dir, strings.TrimPrefix(file, mountPath+"/"))
		if err != nil {
			return "", "", fmt.Errorf("artifact %s has no %s: %w", a.Name, strings.TrimPrefix(file, mountPath+"/"), err)
		}
		return string(b), file, nil
	}
	return "", file, nil
}

// registryManifest asks the registry for the artifact's manifest.
func registryManifest(ctx context.Context, host, ref string) (string, error) {
	repoTag := ref[strings.Index(ref, "/")+1:]
	repo, tag, ok := strings.Cut(repoTag, ":")
	if !ok {
		tag = "latest"
	}
	if r, d, ok := strings.Cut(repoTag, "@"); ok {
		repo, tag = strings.Split(r, ":")[0], d
	}
	u := fmt.Sprintf("http://%s/v2/%s/manifests/%s", host, repo, tag)
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("registry %s answers %s for %s: was the artifact pushed?", host, resp.Status, ref)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}

// defaultModelRef is the image-volume lab's artifact, for a check run
// without the lab.
const defaultModelRef = "localhost:5001/kindlab/model:v1"

// probeImage is an image the lab declares (never pulled: dry runs only).
func probeImage(c *run) string {
	if c.env.Lab != nil {
		for _, img := range c.env.Lab.Images {
			if img.Name == "agnhost" {
				return img.Reference
			}
		}
	}
	return "registry.k8s.io/e2e-test-images/agnhost:2.52@sha256:b173c7d0ffe3d805d49f4dfe48375169b7b8d2e1feb81783efd61eb9d08042e6"
}
