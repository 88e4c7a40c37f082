package lab

import (
	"fmt"
	"net"
	"slices"
	"strings"
)

// Rule is one thing a lab can say that a Kubernetes 1.31.14 component (or
// kind v0.31.0, which writes their configuration) refuses, or never becomes
// ready with. These rules live in k8s.io/kubernetes and in kind's internal
// packages, neither of which kindlab's go.mod can carry, so they are kept
// here, one row each, with the upstream file that holds them; the
// cross-check (TestComponentRulesAgainstBinaries, run by `make test`) feeds
// a bad and a good value of every row to kind's own config loader and to
// the real kubeadm, kube-apiserver and kube-proxy, so the table cannot drift
// from them.
//
// What is importable is called instead of copied: the authentication
// config is checked by k8s.io/apiserver's own validation (authn.go).
type Rule struct {
	// ID names the row; the cross-check has one case per ID.
	ID string
	// Component is what refuses: kind, kubeadm, kube-apiserver or kube-proxy.
	Component string
	// Source is the upstream file and function holding the rule.
	Source string
	// Upstream is what the component prints when it refuses (a substring
	// of its output), or for kube-apiserver the readiness check that never
	// passes; the cross-check looks for it in the real binary's output.
	Upstream string
	// Field is the lab field the refusal is reported on.
	Field string

	// check returns what is wrong and what would be valid, or "" when
	// the lab passes. A rule about a field that holds a list of values
	// (both subnets) reports the first offending one.
	check func(r *Resolved) (field, msg string)
}

// Rules131 returns the table, in the order Resolve applies it.
func Rules131() []Rule { return append([]Rule(nil), rules131...) }

// kindSrc, kubeadmSrc, apiserverSrc and proxySrc prefix Source with the
// module and version each rule was read from.
const (
	kindSrc      = "sigs.k8s.io/kind v0.31.0 "
	kubeadmSrc   = "k8s.io/kubernetes v1.31.14 "
	apiserverSrc = "k8s.io/kubernetes v1.31.14 "
	proxySrc     = "k8s.io/kubernetes v1.31.14 "
)

// Values kubeadm v1.31.14 uses (cmd/kubeadm/app/constants/constants.go and
// validation.go's getClusterNodeMask).
const (
	maximumBitsForServiceSubnet     = 20 // MaximumBitsForServiceSubnet
	minimumAddressesInServiceSubnet = 10 // MinimumAddressesInServiceSubnet: the DNS Service is the tenth address
	minimumAddressesInPodSubnet     = 14 // MinimumAddressesInPodSubnet
	podSubnetNodeMaskMaxDiff        = 16 // PodSubnetNodeMaskMaxDiff
	defaultNodeMaskIPv4             = 24 // kube-controller-manager --node-cidr-mask-size-ipv4 default
)

// The subnets a lab may leave out take kind's defaults (v1alpha4
// SetDefaultsCluster), which pass every rule below.
var subnetFields = []struct{ field, name string }{
	{"spec.networking.serviceSubnet", "serviceSubnet"},
	{"spec.networking.podSubnet", "podSubnet"},
}

func subnetOf(r *Resolved, name string) string {
	if name == "serviceSubnet" {
		return r.Networking.ServiceSubnet
	}
	return r.Networking.PodSubnet
}

// eachSubnet runs f on the subnets the lab sets; the first message wins.
func eachSubnet(r *Resolved, names []string, f func(field, value string) string) (string, string) {
	for _, sf := range subnetFields {
		if !containsString(names, sf.name) {
			continue
		}
		v := subnetOf(r, sf.name)
		if v == "" {
			continue
		}
		if msg := f(sf.field, v); msg != "" {
			return sf.field, msg
		}
	}
	return "", ""
}

// ipv4CIDR parses a subnet the way kind does (net.ParseCIDR, one CIDR, IPv4
// family: a lab has no ipFamily, so kind's default IPv4 applies), and
// returns nil for anything the kind rows refuse.
func ipv4CIDR(s string) *net.IPNet {
	if strings.Contains(s, ",") {
		return nil
	}
	ip, n, err := net.ParseCIDR(s)
	if err != nil || ip.To4() == nil {
		return nil
	}
	return n
}

