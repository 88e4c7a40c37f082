package registry_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
	"github.com/kindlab/kindlab/provision/testenv"
)

// TestPublishHosting writes the KEP-1755 ConfigMap into a real
// kube-apiserver, twice (create, then converge on a port change).
func TestPublishHosting(t *testing.T) {
	env := testenv.StartT(t, testenv.Options{})
	ctx := context.Background()
	for _, port := range []int{5001, 5001, 5002} {
		if err := registry.PublishHosting(ctx, env.Client, port); err != nil {
			t.Fatal(err)
		}
		cm, err := env.Client.CoreV1().ConfigMaps("kube-public").Get(ctx, "local-registry-hosting", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Host                     string `json:"host"`
			HostFromContainerRuntime string `json:"hostFromContainerRuntime"`
			HostFromClusterNetwork   string `json:"hostFromClusterNetwork"`
			Help                     string `json:"help"`
		}
		if err := yaml.UnmarshalStrict([]byte(cm.Data["localRegistryHosting.v1"]), &doc); err != nil {
			t.Fatalf("localRegistryHosting.v1 %q: %v", cm.Data["localRegistryHosting.v1"], err)
		}
		want := "localhost:" + map[int]string{5001: "5001", 5002: "5002"}[port]
		if doc.Host != want || doc.HostFromContainerRuntime != "kind-registry:5000" || doc.HostFromClusterNetwork != "kind-registry:5000" || doc.Help == "" {
			t.Errorf("port %d: %+v", port, doc)
		}
	}
}

// TestUp runs the registry's part of `kindlab up` the way the pipeline
// does after kind made its network and nodes: registry, wiring, ConfigMap.
func TestUp(t *testing.T) {
	env := testenv.StartT(t, testenv.Options{})
	c := registrytest.Docker(t)
	o := testOptions(t, c)
	ctx := context.Background()
	// kind made the network (and its nodes) first.
	if _, err := c.NetworkCreate(ctx, o.Network, network.CreateOptions{Driver: "bridge"}); err != nil {
		t.Fatal(err)
	}
	ns := startNodes(t, c, o, 2)

	st, err := registry.Up(ctx, o, ns, env.Client, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		out, err := exec.Command("docker", "exec", n.String(), "wget", "-q", "-O", "-", "http://"+st.ClusterEndpoint+"/v2/").CombinedOutput()
		if err != nil {
			t.Errorf("node %s cannot reach %s: %v: %s", n, st.ClusterEndpoint, err, out)
		}
		toml, err := exec.Command("docker", "exec", n.String(), "cat", fmt.Sprintf("/etc/containerd/certs.d/localhost:%d/hosts.toml", o.HostPort)).CombinedOutput()
		if err != nil || string(toml) != registry.HostsTOML(st.ClusterEndpoint) {
			t.Errorf("node %s hosts.toml %q (%v)", n, toml, err)
		}
	}
	cm, err := env.Client.CoreV1().ConfigMaps("kube-public").Get(ctx, "local-registry-hosting", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cm.Data["localRegistryHosting.v1"], fmt.Sprintf("host: \"localhost:%d\"", o.HostPort)) {
		t.Errorf("ConfigMap %v", cm.Data)
	}
	nets, err := c.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, n := range nets {
		if n.Name == o.Network {
			count++
		}
	}
	if count != 1 {
		t.Errorf("%d networks named %s after Up, want kind's one reused", count, o.Network)
	}
}
