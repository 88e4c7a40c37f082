// Command kindprobe prints the kubeadm config kind would write on a
// cluster's first control-plane node (/kind/kubeadm.conf), for a kind config
// file, or kind's own refusal of that file, without creating any node.
//
// kind keeps config loading and kubeadm config generation in internal
// packages, so this main cannot be built from kindlab's module: the
// cross-check (provision/lab TestComponentRulesAgainstBinaries) copies the
// kind module kindlab's go.mod pins to a scratch directory, puts this file at
// pkg/cluster/kindprobe/main.go inside the copy and builds it there. What
// it calls is kind's code; the glue below follows
// pkg/cluster/internal/create/create.go (Load, SetDefaults, Validate) and
// pkg/cluster/internal/create/actions/config/config.go (ConfigData,
// kubeadm.Config, the kubeadmConfigPatches, removeMetadata). The values kind
// reads from a running node are fixed: Kubernetes v1.31.14, the docker
// provider, the node at 172.18.0.2.
//
// Usage: kindprobe KIND-CONFIG-FILE > kubeadm.conf (exit 1 with kind's error).
package main

import (
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/kind/pkg/cluster/constants"
	"sigs.k8s.io/kind/pkg/cluster/internal/kubeadm"
	"sigs.k8s.io/kind/pkg/cluster/internal/providers/common"
	"sigs.k8s.io/kind/pkg/internal/apis/config"
	"sigs.k8s.io/kind/pkg/internal/apis/config/encoding"
	"sigs.k8s.io/kind/pkg/internal/patch"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kindprobe KIND-CONFIG-FILE")
		os.Exit(2)
	}
	out, err := probe(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Print(out)
}

func probe(file string) (string, error) {
	cfg, err := encoding.Load(file)
	if err != nil {
		return "", err
	}
	config.SetDefaultsCluster(cfg)
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	var node *config.Node
	for i := range cfg.Nodes {
		if cfg.Nodes[i].Role == config.ControlPlaneRole {
			node = &cfg.Nodes[i]
			break
		}
	}
	if node == nil {
		return "", fmt.Errorf("no control-plane node")
	}
	data := kubeadm.ConfigData{
		NodeProvider:         "docker",
		ClusterName:          cfg.Name,
		ControlPlaneEndpoint: cfg.Name + "-control-plane:" + fmt.Sprint(common.APIServerInternalPort),
		APIBindPort:          common.APIServerInternalPort,
		APIServerAddress:     cfg.Networking.APIServerAddress,
		Token:                kubeadm.Token,
		PodSubnet:            cfg.Networking.PodSubnet,
		KubeProxyMode:        string(cfg.Networking.KubeProxyMode),
		ServiceSubnet:        cfg.Networking.ServiceSubnet,
		ControlPlane:         string(node.Role) == constants.ControlPlaneNodeRoleValue,
		IPFamily:             cfg.Networking.IPFamily,
		FeatureGates:         cfg.FeatureGates,
		RuntimeConfig:        cfg.RuntimeConfig,
		KubernetesVersion:    "v1.31.14",
		NodeName:             cfg.Name + "-control-plane",
		NodeAddress:          "172.18.0.2",
	}
	var labels []string
	for k, v := range node.Labels {
		labels = append(labels, k+"="+v)
	}
	data.NodeLabels = strings.Join(labels, ",")
	cf, err := kubeadm.Config(data)
	if err != nil {
		return "", err
	}
	patched, err := patch.KubeYAML(cf, cfg.KubeadmConfigPatches, cfg.KubeadmConfigPatchesJSON6902)
	if err != nil {
		return "", err
	}
	if len(node.KubeadmConfigPatches) > 0 || len(node.KubeadmConfigPatchesJSON6902) > 0 {
		if patched, err = patch.KubeYAML(patched, node.KubeadmConfigPatches, node.KubeadmConfigPatchesJSON6902); err != nil {
			return "", err
		}
	}
	return strings.ReplaceAll(patched, "metadata:\n  name: config\n", ""), nil
}
