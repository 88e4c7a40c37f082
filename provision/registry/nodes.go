package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/exec"
)

// CertsDir is where containerd looks for per-registry hosts.toml files:
// containerd 2.x (kind node images since v0.27.0) by default, its CRI
// config_path being /etc/containerd/certs.d:/etc/docker/certs.d unless set
// (kind v0.31.0's config.toml does not set it); containerd 1.x only with
// config_path set (doctor's registry-wiring finding).
const CertsDir = "/etc/containerd/certs.d"

// HostingConfigMap is KEP-1755's ConfigMap, in kube-public.
const (
	HostingConfigMap = "local-registry-hosting"
	HostingNamespace = "kube-public"
	HostingKey       = "localRegistryHosting.v1"
	HelpURL          = "https://kind.sigs.k8s.io/docs/user/local-registry/"
)

// HostsTOML is the containerd hosts.toml that sends pulls for a registry
// host to endpoint (host:port on the kind network) over plain HTTP.
func HostsTOML(endpoint string) string {
	return fmt.Sprintf("[host.%q]\n", "http://"+endpoint)
}

// RegistryHosts are the registry hosts nodes resolve to the shared
// registry: localhost:<hostPort>, and localhost:5001 too when the port was
// moved, so images named as lab files name them (localhost:5001/...) still
// pull. Inside a node localhost:5001 is nothing else.
func RegistryHosts(hostPort int) []string {
	hosts := []string{fmt.Sprintf("localhost:%d", hostPort)}
	if hostPort != DefaultHostPort && hostPort != 0 {
		hosts = append(hosts, fmt.Sprintf("localhost:%d", DefaultHostPort))
	}
	return hosts
}

// WireNodes writes, on every node, containerd's hosts.toml for each of
// RegistryHosts(hostPort), pointing at kind-registry:5000. containerd reads
// these files at each pull, so no restart is needed.
func WireNodes(ctx context.Context, ns []nodes.Node, hostPort int) error {
	return WireNodesTo(ctx, ns, RegistryHosts(hostPort), fmt.Sprintf("%s:%d", ContainerName, ContainerPort))
}

// WireNodesTo is WireNodes for any registry hosts and endpoint.
func WireNodesTo(ctx context.Context, ns []nodes.Node, hosts []string, endpoint string) error {
	files := map[string]string{}
	content := HostsTOML(endpoint)
	for _, h := range hosts {
		files[h] = content
	}
	return writeHosts(ctx, ns, files)
}

