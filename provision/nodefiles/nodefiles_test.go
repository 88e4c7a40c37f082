package nodefiles_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/kindlab/kindlab/provision/nodefiles"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// Files delivered into the volume are seen by a container that bind-mounts
// the volume's directory, as kind's nodes do (a directory and a single
// file), with their modes; a second delivery replaces the first's files;
// Remove leaves no volume and the filler leaves no container.
func TestDeliverAndRemove(t *testing.T) {
	c := registrytest.Docker(t)
	img := registrytest.BusyboxImage(t, c)
	ctx := context.Background()
	cluster := fmt.Sprintf("kindlab-test-nf-%d", time.Now().UnixNano()%1e6)
	t.Cleanup(func() { _, _ = nodefiles.Remove(context.Background(), c, cluster) })

	bin := filepath.Join(t.TempDir(), "shim")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho shim\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vol, err := nodefiles.Deliver(ctx, c, cluster, img, []nodefiles.File{
		{Name: "apiserver/authn.yaml", Content: []byte("old")},
		{Name: "stale.txt", Content: []byte("from the first up")},
	})
	if err != nil {
		t.Fatal(err)
	}
	vol, err = nodefiles.Deliver(ctx, c, cluster, img, []nodefiles.File{
		{Name: "apiserver/authn.yaml", Mode: 0o644, Content: []byte("kind: AuthenticationConfiguration\n")},
		{Name: "cri-shim/bin/kindlab", Mode: 0o755, Source: bin},
		{Name: "cri-shim/unit.service", Content: []byte("[Unit]\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if vol.Name != nodefiles.VolumeName(cluster) || !strings.HasPrefix(vol.Mountpoint, "/") {
		t.Fatalf("volume %+v", vol)
	}
	got := runIn(t, c, img,
		[]string{vol.Mountpoint + "/apiserver:/etc/kubernetes/kindlab:ro", vol.Mountpoint + "/cri-shim/bin:/opt/kindlab/bin:ro",
			vol.Mountpoint + "/cri-shim/unit.service:/etc/systemd/system/x.service:ro", vol.Mountpoint + ":/all:ro"},
		"cat /etc/kubernetes/kindlab/authn.yaml /etc/systemd/system/x.service /opt/kindlab/bin/kindlab; ls -l /opt/kindlab/bin/kindlab; ls /all")
	for _, want := range []string{"kind: AuthenticationConfiguration", "[Unit]", "echo shim", "-rwxr-xr-x", "apiserver\ncri-shim\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("a container mounting the volume's paths sees %q, want %q in it", got, want)
		}
	}
	if strings.Contains(got, "stale.txt") {
		t.Errorf("the second delivery kept the first's files: %q", got)
	}
	vols, err := c.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "io.x-k8s.kind.cluster="+cluster))})
	if err != nil || len(vols.Volumes) != 1 {
		t.Errorf("volumes with kind's cluster label: %v %v, want the one", vols.Volumes, err)
	}
	fillers, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("volume", vol.Name))})
	if err != nil || len(fillers) != 0 {
		t.Errorf("containers left using the volume: %d %v", len(fillers), err)
	}

	removed, err := nodefiles.Remove(ctx, c, cluster)
	if err != nil || len(removed) != 1 || removed[0] != vol.Name {
		t.Fatalf("Remove: %v %v", removed, err)
	}
	if _, err := c.VolumeInspect(ctx, vol.Name); err == nil {
		t.Error("volume still there after Remove")
	}
	if removed, err := nodefiles.Remove(ctx, c, cluster); err != nil || len(removed) != 0 {
		t.Errorf("second Remove: %v %v, want nothing and no error", removed, err)
	}
}

// A name escaping the volume is refused, and nothing is left behind.
func TestDeliverRefusesEscapingName(t *testing.T) {
	c := registrytest.Docker(t)
	img := registrytest.BusyboxImage(t, c)
	ctx := context.Background()
	cluster := fmt.Sprintf("kindlab-test-nfx-%d", time.Now().UnixNano()%1e6)
	t.Cleanup(func() { _, _ = nodefiles.Remove(context.Background(), c, cluster) })
	for _, name := range []string{"../etc/passwd", "/etc/passwd", "a/../../b"} {
		_, err := nodefiles.Deliver(ctx, c, cluster, img, []nodefiles.File{{Name: name, Content: []byte("x")}})
		if err == nil || !strings.Contains(err.Error(), "not a relative path inside the volume") {
			t.Errorf("%s: %v, want a refusal", name, err)
		}
	}
	fillers, _ := c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("volume", nodefiles.VolumeName(cluster)))})
	if len(fillers) != 0 {
		t.Errorf("%d filler container(s) left", len(fillers))
	}
}

// runIn runs sh -c script in a throw-away container with the binds and
// returns its output.
func runIn(t *testing.T, c *client.Client, img string, binds []string, script string) string {
	t.Helper()
	ctx := context.Background()
	resp, err := c.ContainerCreate(ctx, &container.Config{Image: img, Entrypoint: []string{"sh", "-c", script}},
		&container.HostConfig{Binds: binds}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.ContainerRemove(ctx, resp.ID, container.RemoveOptions{Force: true})
	if err := c.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	wait, errc := c.ContainerWait(ctx, resp.ID, container.WaitConditionNotRunning)
	select {
	case <-wait:
	case err := <-errc:
		t.Fatal(err)
	}
	logs, err := c.ContainerLogs(ctx, resp.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, logs); err != nil {
		t.Fatal(err)
	}
	return out.String()
}
