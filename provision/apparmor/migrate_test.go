package apparmor

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
)

var update = flag.Bool("update", false, "rewrite the golden *.out.yaml and *.out.json files")

// TestMigrateGolden rewrites each testdata/*.in.{yaml,json} and compares it
// with the *.out.{yaml,json} next to it.
func TestMigrateGolden(t *testing.T) {
	tests := []struct {
		name string
		want int // annotations migrated
	}{
		{"pod.yaml", 2},
		{"workloads.yaml", 6},
		{"nothing.yaml", 0},
		{"already.yaml", 1},
		{"nullsc.yaml", 2},
		{"list.json", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, ext, _ := strings.Cut(tt.name, ".")
			in, err := os.ReadFile(filepath.Join("testdata", base+".in."+ext))
			if err != nil {
				t.Fatal(err)
			}
			got, n, err := Migrate(in)
			if err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			if n != tt.want {
				t.Errorf("migrated %d annotations, want %d", n, tt.want)
			}
			golden := filepath.Join("testdata", base+".out."+ext)
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("output differs from %s:\n--- got\n%s\n--- want\n%s", golden, got, want)
			}
			if n > 0 && strings.Contains(string(got), "container.apparmor.security.beta.kubernetes.io/"+"app") {
				t.Errorf("annotation left in output:\n%s", got)
			}
			// Migrating twice changes nothing more.
			again, n2, err := Migrate(got)
			if err != nil || n2 != 0 || string(again) != string(got) {
				t.Errorf("second Migrate: %d annotations, err %v, changed %v", n2, err, string(again) != string(got))
			}
		})
	}
}

func TestMigrateErrors(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"bad value", `
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations:
    container.apparmor.security.beta.kubernetes.io/app: runtime/strict
spec:
  containers:
  - name: app
`, `document 1 (Pod p): annotation container.apparmor.security.beta.kubernetes.io/app: bad value "runtime/strict" (want runtime/default, localhost/<profile> or unconfined)`},
		{"empty localhost profile", `
kind: Pod
metadata:
  name: p
  annotations:
    container.apparmor.security.beta.kubernetes.io/app: localhost/
spec:
  containers:
  - name: app
`, `localhost/ needs a profile name`},
		{"unknown container", `
kind: Pod
metadata:
  name: p
---
kind: Deployment
metadata:
  name: d
spec:
  template:
    metadata:
      annotations:
        container.apparmor.security.beta.kubernetes.io/ghost: unconfined
    spec:
      containers:
      - name: app
`, `document 2 (Deployment d): annotation container.apparmor.security.beta.kubernetes.io/ghost: the pod has no container named "ghost"`},
		{"conflicting field", `
kind: Pod
metadata:
  name: p
  annotations:
    container.apparmor.security.beta.kubernetes.io/app: unconfined
spec:
  containers:
  - name: app
    securityContext:
      appArmorProfile:
        type: RuntimeDefault
`, `already set and differs`},
		{"not yaml", "kind: [", `document 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Migrate([]byte(tt.in))
			if err == nil {
				t.Fatalf("Migrate accepted it, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseAnnotation(t *testing.T) {
	tests := []struct {
		in   string
		want Profile
	}{
		{"runtime/default", Profile{Type: "RuntimeDefault"}},
		{"unconfined", Profile{Type: "Unconfined"}},
		{"localhost/my-profile", Profile{Type: "Localhost", LocalhostProfile: "my-profile"}},
	}
	for _, tt := range tests {
		got, err := ParseAnnotation(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseAnnotation(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// strictPods decodes manifests as kubectl and the apiserver do: the
// k8s.io/api types through client-go's scheme, strictly (an unknown or
// duplicate field is an error). A List's items are decoded one by one.
func strictPods(t *testing.T, data []byte) []corev1.PodSpec {
	t.Helper()
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var specs []corev1.PodSpec
	var walk func(obj runtime.Object)
	walk = func(obj runtime.Object) {
		switch o := obj.(type) {
		case *corev1.List:
			for _, it := range o.Items {
				item, _, err := dec.Decode(it.Raw, nil, nil)
				if err != nil {
					t.Fatalf("decode list item: %v", err)
				}
				walk(item)
			}
		case *corev1.Pod:
			specs = append(specs, o.Spec)
		case *appsv1.Deployment:
			specs = append(specs, o.Spec.Template.Spec)
		default:
			t.Fatalf("unexpected %T", obj)
		}
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		obj, _, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("kubectl could not read it back: %v\n%s", err, doc)
		}
		walk(obj)
	}
	return specs
}

// TestMigratedFilesReadBack: the migrated JSON is JSON again (kubectl reads
// .json files as JSON), with the fields in their order and indentation,
// and both formats decode strictly into the k8s.io/api types with the
// profile set on every container.
func TestMigratedFilesReadBack(t *testing.T) {
	for _, f := range []string{"list.json", "nullsc.yaml", "pod.yaml"} {
		t.Run(f, func(t *testing.T) {
			base, ext, _ := strings.Cut(f, ".")
			in, err := os.ReadFile(filepath.Join("testdata", base+".in."+ext))
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := Migrate(in)
			if err != nil {
				t.Fatal(err)
			}
			if ext == "json" {
				if !json.Valid(out) {
					t.Fatalf("not JSON:\n%s", out)
				}
				if !strings.HasPrefix(string(out), "{\n    \"apiVersion\": \"v1\",\n    \"items\": [") {
					t.Errorf("key order or 4-space indentation not kept:\n%.200s", out)
				}
				if !strings.Contains(string(out), `"a <b> & c"`) {
					t.Errorf("strings re-escaped:\n%s", out)
				}
			}
			if strings.Contains(string(out), AnnotationPrefix) {
				t.Errorf("annotation left:\n%s", out)
			}
			for _, spec := range strictPods(t, out) {
				for _, c := range append(spec.InitContainers, spec.Containers...) {
					if c.SecurityContext == nil || c.SecurityContext.AppArmorProfile == nil {
						t.Errorf("container %s has no appArmorProfile", c.Name)
					}
				}
			}
		})
	}
	// One-line JSON stays one line.
	oneLine := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"container.apparmor.security.beta.kubernetes.io/app":"unconfined"}},"spec":{"containers":[{"name":"app","image":"nginx"}]}}`
	out, _, err := Migrate([]byte(oneLine))
	if err != nil || strings.Count(string(out), "\n") != 0 || !strings.Contains(string(out), `"securityContext":{"appArmorProfile":{"type":"Unconfined"}}`) {
		t.Errorf("one-line JSON: %v\n%s", err, out)
	}
}

// TestNullSecurityContextIsAbsent: `securityContext:` with no value (and
// null, ~) is what the apiserver decodes as no security context at all
// (k8s.io/api core/v1 Container.SecurityContext is a pointer left nil), so
// migrate treats it as absent instead of stopping.
func TestNullSecurityContextIsAbsent(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "nullsc.in.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range strictPods(t, in) {
		for _, c := range spec.Containers {
			if c.SecurityContext != nil {
				t.Fatalf("upstream decodes %s's null securityContext as %+v, not absent", c.Name, c.SecurityContext)
			}
		}
	}
	if _, _, err := Migrate(in); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
}