// writeHosts writes, on every node at once, CertsDir/<host>/hosts.toml for
// each host → content of files. Each node gets one exec (a node exec is a
// docker CLI process and a round trip, about 0.2 s, and a lab writes a
// dozen files on each node): the files arrive as a tar stream on stdin,
// never in a command line, are unpacked into a directory beside their
// targets and each renamed into place, so containerd, which reads a
// hosts.toml at every pull, sees the old file or the new one. It needs
// only sh, mktemp, tar and mv, which every kind node has.
func writeHosts(ctx context.Context, ns []nodes.Node, files map[string]string) error {
	if len(files) == 0 {
		return nil
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hosts := make([]string, 0, len(files))
	for h := range files {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		// A host name is a registry host[:port] from a parsed reference: no
		// slash, nothing a tar path could climb out with.
		if h == "" || strings.ContainsAny(h, "/\\\x00") || h == "." || h == ".." || strings.HasPrefix(h, ".") {
			return fmt.Errorf("wire nodes: %q is not a registry host", h)
		}
		for _, hdr := range []*tar.Header{
			{Typeflag: tar.TypeDir, Name: h + "/", Mode: 0o755},
			{Typeflag: tar.TypeReg, Name: h + "/hosts.toml", Mode: 0o644, Size: int64(len(files[h]))},
		} {
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("wire nodes: %w", err)
			}
		}
		if _, err := tw.Write([]byte(files[h])); err != nil {
			return fmt.Errorf("wire nodes: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("wire nodes: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range ns {
		g.Go(func() error {
			var stderr bytes.Buffer
			args := append([]string{"-c", wireScript, "sh", CertsDir}, hosts...)
			err := n.CommandContext(gctx, "sh", args...).
				SetStdin(bytes.NewReader(buf.Bytes())).
				SetStderr(&stderr).
				Run()
			if err != nil {
				msg := strings.TrimSpace(stderr.String())
				if rerr := exec.RunErrorForError(err); rerr != nil && msg == "" {
					msg = strings.TrimSpace(string(rerr.Output))
				}
				if msg != "" {
					return fmt.Errorf("wire node %s to %s: %w: %s", n, strings.Join(hosts, ", "), err, msg)
				}
				return fmt.Errorf("wire node %s to %s: %w", n, strings.Join(hosts, ", "), err)
			}
			return nil
		})
	}
	return g.Wait()
}

// wireScript unpacks writeHosts's tar into a new directory in $1
// (CertsDir: the same filesystem, so mv is a rename) and moves each host's
// hosts.toml ($2...) into $1/<host>/.
const wireScript = `set -e
d=$1; shift
mkdir -p "$d"
t=$(mktemp -d "$d/.kindlab-wire.XXXXXX")
trap 'rm -rf "$t"' EXIT
tar -x -o -C "$t" -f -
for h in "$@"; do
	mkdir -p "$d/$h"
	mv -f "$t/$h/hosts.toml" "$d/$h/hosts.toml"
done
`

// HostingYAML is the KEP-1755 LocalRegistryHostingV1 document.
func HostingYAML(hostPort int) string {
	endpoint := fmt.Sprintf("%s:%d", ContainerName, ContainerPort)
	return fmt.Sprintf("host: \"localhost:%d\"\nhostFromContainerRuntime: %q\nhostFromClusterNetwork: %q\nhelp: %q\n",
		hostPort, endpoint, endpoint, HelpURL)
}

// PublishHosting creates or updates the local-registry-hosting ConfigMap in
// kube-public, so tools that read KEP-1755 (Tilt, Skaffold, ctlptl) find
// the registry.
func PublishHosting(ctx context.Context, cs kubernetes.Interface, hostPort int) error {
	want := map[string]string{HostingKey: HostingYAML(hostPort)}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cms := cs.CoreV1().ConfigMaps(HostingNamespace)
		cm, err := cms.Get(ctx, HostingConfigMap, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: HostingConfigMap, Namespace: HostingNamespace,
					Labels: map[string]string{"app.kubernetes.io/managed-by": "kindlab"}},
				Data: want,
			}, metav1.CreateOptions{FieldManager: "kindlab"})
			return err
		}
		if err != nil {
			return err
		}
		if cm.Data[HostingKey] == want[HostingKey] {
			return nil
		}
		cm = cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[HostingKey] = want[HostingKey]
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: "kindlab"})
		return err
	})
	if err != nil {
		return fmt.Errorf("publish ConfigMap %s/%s: %w", HostingNamespace, HostingConfigMap, err)
	}
	return nil
}

// PushReference is where to push an artifact a lab names: the lab's
// localhost:5001 becomes localhost:<hostPort> when the registry was moved
// with --registry-port (nodes map both to the registry, see RegistryHosts).
func PushReference(ref string, hostPort int) string {
	prefix := fmt.Sprintf("localhost:%d/", DefaultHostPort)
	if hostPort == 0 || hostPort == DefaultHostPort || !strings.HasPrefix(ref, prefix) {
		return ref
	}
	return fmt.Sprintf("localhost:%d/%s", hostPort, strings.TrimPrefix(ref, prefix))
}

// Up is the registry's part of `kindlab up` for a lab with a registry, in
// order: Ensure (start or reuse), wire every node to it (its own hosts and,
// as a mirror, each upstream in mirrors, with the pull-through caches that
// run), publish the KEP-1755 ConfigMap. cs may be nil to skip the ConfigMap.
func Up(ctx context.Context, opts Options, ns []nodes.Node, cs kubernetes.Interface, mirrors []string) (*Status, error) {
	st, err := Ensure(ctx, opts)
	if err != nil {
		return nil, err
	}
	files, err := mirrorFiles(ctx, opts, mirrors, st.ClusterEndpoint)
	if err != nil {
		return nil, err
	}
	content := HostsTOML(st.ClusterEndpoint)
	for _, h := range RegistryHosts(st.HostPort) {
		files[h] = content
	}
	if err := writeHosts(ctx, ns, files); err != nil {
		return nil, err
	}
	if cs != nil {
		if err := PublishHosting(ctx, cs, st.HostPort); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// mirrorFiles are the hosts.toml of each upstream registry, by host: the
// local registry's mirror path, then the upstream's pull-through cache if
// one runs, then the upstream.
func mirrorFiles(ctx context.Context, opts Options, upstreams []string, endpoint string) (map[string]string, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	proxies, err := Proxies(ctx, o)
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	for _, up := range upstreams {
		var via []string
		if p, ok := proxies[up]; ok {
			via = append(via, p)
		}
		files[up] = MirrorHostsTOML(up, endpoint, via)
	}
	return files, nil
}
