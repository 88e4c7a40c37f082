package apparmor

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden *.out.yaml files")

// TestMigrateGolden rewrites each testdata/*.in.yaml and compares it with
// the *.out.yaml next to it.
func TestMigrateGolden(t *testing.T) {
	tests := []struct {
		name string
		want int // annotations migrated
	}{
		{"pod", 2},
		{"workloads", 6},
		{"nothing", 0},
		{"already", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", tt.name+".in.yaml"))
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
			golden := filepath.Join("testdata", tt.name+".out.yaml")
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