var rules131 = []Rule{
	{
		ID: "subnet-not-cidr", Component: "kind", Field: "spec.networking.serviceSubnet, spec.networking.podSubnet",
		Source:   kindSrc + "pkg/internal/apis/config/validate.go (validateSubnets: net.ParseCIDR)",
		Upstream: "failed to parse cidr value",
		check: func(r *Resolved) (string, string) {
			return eachSubnet(r, []string{"serviceSubnet", "podSubnet"}, func(field, v string) string {
				for _, c := range strings.Split(v, ",") {
					if _, _, err := net.ParseCIDR(c); err != nil {
						return fmt.Sprintf("%q is not a CIDR: write an IPv4 network as a.b.c.d/n, e.g. %s (kind refuses it before any node starts: 'failed to parse cidr value:%q', %s)",
							v, example(field), c, kindSrc+"pkg/internal/apis/config/validate.go")
					}
				}
				return ""
			})
		},
	},
	{
		ID: "subnet-single-stack", Component: "kind", Field: "spec.networking.serviceSubnet, spec.networking.podSubnet",
		Source:   kindSrc + "pkg/internal/apis/config/validate.go (validateSubnets, single-stack IPv4 family)",
		Upstream: "only one CIDR allowed for single-stack networking",
		check: func(r *Resolved) (string, string) {
			return eachSubnet(r, []string{"serviceSubnet", "podSubnet"}, func(field, v string) string {
				if strings.Contains(v, ",") {
					return fmt.Sprintf("%q lists more than one CIDR: a lab's cluster is single-stack IPv4, so give one CIDR, e.g. %s (kind: '%s', %s)",
						v, example(field), "only one CIDR allowed for single-stack networking", kindSrc+"pkg/internal/apis/config/validate.go")
				}
				return ""
			})
		},
	},
	{
		ID: "subnet-ipv4", Component: "kind", Field: "spec.networking.serviceSubnet, spec.networking.podSubnet",
		Source:   kindSrc + "pkg/internal/apis/config/validate.go (validateSubnets, IPv4 family by default)",
		Upstream: "expected IPv4 CIDR for IPv4 family",
		check: func(r *Resolved) (string, string) {
			return eachSubnet(r, []string{"serviceSubnet", "podSubnet"}, func(field, v string) string {
				if ip, _, err := net.ParseCIDR(v); err == nil && ip.To4() == nil {
					return fmt.Sprintf("%q is IPv6: a lab's cluster uses kind's default IPv4 family, so give an IPv4 CIDR, e.g. %s (kind: '%s', %s)",
						v, example(field), "expected IPv4 CIDR for IPv4 family", kindSrc+"pkg/internal/apis/config/validate.go")
				}
				return ""
			})
		},
	},
	{
		ID: "service-subnet-too-large", Component: "kubeadm", Field: "spec.networking.serviceSubnet",
		Source:   kubeadmSrc + "cmd/kubeadm/app/apis/kubeadm/validation/validation.go (ValidateServiceSubnetSize, constants.MaximumBitsForServiceSubnet=20)",
		Upstream: "specified service subnet is too large; for 32-bit addresses, the mask must be >= 12",
		check: func(r *Resolved) (string, string) {
			return eachSubnet(r, []string{"serviceSubnet"}, func(field, v string) string {
				n := ipv4CIDR(v)
				if n == nil {
					return ""
				}
				if ones, bits := n.Mask.Size(); bits-ones > maximumBitsForServiceSubnet {
					return fmt.Sprintf("%q is too large: an IPv4 service subnet must be /%d or smaller (a mask >= %d), e.g. 10.96.0.0/16 (kubeadm init refuses it: '%s', %s)",
						v, bits-maximumBitsForServiceSubnet, bits-maximumBitsForServiceSubnet,
						"specified service subnet is too large; for 32-bit addresses, the mask must be >= 12", kubeadmSrc+"cmd/kubeadm/app/apis/kubeadm/validation/validation.go")
				}
				return ""
			})
		},
	},
	{
		ID: "service-subnet-too-small", Component: "kubeadm", Field: "spec.networking.serviceSubnet",
		Source:   kubeadmSrc + "cmd/kubeadm/app/apis/kubeadm/validation/validation.go (ValidateIPNetFromString, constants.MinimumAddressesInServiceSubnet=10)",
		Upstream: "is too small, the minimum is 10",
		check: func(r *Resolved) (string, string) {
			return eachSubnet(r, []string{"serviceSubnet"}, func(field, v string) string {
				n := ipv4CIDR(v)
				if n == nil {
					return ""
				}
				if size := rangeSize(n); size < minimumAddressesInServiceSubnet {
					return fmt.Sprintf("%q has %d addresses: a service subnet needs at least %d (the cluster DNS Service takes the tenth), so /28 or larger, e.g. 10.96.0.0/16 (kubeadm: 'subnet with %d address(es) is too small, the minimum is %d', %s)",
						v, size, minimumAddressesInServiceSubnet, size, minimumAddressesInServiceSubnet, kubeadmSrc+"cmd/kubeadm/app/apis/kubeadm/validation/validation.go")
				}
				return ""
			})
		},
	},
	{
		ID: "pod-subnet-smaller-than-node-mask", Component: "kubeadm", Field: "spec.networking.podSubnet",
		Source:   kubeadmSrc + "cmd/kubeadm/app/apis/kubeadm/validation/validation.go (ValidatePodSubnetNodeMask, node-cidr-mask-size-ipv4 default 24)",
		Upstream: "is smaller than the size of node subnet with mask 24",
		check: func(r *Resolved) (string, string) {
			return eachSubnet(r, []string{"podSubnet"}, func(field, v string) string {
				n := ipv4CIDR(v)
				if n == nil {
					return ""
				}
				if ones, _ := n.Mask.Size(); ones > defaultNodeMaskIPv4 {
					return fmt.Sprintf("%q is smaller than the /%d each node gets: use /%d or larger, e.g. 10.244.0.0/16 (kubeadm: 'the size of pod subnet with mask %d is smaller than the size of node subnet with mask %d', %s)",
						v, defaultNodeMaskIPv4, defaultNodeMaskIPv4, ones, defaultNodeMaskIPv4, kubeadmSrc+"cmd/kubeadm/app/apis/kubeadm/validation/validation.go")
				}
				return ""
			})
		},
	},
	{
		ID: "pod-subnet-too-large", Component: "kubeadm", Field: "spec.networking.podSubnet",
		Source:   kubeadmSrc + "cmd/kubeadm/app/apis/kubeadm/validation/validation.go (ValidatePodSubnetNodeMask, constants.PodSubnetNodeMaskMaxDiff=16)",
		Upstream: "difference is greater than 16",
		check: func(r *Resolved) (string, string) {
			return eachSubnet(r, []string{"podSubnet"}, func(field, v string) string {
				n := ipv4CIDR(v)
				if n == nil {
					return ""
				}
				if ones, _ := n.Mask.Size(); defaultNodeMaskIPv4-ones > podSubnetNodeMaskMaxDiff {
					return fmt.Sprintf("%q is too large: with a /%d per node the pod subnet must be /%d or smaller, e.g. 10.244.0.0/16 (kubeadm: 'pod subnet mask (%d) and node-mask (%d) difference is greater than %d', %s)",
						v, defaultNodeMaskIPv4, defaultNodeMaskIPv4-podSubnetNodeMaskMaxDiff, ones, defaultNodeMaskIPv4, podSubnetNodeMaskMaxDiff,
						kubeadmSrc+"cmd/kubeadm/app/apis/kubeadm/validation/validation.go")
				}
				return ""
			})
		},
	},
	{
		ID: "nftables-needs-gate", Component: "kube-proxy", Field: "spec.networking.kubeProxyMode",
		Source:   proxySrc + "pkg/proxy/apis/config/validation/validation.go (validateProxyModeLinux)",
		Upstream: `Invalid value: "nftables": must be iptables, ipvs or blank`,
		check: func(r *Resolved) (string, string) {
			if r.Networking.KubeProxyMode != "nftables" || gateOn(r, "NFTablesProxyMode") {
				return "", ""
			}
			return "spec.networking.kubeProxyMode", fmt.Sprintf("nftables needs feature gate NFTablesProxyMode on (it is off in this lab): remove NFTablesProxyMode: false, or use kubeProxyMode iptables (kube-proxy refuses the mode and restarts forever: '%s', %s)",
				`Mode.ProxyMode: Invalid value: "nftables": must be iptables, ipvs or blank`, proxySrc+"pkg/proxy/apis/config/validation/validation.go")
		},
	},
	{
		ID: "multicidr-needs-api", Component: "kube-apiserver", Field: "spec.featureGates.MultiCIDRServiceAllocator",
		Source: apiserverSrc + "pkg/registry/core/rest/storage_core.go (start-service-ip-repair-controllers gives up after a minute) " +
			"with pkg/controlplane/instance.go (the allocator needs the ServiceCIDR API)",
		Upstream: `PostStartHook "start-service-ip-repair-controllers" failed: unable to perform initial IP and Port allocation check`,
		check: func(r *Resolved) (string, string) {
			if !gateOn(r, "MultiCIDRServiceAllocator") || apiEnabled(r.RuntimeConfig, "networking.k8s.io/v1beta1", "beta") {
				return "", ""
			}
			return "spec.featureGates.MultiCIDRServiceAllocator", fmt.Sprintf("needs the ServiceCIDR API too: add spec.runtimeConfig: {networking.k8s.io/v1beta1: \"true\"} (without it kube-apiserver 1.31 never becomes ready and exits after a minute: '%s', %s)",
				`PostStartHook "start-service-ip-repair-controllers" failed: unable to perform initial IP and Port allocation check`, apiserverSrc+"pkg/registry/core/rest/storage_core.go")
		},
	},
	{
		ID: "dra-needs-api", Component: "kube-apiserver", Field: "spec.featureGates.DynamicResourceAllocation",
		Source: apiserverSrc + "pkg/kubeapiserver/authorizer/config.go (the Node authorizer, which kubeadm turns on, watches " +
			"resource.k8s.io/v1alpha3 ResourceSlices once DynamicResourceAllocation is on)",
		Upstream: "informer-sync failed",
		check: func(r *Resolved) (string, string) {
			if !gateOn(r, "DynamicResourceAllocation") || apiEnabled(r.RuntimeConfig, "resource.k8s.io/v1alpha3", "alpha") {
				return "", ""
			}
			return "spec.featureGates.DynamicResourceAllocation", fmt.Sprintf("needs the resource.k8s.io API too: add spec.runtimeConfig: {resource.k8s.io/v1alpha3: \"true\"} (without it kube-apiserver 1.31 never becomes ready: /readyz keeps failing '%s' on the ResourceSlice watch of the Node authorizer, %s)",
				"informer-sync", apiserverSrc+"pkg/kubeapiserver/authorizer/config.go")
		},
	},
	{
		ID: "authn-config-needs-gate", Component: "kube-apiserver", Field: "spec.featureGates.StructuredAuthenticationConfiguration",
		Source:   apiserverSrc + "pkg/kubeapiserver/options/authentication.go (validateOIDCOptions)",
		Upstream: "set --feature-gates=StructuredAuthenticationConfiguration=true to use authentication-config file",
		check: func(r *Resolved) (string, string) {
			if r.AuthenticationConfig == nil || gateOn(r, "StructuredAuthenticationConfiguration") {
				return "", ""
			}
			return "spec.featureGates.StructuredAuthenticationConfiguration", fmt.Sprintf("must stay on while spec.apiServer.authenticationConfig is set: remove StructuredAuthenticationConfiguration: false, or the authentication config (kube-apiserver refuses to start: '%s', %s)",
				"set --feature-gates=StructuredAuthenticationConfiguration=true to use authentication-config file", apiserverSrc+"pkg/kubeapiserver/options/authentication.go")
		},
	},
	gateNeedsGate("ServiceAccountTokenNodeBinding", "ServiceAccountTokenNodeBindingValidation",
		apiserverSrc+"pkg/kubeapiserver/options/authentication.go (BuiltInAuthenticationOptions.Validate)",
		`the "ServiceAccountTokenNodeBinding" feature gate can only be enabled if the "ServiceAccountTokenNodeBindingValidation" feature gate is also enabled`),
	gateNeedsGate("AuthorizeNodeWithSelectors", "AuthorizeWithSelectors",
		apiserverSrc+"pkg/controlplane/apiserver/options/validation.go (validateNodeSelectorAuthorizationFeature)",
		"AuthorizeNodeWithSelectors feature requires AuthorizeWithSelectors feature to be enabled"),
	gateNeedsGate("DRAControlPlaneController", "DynamicResourceAllocation",
		apiserverSrc+"pkg/controlplane/apiserver/options/validation.go (validateDRAControlPlaneControllerFeature)",
		"DRAControlPlaneController feature requires DynamicResourceAllocation feature to be enabled"),
	gateNeedsGate("UnknownVersionInteroperabilityProxy", "StorageVersionAPI",
		apiserverSrc+"pkg/controlplane/apiserver/options/validation.go (validateUnknownVersionInteroperabilityProxyFeature)",
		"UnknownVersionInteroperabilityProxy feature requires StorageVersionAPI feature flag to be enabled"),
	{
		ID: "runtime-config-only-all-off", Component: "kube-apiserver", Field: "spec.runtimeConfig",
		Source:   "k8s.io/apiserver v0.31.14 pkg/server/options/api_enablement.go (APIEnablementOptions.Validate)",
		Upstream: "invalid key with only api/all=false",
		check: func(r *Resolved) (string, string) {
			if r.RuntimeConfig["api/all"] == "false" && effectiveRuntimeConfigKeys(r.RuntimeConfig) == 1 {
				return `spec.runtimeConfig["api/all"]`, "\"false\" alone turns off every API: enable the group versions the lab needs next to it, or remove it (kube-apiserver refuses to start: 'invalid key with only api/all=false', k8s.io/apiserver v0.31.14 pkg/server/options/api_enablement.go)"
			}
			return "", ""
		},
	},
	{
		ID: "runtime-config-invalid-key", Component: "kube-apiserver", Field: "spec.runtimeConfig",
		Source:   "k8s.io/apiserver v0.31.14 pkg/server/resourceconfig/helpers.go (ParseGroups)",
		Upstream: "runtime-config invalid key",
		check: runtimeConfigRule(func(k string, key runtimeConfigKey) string {
			if key.parts == 2 || key.parts == 3 {
				return ""
			}
			return "is not a --runtime-config key: give group/version (e.g. networking.k8s.io/v1beta1), group/version/resource or " + strings.Join(runtimeConfigMatchers, ", ") +
				" (kube-apiserver refuses to start: 'runtime-config invalid key " + k + "', k8s.io/apiserver v0.31.14 pkg/server/resourceconfig/helpers.go)"
		}),
	},
	{
		ID: "runtime-config-unknown-group", Component: "kube-apiserver", Field: "spec.runtimeConfig",
		Source:   "k8s.io/apiserver v0.31.14 pkg/server/options/api_enablement.go (APIEnablementOptions.Validate)",
		Upstream: "unknown api groups",
		check: runtimeConfigRule(func(k string, key runtimeConfigKey) string {
			if _, ok := apiGroups131[key.group]; ok {
				return ""
			}
			return fmt.Sprintf("%q is not an API group kube-apiserver 1.31 serves (valid: %s) (kube-apiserver refuses to start: 'unknown api groups %s', k8s.io/apiserver v0.31.14 pkg/server/options/api_enablement.go)",
				key.group, strings.Join(servedGroups(), ", "), key.group)
		}),
	},
	{
		ID: "runtime-config-unregistered-version", Component: "kube-apiserver", Field: "spec.runtimeConfig",
		Source:   "k8s.io/apiserver v0.31.14 pkg/server/resourceconfig/helpers.go (MergeAPIResourceConfigs)",
		Upstream: "that has not been registered",
		check: runtimeConfigRule(func(k string, key runtimeConfigKey) string {
			versions := apiGroups131[key.group]
			if slices.Contains(versions, key.version) {
				return ""
			}
			return fmt.Sprintf("kube-apiserver 1.31 has no version %q of %s (valid: %s) (it refuses to start: 'group version %s/%s that has not been registered', k8s.io/apiserver v0.31.14 pkg/server/resourceconfig/helpers.go)",
				key.version, key.group, strings.Join(versions, ", "), key.group, key.version)
		}),
	},
	{
		ID: "runtime-config-resource-case", Component: "kube-apiserver", Field: "spec.runtimeConfig",
		Source:   "k8s.io/apiserver v0.31.14 pkg/server/resourceconfig/helpers.go (MergeAPIResourceConfigs)",
		Upstream: "resource is always lowercase plural",
		check: runtimeConfigRule(func(k string, key runtimeConfigKey) string {
			if key.parts != 3 || strings.ToLower(key.resource) == key.resource {
				return ""
			}
			return fmt.Sprintf("resource %q is not lower case: give %s/%s/%s (kube-apiserver refuses to start: 'group/version/resource and resource is always lowercase plural', k8s.io/apiserver v0.31.14 pkg/server/resourceconfig/helpers.go)",
				key.resource, key.group, key.version, strings.ToLower(key.resource))
		}),
	},
	{
		ID: "flowcontrol-api-off", Component: "kube-apiserver", Field: "spec.runtimeConfig",
		Source:   apiserverSrc + "pkg/controlplane/apiserver/options/validation.go (validateAPIPriorityAndFairness)",
		Upstream: "conflicts with --enable-priority-and-fairness=true",
		check: func(r *Resolved) (string, string) {
			// Upstream reads the flag in this order and stops at the first
			// key it finds set either way.
			for _, k := range []string{"flowcontrol.apiserver.k8s.io/v1", "api/ga", "api/all"} {
				switch r.RuntimeConfig[k] {
				case "false":
					return fmt.Sprintf("spec.runtimeConfig[%q]", k), fmt.Sprintf("\"false\" turns off the flowcontrol.apiserver.k8s.io/v1 API that API Priority and Fairness (always on in kind) needs: remove it (kube-apiserver refuses to start: '--runtime-config=%s=false conflicts with --enable-priority-and-fairness=true', %s)",
						k, apiserverSrc+"pkg/controlplane/apiserver/options/validation.go")
				case "true":
					return "", ""
				}
			}
			return "", ""
		},
	},
}

