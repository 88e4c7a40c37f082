package app_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ggcrname "github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/fleet"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/reset"
	"github.com/kindlab/kindlab/provision/state"
)

// oneNodeLab is the test lab with a single node (fixtures/labs), so that
// a fleet of two fits on a CI machine.
const oneNodeLab = "../../../fixtures/labs/one-node.yaml"

// e2eReset breaks the lab running on cluster name the ways attendees do
// (a Deployment deleted, a Service edited, a Deployment scaled, a stray pod
// that joins a Service, a namespace labelled so that no pod may start, an
// artifact's tag overwritten), runs `kindlab reset`, and proves the lab is
// back: the objects as applied, the tag as pushed, the checks as before.
// The lab must have the nftables and kube-proxy-health workloads and an
// artifact (all-features and the one-node test lab do).
func e2eReset(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	labArg := recordedLab(t, name)
	cs := clientFor(t, "", "kind-"+name)

	code, out, errOut := run(t, "check", labArg, "--name", name, "-o", "json")
	var before []checkResult
	if err := json.Unmarshal([]byte(out), &before); err != nil {
		t.Fatalf("check before the reset: exit %d, %q: %v (%s)", code, out, err, errOut)
	}
	code, out, errOut = run(t, "render", labArg, "--name", name, "-o", "json")
	var plan struct{ Artifacts []struct{ Reference string } }
	if err := json.Unmarshal([]byte(out), &plan); err != nil || len(plan.Artifacts) == 0 {
		t.Fatalf("render: exit %d, %v, %s: the lab needs an artifact", code, err, errOut)
	}
	artifactRef := registry.PushReference(plan.Artifacts[0].Reference, registry.DefaultHostPort)

	// Break it.
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("break the lab: %s: %v", what, err)
		}
	}
	must("delete Deployment web", cs.AppsV1().Deployments("kindlab-kube-proxy-health").Delete(ctx, "web", metav1.DeleteOptions{}))
	_, err := cs.CoreV1().Services("kindlab-nftables").Patch(ctx, "echo", types.MergePatchType,
		[]byte(`{"spec":{"ports":[{"port":80,"targetPort":9999}]}}`), metav1.PatchOptions{FieldManager: "kubectl-edit"})
	must("edit Service echo", err)
	scale, err := cs.AppsV1().Deployments("kindlab-nftables").GetScale(ctx, "echo", metav1.GetOptions{})
	must("read scale", err)
	scale.Spec.Replicas = 0
	_, err = cs.AppsV1().Deployments("kindlab-nftables").UpdateScale(ctx, "echo", scale, metav1.UpdateOptions{FieldManager: "kubectl"})
	must("scale Deployment echo", err)
	echo, err := cs.AppsV1().Deployments("kindlab-nftables").Get(ctx, "echo", metav1.GetOptions{})
	must("read Deployment echo", err)
	_, err = cs.CoreV1().Pods("kindlab-nftables").Create(ctx, &corev1.Pod{
		// Matches the Service's selector, but serves nothing.
		ObjectMeta: metav1.ObjectMeta{Name: "stray", Labels: map[string]string{"app.kubernetes.io/name": "echo"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "stray", Image: echo.Spec.Template.Spec.Containers[0].Image,
			Args: []string{"pause"}}}},
	}, metav1.CreateOptions{FieldManager: "kubectl-run"})
	must("add a stray pod", err)
	_, err = cs.CoreV1().Namespaces().Patch(ctx, "kindlab-nftables", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"restricted"}}}`), metav1.PatchOptions{FieldManager: "kubectl-label"})
	must("label the namespace", err)
	wrong, err := random.Image(256, 1)
	must("make an image", err)
	ref, err := ggcrname.ParseReference(artifactRef, ggcrname.Insecure)
	must("parse "+artifactRef, err)
	must("overwrite "+artifactRef, remote.Write(ref, wrong))

	start := time.Now()
	code, out, errOut = run(t, "reset", labArg, "--name", name, "-o", "json")
	wall := time.Since(start)
	var res reset.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("reset: exit %d, %q: %v (%s)", code, out, err, errOut)
	}
	t.Logf("reset of %s took %s (workloads ready in %s, checks %s); %d change(s):",
		name, wall.Round(100*time.Millisecond), res.Restore.Round(100*time.Millisecond), (res.Duration - res.Restore).Round(100*time.Millisecond), len(res.Changes))
	for _, c := range res.Changes {
		t.Logf("  %s %s: %s", c.Action, c.Object, c.Why)
	}
	changed := map[string]string{}
	for _, c := range res.Changes {
		changed[c.Object] = c.Action
	}
	for object, action := range map[string]string{
		"Deployment kindlab-kube-proxy-health/web": "created",
		"Service kindlab-nftables/echo":            "recreated",
		"Deployment kindlab-nftables/echo":         "recreated",
		"Pod kindlab-nftables/stray":               "deleted",
		"Namespace kindlab-nftables":               "restored",
	} {
		if changed[object] != action {
			t.Errorf("reset: %s %q, want %q", object, changed[object], action)
		}
	}

	// The objects are as applied.
	if d, err := cs.AppsV1().Deployments("kindlab-kube-proxy-health").Get(ctx, "web", metav1.GetOptions{}); err != nil || d.Status.AvailableReplicas != 1 {
		t.Errorf("Deployment web not back and available: %v", err)
	}
	if d, err := cs.AppsV1().Deployments("kindlab-nftables").Get(ctx, "echo", metav1.GetOptions{}); err != nil || *d.Spec.Replicas != 2 || d.Status.AvailableReplicas != 2 {
		t.Errorf("Deployment echo not back to 2 available replicas: %v", err)
	}
	if svc, err := cs.CoreV1().Services("kindlab-nftables").Get(ctx, "echo", metav1.GetOptions{}); err != nil || svc.Spec.Ports[0].TargetPort.IntValue() != 8080 {
		t.Errorf("Service echo not as applied: %v", err)
	}
	if _, err := cs.CoreV1().Pods("kindlab-nftables").Get(ctx, "stray", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("stray pod still there: %v", err)
	}
	if ns, err := cs.CoreV1().Namespaces().Get(ctx, "kindlab-nftables", metav1.GetOptions{}); err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "" {
		t.Errorf("namespace labels not restored: %v %v", ns.Labels, err)
	}
	// The tag is the lab's artifact again.
	if len(res.Artifacts) == 0 || !res.Artifacts[0].Restored {
		t.Errorf("reset did not report putting %s back: %+v", artifactRef, res.Artifacts)
	} else if desc, err := remote.Head(ref); err != nil || desc.Digest.String() != res.Artifacts[0].Digest {
		t.Errorf("%s points at %v, want %s (%v)", artifactRef, desc, res.Artifacts[0].Digest, err)
	}
	// The checks say what they said before.
	was := map[string]string{}
	for _, c := range before {
		was[c.Name] = c.Status
	}
	if len(res.Checks) != len(before) {
		t.Errorf("reset ran %d checks, check ran %d", len(res.Checks), len(before))
	}
	for _, c := range res.Checks {
		if string(c.Status) != was[c.Name] {
			t.Errorf("check %s: %s after the reset (%s), %s before", c.Name, c.Status, c.Reason, was[c.Name])
		}
	}
	if wantCode := exitFor(res.Checks); code != wantCode {
		t.Errorf("reset exit %d, want %d: %s", code, wantCode, errOut)
	}
}

func exitFor(results []check.Result) int {
	if check.Failed(results) > 0 {
		return 3
	}
	return 0
}

// recordedLab is how to name the lab a cluster runs on the command line:
// its name when built in, its file otherwise.
func recordedLab(t *testing.T, cluster string) string {
	t.Helper()
	store, err := state.Default()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.Load(cluster)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(rec.LabSource, "builtin:") {
		return rec.Lab
	}
	return rec.LabSource
}

// clientFor is a client for a context of a kubeconfig file ("" = $KUBECONFIG).
func clientFor(t *testing.T, file, context string) kubernetes.Interface {
	t.Helper()
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if file != "" {
		rules = &clientcmd.ClientConfigLoadingRules{ExplicitPath: file}
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		t.Fatalf("kubeconfig %s context %s: %v", file, context, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// A fleet of the one-node lab: bad requests refused before anything
// exists; a cluster that cannot be created named in the error and removed
// while the other stays; the fleet converged to two clusters side by side,
// each reached through its own kubeconfig file; status listing both; down
// --fleet leaving nothing.
func TestEndToEndFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	img := requireE2E(t)
	dir := isolate(t)
	kdir := filepath.Join(dir, "attendees")
	const fleetName = "fleet-e2e"
	members := fleet.Members(fleetName, 2)
	// A registry that ran before holds what others pushed (the offline
	// images): it is not this test's to remove.
	registryBefore := containerExists(registry.ContainerName)
	downArgs := []string{"down", "--fleet", fleetName}
	if registryBefore {
		downArgs = append(downArgs, "--keep-registry")
	}
	decoy := members[1] + "-control-plane"
	t.Cleanup(func() {
		exec.Command("docker", "rm", "-f", decoy).Run()
		run(t, downArgs...)
	})
	nothingLeft := func(when string) {
		t.Helper()
		for _, m := range members {
			if left, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=io.x-k8s.kind.cluster="+m).Output(); strings.TrimSpace(string(left)) != "" {
				t.Errorf("%s: nodes of %s left", when, m)
			}
			if kc, _ := os.ReadFile(filepath.Join(dir, "kubeconfig")); strings.Contains(string(kc), "kind-"+m) {
				t.Errorf("%s: context kind-%s left in the default kubeconfig", when, m)
			}
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "state", "clusters")); len(entries) != 0 {
			t.Errorf("%s: state left: %v", when, entries)
		}
		if entries, _ := os.ReadDir(kdir); len(entries) != 0 {
			t.Errorf("%s: kubeconfig files left: %v", when, entries)
		}
	}

	file := filepath.Join(dir, "a-file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--count", "0"}, "--count: 0 is not a number of clusters (valid: 1 or more)"},
		{[]string{"--count", "-2"}, "--count: -2"},
		{[]string{"--count", "1000", "--kubeconfig-dir", kdir}, "(valid: --count "},
		{[]string{"--count", "2", "--kubeconfig-dir", filepath.Join(file, "sub")}, "--kubeconfig-dir: " + filepath.Join(file, "sub") + " is not a directory"},
		{[]string{"--count", "2", "--kubeconfig", filepath.Join(dir, "k")}, "--kubeconfig: not with --count"},
		{[]string{"--kubeconfig-dir", kdir}, "--kubeconfig-dir: only with --count"},
	} {
		args := append([]string{"up", oneNodeLab, "--name", fleetName, "--image", img}, tc.args...)
		code, _, errOut := run(t, args...)
		if code != 2 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 and one line with %q", tc.args, code, errOut, tc.want)
		}
	}
	nothingLeft("after refused requests")
	// Not even lock files: --count 1000 is refused before any is taken
	// (only the --count 2 requests may have locked members 1 and 2).
	if locks, _ := filepath.Glob(filepath.Join(dir, "state", "locks", fleetName+"-*.lock")); len(locks) > 2 {
		t.Errorf("refused requests left %d lock files, e.g. %s", len(locks), locks[len(locks)-1])
	}
	if _, err := os.Stat(kdir); err == nil {
		t.Error("a refused fleet created its kubeconfig directory")
	}

	// The second cluster cannot be created: a container already has its
	// node's name. The first comes up and stays; the second is reported,
	// with kind's reason, and removed.
	if out, err := exec.Command("docker", "create", "--name", decoy, img).CombinedOutput(); err != nil {
		t.Fatalf("decoy container: %v: %s", err, out)
	}
	start := time.Now()
	code, out, errOut := run(t, "up", oneNodeLab, "--name", fleetName, "--image", img, "--count", "2", "--kubeconfig-dir", kdir, "-o", "json")
	t.Logf("fleet with one failing cluster: %s, exit %d\n%s", time.Since(start).Round(time.Second), code, errOut)
	var res fleet.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("up --count: exit %d, %q: %v", code, out, err)
	}
	last := strings.TrimSpace(errOut[strings.LastIndex(strings.TrimSpace(errOut), "\n")+1:])
	if code != 1 || !strings.HasPrefix(last, "ERROR: fleet "+fleetName+": 1 of 2") || !strings.Contains(last, members[1]+": ") {
		t.Errorf("exit %d, last line %q: want exit 1 naming %s", code, last, members[1])
	}
	if len(res.Clusters) != 2 || res.Clusters[0].Result != fleet.ResultUp || res.Clusters[1].Result != fleet.ResultFailed ||
		!res.Clusters[1].CleanedUp || !strings.Contains(res.Clusters[1].Error, "already in use") {
		t.Errorf("fleet result %+v", res.Clusters)
	}
	if _, err := os.Stat(filepath.Join(kdir, members[1]+".kubeconfig")); err == nil {
		t.Errorf("the failed cluster's kubeconfig file is left")
	}
	exec.Command("docker", "rm", "-f", decoy).Run()

	// Asking again converges: the first is reused, the second created.
	start = time.Now()
	code, out, errOut = run(t, "up", oneNodeLab, "--name", fleetName, "--image", img, "--count", "2", "--kubeconfig-dir", kdir, "-o", "json")
	t.Logf("fleet converged in %s, exit %d", time.Since(start).Round(time.Second), code)
	res = fleet.Result{}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 {
		t.Fatalf("up --count again: exit %d, %q: %v\n%s", code, out, err, errOut)
	}
	servers := map[string]bool{}
	for i, m := range res.Clusters {
		wantFile := filepath.Join(kdir, members[i]+".kubeconfig")
		if m.Cluster != members[i] || m.Kubeconfig != wantFile || m.Result != fleet.ResultUp || m.Created != (i == 1) {
			t.Errorf("cluster %d: %+v", i, m)
		}
		servers[m.Server] = true
		for _, c := range m.Checks {
			if c.Status != check.Pass {
				t.Errorf("%s: check %s %s: %s", m.Cluster, c.Name, c.Status, c.Reason)
			}
		}
		// Each file reaches its own cluster, and only it.
		cs := clientFor(t, wantFile, "kind-"+m.Cluster)
		nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
		if err != nil || len(nodes.Items) != 1 || nodes.Items[0].Name != m.Cluster+"-control-plane" {
			t.Errorf("%s through %s: %v %v", m.Cluster, wantFile, nodes, err)
		}
		if d, err := cs.AppsV1().Deployments("kindlab-nftables").Get(context.Background(), "echo", metav1.GetOptions{}); err != nil || d.Status.AvailableReplicas != 2 {
			t.Errorf("%s: Deployment echo not available: %v", m.Cluster, err)
		}
	}
	if len(servers) != 2 {
		t.Errorf("the clusters do not have distinct API servers: %v", servers)
	}

	// Asked once more with no overrides given (the offline agnhost came
	// from $KINDLAB_IMAGE_OVERRIDES), each cluster keeps those it came up
	// with, as a single up's converge does: re-rendered with the lab's own
	// upstream image, its echo Deployment would roll to an image this
	// offline machine cannot pull.
	if ov := os.Getenv("KINDLAB_IMAGE_OVERRIDES"); ov != "" {
		t.Setenv("KINDLAB_IMAGE_OVERRIDES", "")
		code, out, errOut = run(t, "up", oneNodeLab, "--name", fleetName, "--image", img, "--count", "2", "--kubeconfig-dir", kdir, "-o", "json")
		res = fleet.Result{}
		if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 {
			t.Errorf("up --count without overrides: exit %d, %q: %v\n%s", code, out, err, errOut)
		}
		for _, m := range members {
			if !strings.Contains(errOut, "Keeping the image overrides cluster "+m+" came up with (--image-override replaces them): "+ov) {
				t.Errorf("up --count without overrides did not keep %s's:\n%s", m, errOut)
			}
		}
		t.Setenv("KINDLAB_IMAGE_OVERRIDES", ov)
	}

	// A fleet of another lab under the same name is refused, nothing made.
	code, _, errOut = run(t, "up", "nftables", "--name", fleetName, "--image", img, "--count", "2")
	if code != 2 || !strings.Contains(errOut, "already runs lab one-node") {
		t.Errorf("another lab under the fleet's names: exit %d, %s", code, errOut)
	}

	code, out, _ = run(t, "status", "-o", "json")
	var rows []struct{ Cluster, Lab, Fleet, State, Kubeconfig string }
	if err := json.Unmarshal([]byte(out), &rows); err != nil || code != 0 {
		t.Fatalf("status: exit %d, %q: %v", code, out, err)
	}
	if len(rows) != 2 {
		t.Errorf("status lists %d clusters, want the fleet's 2: %+v", len(rows), rows)
	}
	for i, r := range rows {
		if r.Cluster != members[i] || r.Fleet != fleetName || r.State != "running" || r.Kubeconfig != filepath.Join(kdir, members[i]+".kubeconfig") {
			t.Errorf("status row %+v", r)
		}
	}

	start = time.Now()
	code, _, errOut = run(t, downArgs...)
	t.Logf("down --fleet took %s", time.Since(start).Round(100*time.Millisecond))
	if code != 0 {
		t.Fatalf("down --fleet: exit %d: %s", code, errOut)
	}
	nothingLeft("after down --fleet")
	if after := containerExists(registry.ContainerName); after != registryBefore {
		t.Errorf("registry there before: %t, after down: %t", registryBefore, after)
	}
}

func containerExists(name string) bool {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "name=^"+name+"$").Output()
	return strings.TrimSpace(string(out)) != ""
}
