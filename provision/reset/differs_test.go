package reset

import "testing"

// differs compares what a manifest says with what the apiserver stored:
// numbers and quantities as the API normalises them, fields the manifest
// leaves out (defaults, status) ignored.
func TestDiffers(t *testing.T) {
	manifest := map[string]any{
		"apiVersion": "apps/v1",
		"metadata":   map[string]any{"name": "web", "labels": map[string]any{"app": "web"}},
		"spec": map[string]any{
			"replicas": float64(2), // as YAML decodes it
			"template": map[string]any{"spec": map[string]any{"containers": []any{
				map[string]any{"name": "web", "resources": map[string]any{"limits": map[string]any{"cpu": "1000m", "example.com/device": float64(2)}},
					"volumeMounts": []any{map[string]any{"name": "data", "mountPath": "/data"}}},
			}}},
		},
	}
	live := func(replicas int64, cpu string, label string) map[string]any {
		return map[string]any{
			"apiVersion": "apps/v1",
			"metadata":   map[string]any{"name": "web", "uid": "u", "labels": map[string]any{"app": label}},
			"spec": map[string]any{
				"replicas":             replicas,
				"revisionHistoryLimit": int64(10),
				"template": map[string]any{"spec": map[string]any{"containers": []any{
					map[string]any{"name": "web", "imagePullPolicy": "IfNotPresent", "resources": map[string]any{"limits": map[string]any{"cpu": cpu, "example.com/device": "2"}},
						// Admission appends the service account token's mount.
						"volumeMounts": []any{map[string]any{"name": "data", "mountPath": "/data"}, map[string]any{"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}}},
				}}},
			},
			"status": map[string]any{"replicas": int64(2)},
		}
	}
	for _, tt := range []struct {
		name string
		live map[string]any
		want string
	}{
		{"as applied, with defaults and status", live(2, "1", "web"), ""},
		{"scaled to 0", live(0, "1", "web"), "spec.replicas"},
		{"limit changed", live(2, "500m", "web"), "spec.template.spec.containers[0].resources.limits.cpu"},
		{"label changed", live(2, "1", "other"), "metadata.labels.app"},
	} {
		if got := differs(manifest, tt.live, ""); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