// gateNeedsGate is the row for "gate a on requires gate b on".
func gateNeedsGate(a, b, source, upstream string) Rule {
	return Rule{
		ID: "gate-" + strings.ToLower(a) + "-needs-" + strings.ToLower(b), Component: "kube-apiserver",
		Field: "spec.featureGates." + a, Source: source, Upstream: upstream,
		check: func(r *Resolved) (string, string) {
			if !gateOn(r, a) || gateOn(r, b) {
				return "", ""
			}
			return "spec.featureGates." + a, fmt.Sprintf("needs feature gate %s on as well: set %s: true, or turn %s off (kube-apiserver refuses to start: '%s', %s)",
				b, b, a, upstream, strings.SplitN(source, " (", 2)[0])
		},
	}
}

// gateOn is a gate's value as the components see it: the lab's setting,
// else AllAlpha/AllBeta for a gate of that stage, else the 1.31 default
// (k8s.io/component-base v0.31.14 featuregate: SetFromMap).
func gateOn(r *Resolved, gate string) bool {
	if v, ok := r.FeatureGates[gate]; ok {
		return v
	}
	spec := gates131[gate]
	if spec.Locked {
		return spec.Default
	}
	switch spec.Stage {
	case "Alpha":
		if v, ok := r.FeatureGates["AllAlpha"]; ok {
			return v
		}
	case "Beta":
		if v, ok := r.FeatureGates["AllBeta"]; ok {
			return v
		}
	}
	return spec.Default
}

