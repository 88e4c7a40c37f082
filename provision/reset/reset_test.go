package reset_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/reset"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
	"github.com/kindlab/kindlab/provision/testenv"
	"github.com/kindlab/kindlab/provision/workload"
)

const ns = "kindlab-reset-test"

// The lab's workload: what reset must put back. The Deployment has no
// replicas because the test control plane has no nodes: its readiness is
// the controller's, and a scaled-up copy leaves pods that never run.
var manifests = map[string]string{
	"namespace.yaml": `apiVersion: v1
kind: Namespace
metadata:
  name: ` + ns + `
  labels:
    kindlab.dev/lab: reset-test
`,
	"config.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: ` + ns + `
data:
  greeting: hello
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: demo
  namespace: ` + ns + `
`,
	"web.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ` + ns + `
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: "@image/agnhost"
        args: ["netexec"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: ` + ns + `
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
`,
	"volume.yaml": `apiVersion: v1
kind: PersistentVolume
metadata:
  name: kindlab-reset-test
spec:
  storageClassName: kindlab-manual
  capacity: {storage: 1Mi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: /tmp/kindlab-reset-test}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: ` + ns + `
spec:
  storageClassName: kindlab-manual
  volumeName: kindlab-reset-test
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Mi}
`,
}

func testLab(t *testing.T) *lab.Resolved {
	t.Helper()
	files := map[string]string{"reset-test.yaml": `apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: reset-test
spec:
  nodeImage: kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b
  nodes: [{role: control-plane}]
  images:
  - name: agnhost
    reference: registry.k8s.io/e2e-test-images/agnhost:2.52@sha256:b173c7d0ffe3d805d49f4dfe48375169b7b8d2e1feb81783efd61eb9d08042e6
  workloads:
  - name: reset-test
    path: manifests
`}
	for name, content := range manifests {
		files["manifests/"+name] = content
	}
	return testenv.Lab(t, "reset-test", files, lab.ResolveOptions{})
}

