package lab

import (
	"slices"
	"strings"
)

// apiGroups131 are the API group versions kube-apiserver v1.31.14 has
// registered, by group, in its priority order: what its --runtime-config
// may name. Read from k8s.io/kubernetes v1.31.14
// pkg/controlplane/import_known_versions.go (each pkg/apis/<group>/install
// SetVersionPriority), k8s.io/apiextensions-apiserver v0.31.14 and
// k8s.io/kube-aggregator v0.31.14 (their install packages): the three
// registries cmd/kube-apiserver validates --runtime-config against
// (pkg/controlplane/apiserver/options/validation.go). The cross-check test
// starts the real kube-apiserver with a key this table refuses.
var apiGroups131 = map[string][]string{
	"":                             {"v1"},
	"admission.k8s.io":             {"v1", "v1beta1"},
	"admissionregistration.k8s.io": {"v1", "v1beta1", "v1alpha1"},
	"internal.apiserver.k8s.io":    {"v1alpha1"},
	"apps":                         {"v1", "v1beta2", "v1beta1"},
	"authentication.k8s.io":        {"v1", "v1beta1", "v1alpha1"},
	"authorization.k8s.io":         {"v1", "v1beta1"},
	"autoscaling":                  {"v2", "v1", "v2beta1", "v2beta2"},
	"batch":                        {"v1", "v1beta1"},
	"certificates.k8s.io":          {"v1", "v1beta1", "v1alpha1"},
	"coordination.k8s.io":          {"v1", "v1beta1", "v1alpha1"},
	"discovery.k8s.io":             {"v1", "v1beta1"},
	"events.k8s.io":                {"v1", "v1beta1"},
	"extensions":                   {"v1beta1"},
	"flowcontrol.apiserver.k8s.io": {"v1", "v1beta3", "v1beta2", "v1beta1"},
	"imagepolicy.k8s.io":           {"v1alpha1"},
	"networking.k8s.io":            {"v1", "v1beta1", "v1alpha1"},
	"node.k8s.io":                  {"v1", "v1beta1"},
	"policy":                       {"v1", "v1beta1"},
	"rbac.authorization.k8s.io":    {"v1", "v1beta1", "v1alpha1"},
	"resource.k8s.io":              {"v1alpha3"},
	"scheduling.k8s.io":            {"v1", "v1beta1", "v1alpha1"},
	"storage.k8s.io":               {"v1", "v1beta1", "v1alpha1"},
	"storagemigration.k8s.io":      {"v1alpha1"},
	"apiextensions.k8s.io":         {"v1", "v1beta1"},
	"apiregistration.k8s.io":       {"v1", "v1beta1"},
}

// runtimeConfigMatchers are the --runtime-config keys that address
// versions by stability rather than by group (k8s.io/apiserver v0.31.14
// pkg/server/resourceconfig/helpers.go groupVersionMatchers).
var runtimeConfigMatchers = []string{"api/all", "api/ga", "api/beta", "api/alpha"}

// runtimeConfigKey is a --runtime-config key split as kube-apiserver splits
// it (resourceconfig.ParseGroups and MergeAPIResourceConfigs): matcher for
// api/all and its kin (and the ignored api/legacy), else group, version
// and, for group/version/resource, resource, in parts parts.
type runtimeConfigKey struct {
	matcher                  bool
	group, version, resource string
	parts                    int
}

func parseRuntimeConfigKey(k string) runtimeConfigKey {
	if slices.Contains(runtimeConfigMatchers, k) || k == "api/legacy" {
		return runtimeConfigKey{matcher: true}
	}
	// kube-apiserver reads these as the core API, /v1, before it looks at
	// the keys (k8s.io/kubernetes v1.31.14
	// pkg/controlplane/apiserver/options/options.go Complete), and drops
	// api/legacy; the cross-check found `v1` and `api/v1` accepted.
	if coreAlias(k) {
		return runtimeConfigKey{group: "", version: "v1", parts: 2}
	}
	t := strings.Split(k, "/")
	key := runtimeConfigKey{parts: len(t), group: t[0]}
	if len(t) > 1 {
		key.version = t[1]
	}
	if len(t) > 2 {
		key.resource = t[2]
	}
	return key
}

// coreAlias reports whether kube-apiserver 1.31 reads k as /v1, the whole
// core API: v1 and api/v1, and with a resource after them, which it drops
// (k8s.io/kubernetes v1.31.14 pkg/controlplane/apiserver/options/options.go
// Complete).
func coreAlias(k string) bool {
	return k == "v1" || strings.HasPrefix(k, "v1/") || k == "api/v1" || strings.HasPrefix(k, "api/v1/")
}

// effectiveRuntimeConfigKeys counts the keys kube-apiserver 1.31 validates
// after Complete: api/legacy dropped, the core aliases folded into one.
func effectiveRuntimeConfigKeys(rc map[string]string) int {
	n, core := 0, false
	for k := range rc {
		switch {
		case k == "api/legacy":
		case coreAlias(k):
			core = true
		default:
			n++
		}
	}
	if core {
		n++
	}
	return n
}