// apiEnabled says whether --runtime-config turns a group/version on that is
// off by default: the group/version's own key wins, then api/<stage>, then
// api/all (k8s.io/apiserver v0.31.14 pkg/server/resourceconfig/helpers.go).
func apiEnabled(rc map[string]string, groupVersion, stage string) bool {
	for _, k := range []string{groupVersion, "api/" + stage, "api/all"} {
		if v, ok := rc[k]; ok {
			return v == "true"
		}
	}
	return false
}

// rangeSize is the number of addresses in an IPv4 network, as kubeadm's
// netutils.RangeSize counts them.
func rangeSize(n *net.IPNet) int64 {
	ones, bits := n.Mask.Size()
	return int64(1) << uint(bits-ones)
}

func example(field string) string {
	if strings.HasSuffix(field, "serviceSubnet") {
		return "10.96.0.0/16"
	}
	return "10.244.0.0/16"
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// runtimeConfigRule is a rule's check over each spec.runtimeConfig key but
// api/all and its kin, in sorted order: bad returns what is wrong with one
// key ("" when nothing is). Each rule sees only keys that passed the rules
// before it, as kube-apiserver reaches a key's version only once its group
// is known.
func runtimeConfigRule(bad func(k string, key runtimeConfigKey) string) func(*Resolved) (string, string) {
	return func(r *Resolved) (string, string) {
		for _, k := range sortedKeys(r.RuntimeConfig) {
			key := parseRuntimeConfigKey(k)
			if key.matcher {
				continue
			}
			if msg := bad(k, key); msg != "" {
				return fmt.Sprintf("spec.runtimeConfig[%q]", k), msg
			}
		}
		return "", ""
	}
}

// servedGroups are apiGroups131's named groups, sorted.
func servedGroups() []string {
	var gs []string
	for g := range apiGroups131 {
		if g != "" {
			gs = append(gs, g)
		}
	}
	slices.Sort(gs)
	return gs
}