// An attendee's changes, made the way kubectl makes them (its field
// managers), on a real apiserver and controller manager: reset must find
// each, put the lab back, and find nothing the second time.
func TestResetRestoresTheLab(t *testing.T) {
	env := testenv.StartT(t, testenv.Options{ControllerManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := testLab(t)
	if err := workload.ApplyLab(ctx, env.Config, r, workload.Options{Timeout: time.Minute}); err != nil {
		t.Fatalf("apply the lab as up does: %v", err)
	}
	plan, err := render.Render(r, render.Options{Name: "test", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	l := running.FromPlan(plan, cluster.APIServerOnly("test", env.Config), state.Store{}, nil)
	opts := reset.Options{SkipChecks: true, Timeout: time.Minute, Status: logWriter{t}}

	// A lab as up left it needs nothing.
	res, err := reset.Run(ctx, l, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 0 {
		t.Fatalf("a fresh lab was changed by reset: %+v", res.Changes)
	}

	cs := env.Client
	pvBefore := getPV(ctx, t, cs)
	svcBefore, err := cs.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	breakLab(ctx, t, cs)

	start := time.Now()
	res, err = reset.Run(ctx, l, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reset took %s (restore %s)", time.Since(start).Round(time.Millisecond), res.Restore.Round(time.Millisecond))
	got := map[string]string{}
	for _, c := range res.Changes {
		t.Logf("%s %s: %s", c.Action, c.Object, c.Why)
		got[c.Object] = c.Action
	}
	for object, action := range map[string]string{
		"ConfigMap " + ns + "/settings":         "created",   // deleted
		"Service " + ns + "/web":                "recreated", // port edited
		"Deployment " + ns + "/web":             "recreated", // scaled
		"Pod " + ns + "/stray":                  "deleted",   // added
		"Secret " + ns + "/stray":               "deleted",   // added
		"Namespace " + ns:                       "restored",  // labelled
		"PersistentVolumeClaim " + ns + "/data": "created",   // deleted
		"PersistentVolume kindlab-reset-test":   "recreated", // released by its claim
		"ServiceAccount " + ns + "/demo":        "recreated", // edited, outside field tracking
		"ServiceAccount " + ns + "/default":     "",          // the control plane's
		"ConfigMap " + ns + "/kube-root-ca.crt": "",
	} {
		if got[object] != action {
			t.Errorf("%s: %q, want %q", object, got[object], action)
		}
	}

	// The lab is as applied: no trace of the edits, the claim bound again.
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "settings", metav1.GetOptions{})
	if err != nil || cm.Data["greeting"] != "hello" {
		t.Errorf("ConfigMap settings: %v %v", cm.Data, err)
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil || svc.Spec.Ports[0].TargetPort.IntValue() != 8080 || svc.UID == svcBefore.UID {
		t.Errorf("Service web not recreated as applied: %+v %v", svc.Spec.Ports, err)
	}
	dep, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil || dep.Spec.Replicas == nil || *dep.Spec.Replicas != 0 {
		t.Errorf("Deployment web not back to 0 replicas: %v", err)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(pods.Items) != 0 {
		t.Errorf("pods left in the lab's namespace: %d %v", len(pods.Items), err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Get(ctx, "stray", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("stray Secret: %v", err)
	}
	if sa, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "demo", metav1.GetOptions{}); err != nil || sa.AutomountServiceAccountToken != nil {
		t.Errorf("ServiceAccount demo not as applied: %v", err)
	}
	n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil || n.Labels["team"] != "" || n.Labels["kindlab.dev/lab"] != "reset-test" {
		t.Errorf("namespace labels %v %v", n.Labels, err)
	}
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
	if err != nil || pvc.Status.Phase != corev1.ClaimBound {
		t.Errorf("claim data: %v %v", pvc.Status.Phase, err)
	}
	if pv := getPV(ctx, t, cs); pv.UID == pvBefore.UID {
		t.Error("the released volume was kept: its new claim cannot bind it")
	}

	// And once put back, there is nothing more to do.
	res, err = reset.Run(ctx, l, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 0 {
		t.Errorf("a second reset changed %+v", res.Changes)
	}

	// --full recreates what is the lab's, changed or not, and keeps what
	// the control plane keeps.
	res, err = reset.Run(ctx, l, reset.Options{SkipChecks: true, Timeout: time.Minute, Full: true})
	if err != nil {
		t.Fatal(err)
	}
	var objects []string
	for _, c := range res.Changes {
		objects = append(objects, c.Object)
	}
	for _, want := range []string{"ConfigMap " + ns + "/settings", "ServiceAccount " + ns + "/demo", "Deployment " + ns + "/web"} {
		if !slices.Contains(objects, want) {
			t.Errorf("--full did not recreate %s: %v", want, objects)
		}
	}
	if slices.Contains(objects, "ServiceAccount "+ns+"/default") {
		t.Errorf("--full deleted the namespace's default ServiceAccount")
	}
}

func getPV(ctx context.Context, t *testing.T, cs kubernetes.Interface) *corev1.PersistentVolume {
	t.Helper()
	pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, "kindlab-reset-test", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pv
}

// breakLab does what attendees do, each change under the field manager
// kubectl would use for it.
func breakLab(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("delete configmap", cs.CoreV1().ConfigMaps(ns).Delete(ctx, "settings", metav1.DeleteOptions{}))
	_, err := cs.CoreV1().Services(ns).Patch(ctx, "web", types.MergePatchType,
		[]byte(`{"spec":{"ports":[{"port":80,"targetPort":9999}]}}`), metav1.PatchOptions{FieldManager: "kubectl-patch"})
	must("edit service", err)
	scale, err := cs.AppsV1().Deployments(ns).GetScale(ctx, "web", metav1.GetOptions{})
	must("get scale", err)
	scale.Spec.Replicas = 2
	_, err = cs.AppsV1().Deployments(ns).UpdateScale(ctx, "web", scale, metav1.UpdateOptions{FieldManager: "kubectl"})
	must("scale", err)
	_, err = cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "stray"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}, metav1.CreateOptions{FieldManager: "kubectl-run"})
	must("stray pod", err)
	_, err = cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "stray"}, StringData: map[string]string{"k": "v"}},
		metav1.CreateOptions{FieldManager: "kubectl-create"})
	must("stray secret", err)
	// The namespace and the ServiceAccount were applied with nothing but
	// their names: the apiserver tracks no manager of later changes.
	_, err = cs.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"red"}}}`),
		metav1.PatchOptions{FieldManager: "kubectl-label"})
	must("label namespace", err)
	_, err = cs.CoreV1().ServiceAccounts(ns).Patch(ctx, "demo", types.MergePatchType, []byte(`{"automountServiceAccountToken":false}`),
		metav1.PatchOptions{FieldManager: "kubectl-patch"})
	must("edit service account", err)
	must("delete claim", cs.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "data", metav1.DeleteOptions{}))
	// The scaled Deployment's pods exist (unscheduled: no nodes) and the
	// volume is released before reset looks.
	deadline := time.Now().Add(time.Minute)
	for {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		must("list pods", err)
		pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, "kindlab-reset-test", metav1.GetOptions{})
		must("get volume", err)
		if len(pods.Items) == 2 && pv.Status.Phase == corev1.VolumeReleased {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the changes: %d web pods, volume %s", len(pods.Items), pv.Status.Phase)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logWriter shows reset's step lines (with their times) in the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
