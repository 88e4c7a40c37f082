package workload

import (
	"bytes"
	"strings"
	"testing"
	"testing/fstest"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kindlab/kindlab/provision/lab"
)

func TestLoadOrdersAndSkipsEmptyDocuments(t *testing.T) {
	fsys := fstest.MapFS{
		"m/a.yaml": {Data: []byte("apiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: ns1}\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns1}\n")},
		"m/b.yml":  {Data: []byte("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: claim, namespace: ns1}\n")},
		"m/README": {Data: []byte("not a manifest")},
	}
	objs, err := Load(lab.ResolvedWorkload{Workload: lab.Workload{Name: "w"}, Dir: lab.File{FS: fsys, Path: "m", Display: "m"}})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
	}
	if got := strings.Join(kinds, ","); got != "Namespace,PersistentVolumeClaim,Service" {
		t.Errorf("order %s", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	for in, want := range map[string]string{
		"kind: Pod\nmetadata: {name: p}\n":                "document 1: apiVersion, kind and metadata.name are required",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: [\n": "document 1",
	} {
		if _, err := Decode([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%q) = %v, want %q", in, err, want)
		}
	}
	if _, err := Load(lab.ResolvedWorkload{Workload: lab.Workload{Name: "empty"}, Dir: lab.File{FS: fstest.MapFS{"e/x.txt": {}}, Path: "e", Display: "e"}}); err == nil {
		t.Error("a workload without manifests loaded")
	}
}

func TestReady(t *testing.T) {
	obj := func(kind string, generation int64, status map[string]any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"kind": kind, "status": status, "spec": map[string]any{"replicas": int64(2)}}}
		u.SetGeneration(generation)
		return u
	}
	tests := []struct {
		name    string
		u       *unstructured.Unstructured
		ready   bool
		wantErr bool
	}{
		{"pod ready", obj("Pod", 1, map[string]any{"phase": "Running", "conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}), true, false},
		{"pod pending", obj("Pod", 1, map[string]any{"phase": "Pending"}), false, false},
		{"pod failed", obj("Pod", 1, map[string]any{"phase": "Failed", "reason": "AppArmor", "message": "Cannot enforce AppArmor"}), false, true},
		{"deployment available", obj("Deployment", 2, map[string]any{"observedGeneration": int64(2), "updatedReplicas": int64(2), "availableReplicas": int64(2)}), true, false},
		{"deployment old generation", obj("Deployment", 3, map[string]any{"observedGeneration": int64(2), "updatedReplicas": int64(2), "availableReplicas": int64(2)}), false, false},
		{"daemonset ready", obj("DaemonSet", 1, map[string]any{"observedGeneration": int64(1), "desiredNumberScheduled": int64(3), "numberReady": int64(3), "updatedNumberScheduled": int64(3)}), true, false},
		{"daemonset partial", obj("DaemonSet", 1, map[string]any{"observedGeneration": int64(1), "desiredNumberScheduled": int64(3), "numberReady": int64(2), "updatedNumberScheduled": int64(3)}), false, false},
		{"job failed", obj("Job", 1, map[string]any{"conditions": []any{map[string]any{"type": "Failed", "status": "True"}}}), false, true},
		{"claim bound", obj("PersistentVolumeClaim", 1, map[string]any{"phase": "Bound"}), true, false},
		{"configmap", obj("ConfigMap", 1, nil), true, false},
	}
	for _, tt := range tests {
		ready, why, err := Ready(tt.u)
		if ready != tt.ready || (err != nil) != tt.wantErr {
			t.Errorf("%s: ready %v (%s) err %v; want ready %v err %v", tt.name, ready, why, err, tt.ready, tt.wantErr)
		}
	}
}

func TestNeedsWait(t *testing.T) {
	pod := &unstructured.Unstructured{Object: map[string]any{"kind": "Pod"}}
	if !needsWait(pod) {
		t.Error("pods are waited on")
	}
	pod.SetAnnotations(map[string]string{WaitAnnotation: "false"})
	if needsWait(pod) {
		t.Errorf("%s=false is not honoured", WaitAnnotation)
	}
	claim := &unstructured.Unstructured{Object: map[string]any{"kind": "PersistentVolumeClaim", "spec": map[string]any{}}}
	if needsWait(claim) {
		t.Error("a claim that is not pre-bound may wait for its first consumer")
	}
}

func TestResolveImages(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{
		"containers": []any{map[string]any{"name": "a", "image": "@image/agnhost"}, map[string]any{"name": "b", "image": "busybox"}},
		"volumes":    []any{map[string]any{"name": "v", "image": map[string]any{"reference": "localhost:5001/x:v1"}}},
	}}}
	imgs := []lab.Image{{Name: "agnhost", Reference: "registry.k8s.io/e2e-test-images/agnhost:2.52@sha256:b173c7d0ffe3d805d49f4dfe48375169b7b8d2e1feb81783efd61eb9d08042e6"}}
	if err := ResolveImages(u, imgs); err != nil {
		t.Fatal(err)
	}
	cs, _, _ := unstructured.NestedSlice(u.Object, "spec", "containers")
	if got := cs[0].(map[string]any)["image"]; got != imgs[0].Reference {
		t.Errorf("container a image %v", got)
	}
	if got := cs[1].(map[string]any)["image"]; got != "busybox" {
		t.Errorf("a literal image changed: %v", got)
	}
	bad := &unstructured.Unstructured{Object: map[string]any{"image": "@image/nope"}}
	if err := ResolveImages(bad, imgs); err == nil || !strings.Contains(err.Error(), `image "nope" is not in the lab's images (declared: [agnhost])`) {
		t.Errorf("unknown image: %v", err)
	}
}

// A lab's manifests are bounded together, not only each file: five files
// of 4 MiB each in two workloads are refused before any is decoded, naming
// the file that passes the bound; the same files in one workload of a
// smaller lab, and a lab under the bound, pass (hostile review, session 12).
func TestCheckSizeBoundsTheLab(t *testing.T) {
	big := bytes.Repeat([]byte("#"), MaxManifestSize)
	fsys := fstest.MapFS{}
	for _, f := range []string{"a/1.yaml", "a/2.yaml", "a/3.yaml", "b/4.yaml", "b/5.yaml"} {
		fsys[f] = &fstest.MapFile{Data: big}
	}
	w := func(name string) lab.ResolvedWorkload {
		return lab.ResolvedWorkload{Workload: lab.Workload{Name: name}, Dir: lab.File{FS: fsys, Path: name, Display: "labs/" + name}}
	}
	err := CheckSize([]lab.ResolvedWorkload{w("a"), w("b")})
	if err == nil || !strings.Contains(err.Error(), "workload b: labs/b/5.yaml: the lab's manifests pass 16 MiB together") {
		t.Errorf("five 4 MiB files: %v", err)
	}
	if err := CheckSize([]lab.ResolvedWorkload{w("a")}); err != nil {
		t.Errorf("three 4 MiB files: %v", err)
	}
	fsys["a/big.yaml"] = &fstest.MapFile{Data: append(big, '#')}
	if err := CheckSize([]lab.ResolvedWorkload{w("a")}); err == nil || !strings.Contains(err.Error(), "big.yaml: want a regular file of at most 4 MiB") {
		t.Errorf("one file over 4 MiB: %v", err)
	}
}
