package lab_test

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kindlab/kindlab/provision/lab"
)

// componentCase is one thing a 1.31 component refuses: a lab snippet it
// refuses (bad) and the nearest one it accepts (good). The expected value
// is what the upstream component does, named in upstream;
// TestComponentRulesAgainstBinaries feeds both to the real binaries.
type componentCase struct {
	name string
	// rule is the Rule.ID of rules_1_31.go, or "" for what k8s.io/apiserver's
	// own validation refuses (the authentication config).
	rule string
	// component refuses bad: kind, kubeadm, kube-apiserver or kube-proxy.
	component string
	// upstream is the upstream file holding the rule.
	upstream string
	// bad and good are lines appended under spec: of a lab that
	// includes nothing else (goodNodes).
	bad, good string
	// authn, when set, is the authentication config file of the lab
	// (badAuthn for bad, else authn).
	authn, badAuthn string
	// want are substrings of validate's one-line error for bad: the
	// field and the upstream message.
	want []string
}

const minimalAuthn = "apiVersion: apiserver.config.k8s.io/v1beta1\nkind: AuthenticationConfiguration\n"

const anonAuthn = minimalAuthn + "anonymous:\n  enabled: true\n  conditions:\n  - path: /livez\n  - path: /readyz\n  - path: /healthz\n"

var componentCases = []componentCase{
	{name: "service subnet not a CIDR", rule: "subnet-not-cidr", component: "kind",
		upstream: "sigs.k8s.io/kind v0.31.0 pkg/internal/apis/config/validate.go",
		bad:      "  networking:\n    serviceSubnet: 10.96.0.300/12\n", good: "  networking:\n    serviceSubnet: 10.96.0.0/12\n",
		want: []string{"spec.networking.serviceSubnet", `"10.96.0.300/12" is not a CIDR`, "failed to parse cidr value"}},
	{name: "pod subnet not a CIDR", rule: "subnet-not-cidr", component: "kind",
		upstream: "sigs.k8s.io/kind v0.31.0 pkg/internal/apis/config/validate.go",
		bad:      "  networking:\n    podSubnet: 10.244.0/16\n", good: "  networking:\n    podSubnet: 10.244.0.0/16\n",
		want: []string{"spec.networking.podSubnet", "is not a CIDR"}},
	{name: "two service subnets", rule: "subnet-single-stack", component: "kind",
		upstream: "sigs.k8s.io/kind v0.31.0 pkg/internal/apis/config/validate.go",
		bad:      "  networking:\n    serviceSubnet: 10.96.0.0/16,fd00:10:96::/112\n", good: "  networking:\n    serviceSubnet: 10.96.0.0/16\n",
		want: []string{"spec.networking.serviceSubnet", "only one CIDR allowed for single-stack networking"}},
	{name: "IPv6 pod subnet", rule: "subnet-ipv4", component: "kind",
		upstream: "sigs.k8s.io/kind v0.31.0 pkg/internal/apis/config/validate.go",
		bad:      "  networking:\n    podSubnet: fd00:10:244::/56\n", good: "  networking:\n    podSubnet: 10.244.0.0/16\n",
		want: []string{"spec.networking.podSubnet", "expected IPv4 CIDR for IPv4 family"}},
	{name: "service subnet /8", rule: "service-subnet-too-large", component: "kubeadm",
		upstream: "k8s.io/kubernetes v1.31.14 cmd/kubeadm/app/apis/kubeadm/validation/validation.go ValidateServiceSubnetSize",
		bad:      "  networking:\n    serviceSubnet: 10.0.0.0/8\n", good: "  networking:\n    serviceSubnet: 10.0.0.0/12\n",
		want: []string{"spec.networking.serviceSubnet", `"10.0.0.0/8" is too large`, "/12 or smaller", "the mask must be >= 12"}},
	{name: "service subnet with 8 addresses", rule: "service-subnet-too-small", component: "kubeadm",
		upstream: "k8s.io/kubernetes v1.31.14 cmd/kubeadm/app/apis/kubeadm/validation/validation.go ValidateIPNetFromString",
		bad:      "  networking:\n    serviceSubnet: 10.96.0.0/29\n", good: "  networking:\n    serviceSubnet: 10.96.0.0/28\n",
		want: []string{"spec.networking.serviceSubnet", "subnet with 8 address(es) is too small, the minimum is 10"}},
	{name: "pod subnet /25", rule: "pod-subnet-smaller-than-node-mask", component: "kubeadm",
		upstream: "k8s.io/kubernetes v1.31.14 cmd/kubeadm/app/apis/kubeadm/validation/validation.go ValidatePodSubnetNodeMask",
		bad:      "  networking:\n    podSubnet: 10.244.0.0/25\n", good: "  networking:\n    podSubnet: 10.244.0.0/24\n",
		want: []string{"spec.networking.podSubnet", "smaller than the /24 each node gets", "is smaller than the size of node subnet with mask 24"}},
	{name: "pod subnet /7", rule: "pod-subnet-too-large", component: "kubeadm",
		upstream: "k8s.io/kubernetes v1.31.14 cmd/kubeadm/app/apis/kubeadm/validation/validation.go ValidatePodSubnetNodeMask",
		bad:      "  networking:\n    podSubnet: 10.0.0.0/7\n", good: "  networking:\n    podSubnet: 10.0.0.0/8\n",
		want: []string{"spec.networking.podSubnet", "difference is greater than 16"}},
	{name: "nftables with its gate off", rule: "nftables-needs-gate", component: "kube-proxy",
		upstream: "k8s.io/kubernetes v1.31.14 pkg/proxy/apis/config/validation/validation.go validateProxyModeLinux",
		bad:      "  featureGates:\n    NFTablesProxyMode: false\n  networking:\n    kubeProxyMode: nftables\n",
		good:     "  featureGates:\n    NFTablesProxyMode: true\n  networking:\n    kubeProxyMode: nftables\n",
		want:     []string{"builtin:labs/x.yaml:13:", "spec.networking.kubeProxyMode", `Invalid value: "nftables": must be iptables, ipvs or blank`}},
	{name: "nftables with AllBeta off", rule: "nftables-needs-gate", component: "kube-proxy",
		upstream: "k8s.io/component-base v0.31.14 featuregate/feature_gate.go (AllBeta) and validateProxyModeLinux",
		bad:      "  featureGates:\n    AllBeta: false\n  networking:\n    kubeProxyMode: nftables\n",
		good:     "  featureGates:\n    AllBeta: false\n    NFTablesProxyMode: true\n  networking:\n    kubeProxyMode: nftables\n",
		want:     []string{"spec.networking.kubeProxyMode", "NFTablesProxyMode"}},
	{name: "MultiCIDRServiceAllocator without its API", rule: "multicidr-needs-api", component: "kube-apiserver",
		upstream: "k8s.io/kubernetes v1.31.14 pkg/registry/core/rest/storage_core.go (start-service-ip-repair-controllers)",
		bad:      "  featureGates:\n    MultiCIDRServiceAllocator: true\n",
		good:     "  featureGates:\n    MultiCIDRServiceAllocator: true\n  runtimeConfig:\n    networking.k8s.io/v1beta1: \"true\"\n",
		want:     []string{"builtin:labs/x.yaml:11:", "spec.featureGates.MultiCIDRServiceAllocator", `networking.k8s.io/v1beta1: "true"`, "never becomes ready", "unable to perform initial IP and Port allocation check"}},
	{name: "DynamicResourceAllocation without its API", rule: "dra-needs-api", component: "kube-apiserver",
		upstream: "k8s.io/kubernetes v1.31.14 pkg/kubeapiserver/authorizer/config.go (Node authorizer watches ResourceSlices)",
		bad:      "  featureGates:\n    DynamicResourceAllocation: true\n",
		good:     "  featureGates:\n    DynamicResourceAllocation: true\n  runtimeConfig:\n    resource.k8s.io/v1alpha3: \"true\"\n",
		want:     []string{"spec.featureGates.DynamicResourceAllocation", `resource.k8s.io/v1alpha3: "true"`, "informer-sync"}},
	{name: "authentication config with StructuredAuthenticationConfiguration off", rule: "authn-config-needs-gate", component: "kube-apiserver",
		upstream: "k8s.io/kubernetes v1.31.14 pkg/kubeapiserver/options/authentication.go validateOIDCOptions",
		bad:      "  featureGates:\n    StructuredAuthenticationConfiguration: false\n", good: "  featureGates:\n    StructuredAuthenticationConfiguration: true\n",
		authn: minimalAuthn,
		want:  []string{"spec.featureGates.StructuredAuthenticationConfiguration", "set --feature-gates=StructuredAuthenticationConfiguration=true to use authentication-config file"}},
	{name: "node-bound tokens without their validation", rule: "gate-serviceaccounttokennodebinding-needs-serviceaccounttokennodebindingvalidation", component: "kube-apiserver",
		upstream: "k8s.io/kubernetes v1.31.14 pkg/kubeapiserver/options/authentication.go Validate",
		bad:      "  featureGates:\n    ServiceAccountTokenNodeBindingValidation: false\n",
		good:     "  featureGates:\n    ServiceAccountTokenNodeBinding: true\n    ServiceAccountTokenNodeBindingValidation: true\n",
		want:     []string{"spec.featureGates.ServiceAccountTokenNodeBinding", `the "ServiceAccountTokenNodeBinding" feature gate can only be enabled if the "ServiceAccountTokenNodeBindingValidation" feature gate is also enabled`}},
	{name: "node authorizer selectors without AuthorizeWithSelectors", rule: "gate-authorizenodewithselectors-needs-authorizewithselectors", component: "kube-apiserver",
		upstream: "k8s.io/kubernetes v1.31.14 pkg/controlplane/apiserver/options/validation.go validateNodeSelectorAuthorizationFeature",
		bad:      "  featureGates:\n    AuthorizeNodeWithSelectors: true\n",
		good:     "  featureGates:\n    AuthorizeNodeWithSelectors: true\n    AuthorizeWithSelectors: true\n",
		want:     []string{"spec.featureGates.AuthorizeNodeWithSelectors", "AuthorizeNodeWithSelectors feature requires AuthorizeWithSelectors feature to be enabled"}},
	{name: "DRA control-plane controller without DRA", rule: "gate-dracontrolplanecontroller-needs-dynamicresourceallocation", component: "kube-apiserver",
		upstream: "k8s.io/kubernetes v1.31.14 pkg/controlplane/apiserver/options/validation.go validateDRAControlPlaneControllerFeature",
		bad:      "  featureGates:\n    DRAControlPlaneController: true\n",
		good:     "  featureGates:\n    DRAControlPlaneController: true\n    DynamicResourceAllocation: true\n  runtimeConfig:\n    resource.k8s.io/v1alpha3: \"true\"\n",
		want:     []string{"spec.featureGates.DRAControlPlaneController", "requires DynamicResourceAllocation"}},
	{name: "mixed-version proxy without StorageVersionAPI", rule: "gate-unknownversioninteroperabilityproxy-needs-storageversionapi", component: "kube-apiserver",
		upstream: "k8s.io/kubernetes v1.31.14 pkg/controlplane/apiserver/options/validation.go validateUnknownVersionInteroperabilityProxyFeature",
		bad:      "  featureGates:\n    UnknownVersionInteroperabilityProxy: true\n",
		good:     "  featureGates:\n    UnknownVersionInteroperabilityProxy: true\n    StorageVersionAPI: true\n  runtimeConfig:\n    internal.apiserver.k8s.io/v1alpha1: \"true\"\n",
		want:     []string{"spec.featureGates.UnknownVersionInteroperabilityProxy", "requires StorageVersionAPI feature flag to be enabled"}},
	{name: "runtime config api/all off alone", rule: "runtime-config-only-all-off", component: "kube-apiserver",
		upstream: "k8s.io/apiserver v0.31.14 pkg/server/options/api_enablement.go APIEnablementOptions.Validate",
		bad:      "  runtimeConfig:\n    api/all: \"false\"\n", good: "  runtimeConfig:\n    api/all: \"false\"\n    api/ga: \"true\"\n",
		want: []string{`spec.runtimeConfig["api/all"]`, "invalid key with only api/all=false"}},
	{name: "runtime config key of one part", rule: "runtime-config-invalid-key", component: "kube-apiserver",
		upstream: "k8s.io/apiserver v0.31.14 pkg/server/resourceconfig/helpers.go ParseGroups",
		bad:      "  runtimeConfig:\n    apps: \"true\"\n", good: "  runtimeConfig:\n    v1: \"true\"\n",
		want: []string{`spec.runtimeConfig["apps"]`, "runtime-config invalid key apps", "group/version"}},
	{name: "runtime config of an unknown group", rule: "runtime-config-unknown-group", component: "kube-apiserver",
		upstream: "k8s.io/apiserver v0.31.14 pkg/server/options/api_enablement.go APIEnablementOptions.Validate",
		bad:      "  runtimeConfig:\n    foo.example.com/v1: \"true\"\n", good: "  runtimeConfig:\n    api/v1: \"true\"\n",
		want: []string{`spec.runtimeConfig["foo.example.com/v1"]`, "unknown api groups foo.example.com", "networking.k8s.io"}},
	{name: "runtime config of an unregistered version", rule: "runtime-config-unregistered-version", component: "kube-apiserver",
		upstream: "k8s.io/apiserver v0.31.14 pkg/server/resourceconfig/helpers.go MergeAPIResourceConfigs",
		bad:      "  runtimeConfig:\n    apps/v9: \"true\"\n", good: "  runtimeConfig:\n    apps/v1beta2: \"false\"\n",
		want: []string{`spec.runtimeConfig["apps/v9"]`, "group version apps/v9 that has not been registered", "valid: v1, v1beta2, v1beta1"}},
	{name: "runtime config resource in upper case", rule: "runtime-config-resource-case", component: "kube-apiserver",
		upstream: "k8s.io/apiserver v0.31.14 pkg/server/resourceconfig/helpers.go MergeAPIResourceConfigs",
		bad:      "  runtimeConfig:\n    batch/v1/CronJobs: \"false\"\n", good: "  runtimeConfig:\n    batch/v1/cronjobs: \"false\"\n",
		want: []string{`spec.runtimeConfig["batch/v1/CronJobs"]`, "resource is always lowercase plural", "batch/v1/cronjobs"}},
	{name: "flowcontrol API off", rule: "flowcontrol-api-off", component: "kube-apiserver",
		upstream: "k8s.io/kubernetes v1.31.14 pkg/controlplane/apiserver/options/validation.go validateAPIPriorityAndFairness",
		bad:      "  runtimeConfig:\n    flowcontrol.apiserver.k8s.io/v1: \"false\"\n", good: "  runtimeConfig:\n    flowcontrol.apiserver.k8s.io/v1: \"true\"\n",
		want: []string{`spec.runtimeConfig["flowcontrol.apiserver.k8s.io/v1"]`, "conflicts with --enable-priority-and-fairness=true"}},
	{name: "anonymous section with its gate off", component: "kube-apiserver",
		upstream: "k8s.io/apiserver v0.31.14 pkg/apis/apiserver/validation/validation.go ValidateAuthenticationConfiguration",
		bad:      "", good: "  featureGates:\n    AnonymousAuthConfigurableEndpoints: true\n",
		authn: anonAuthn,
		want:  []string{"builtin:fixtures/authn.yaml:3:", "anonymous: Forbidden: anonymous is not supported when AnonymousAuthConfigurableEnpoints feature gate is disabled", "spec.featureGates.AnonymousAuthConfigurableEndpoints"}},
	{name: "anonymous disabled with conditions", component: "kube-apiserver",
		upstream: "k8s.io/apiserver v0.31.14 pkg/apis/apiserver/validation/validation.go ValidateAuthenticationConfiguration",
		bad:      "  featureGates:\n    AnonymousAuthConfigurableEndpoints: true\n", good: "  featureGates:\n    AnonymousAuthConfigurableEndpoints: true\n",
		authn: anonAuthn, badAuthn: strings.Replace(anonAuthn, "enabled: true", "enabled: false", 1),
		want: []string{"builtin:fixtures/authn.yaml:5:", "anonymous.conditions: Invalid value: enabled should be set to true when conditions are defined"}},
	{name: "authentication config with an unknown field", component: "kube-apiserver",
		upstream: "k8s.io/kubernetes v1.31.14 pkg/kubeapiserver/options/authentication.go loadAuthenticationConfigFromData (strict decoding)",
		bad:      "", good: "",
		authn: minimalAuthn, badAuthn: minimalAuthn + "anonymus:\n  enabled: true\n",
		want: []string{"builtin:fixtures/authn.yaml:3:", "anonymus", `strict decoding error: unknown field "anonymus"`}},
}

// caseCatalog is a catalog holding labs/x.yaml made of goodNodes and spec,
// with fixtures/authn.yaml when authn is set.
func caseCatalog(t *testing.T, spec, authn string) *lab.Catalog {
	t.Helper()
	fsys := fstest.MapFS{}
	if authn != "" {
		fsys["fixtures/authn.yaml"] = &fstest.MapFile{Data: []byte(authn)}
		spec += "  apiServer:\n    authenticationConfig: ../fixtures/authn.yaml\n"
	}
	fsys["labs/x.yaml"] = &fstest.MapFile{Data: []byte(labFile("x", goodNodes+spec))}
	c := lab.NewCatalog()
	if err := c.AddBuiltin(fsys, "labs"); err != nil {
		t.Fatal(err)
	}
	return c
}

func (tc componentCase) resolve(t *testing.T, bad bool) (*lab.Resolved, error) {
	t.Helper()
	spec, authn := tc.good, tc.authn
	if bad {
		spec = tc.bad
		if tc.badAuthn != "" {
			authn = tc.badAuthn
		}
	}
	return caseCatalog(t, spec, authn).Resolve("x", lab.ResolveOptions{})
}

// TestComponentRules: validate refuses, in one line naming file, line,
// field, what is valid and the upstream reason, what the 1.31 components
// refuse, and accepts the nearest value they accept.
func TestComponentRules(t *testing.T) {
	for _, tc := range componentCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.resolve(t, true)
			if err == nil {
				t.Fatalf("accepted; %s (%s) refuses it", tc.component, tc.upstream)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if _, err := tc.resolve(t, false); err != nil {
				t.Errorf("good value refused: %v", err)
			}
		})
	}
}

// TestEveryRuleHasACase keeps the table and the cross-check together: a
// row without a case would never meet the real binaries.
func TestEveryRuleHasACase(t *testing.T) {
	for _, r := range lab.Rules131() {
		if !slices.ContainsFunc(componentCases, func(c componentCase) bool { return c.rule == r.ID }) {
			t.Errorf("rule %s (%s) has no case in componentCases", r.ID, r.Source)
		}
		if r.Upstream == "" || r.Source == "" || r.Component == "" {
			t.Errorf("rule %s lacks its upstream message, source or component", r.ID)
		}
	}
	for _, c := range componentCases {
		if c.rule != "" && !slices.ContainsFunc(lab.Rules131(), func(r lab.Rule) bool { return r.ID == c.rule }) {
			t.Errorf("case %q names rule %q, which the table does not have", c.name, c.rule)
		}
	}
}

// TestBuiltinLabsPassComponentRules: every shipped lab passes the table
// and the authentication config validation (Resolve runs both).
func TestBuiltinLabsPassComponentRules(t *testing.T) {
	c := builtin(t)
	for _, name := range c.Names() {
		if _, err := c.Resolve(name, lab.ResolveOptions{}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestAuthnGatesDoNotLeak: validating with a lab's gates leaves
// k8s.io/apiserver's global gate as it was, so the next lab is judged by
// its own gates only.
func TestAuthnGatesDoNotLeak(t *testing.T) {
	on := map[string]bool{"AnonymousAuthConfigurableEndpoints": true}
	if err := lab.ValidateAuthenticationConfig([]byte(anonAuthn), on, nil, "a.yaml"); err != nil {
		t.Fatalf("gate on: %v", err)
	}
	if err := lab.ValidateAuthenticationConfig([]byte(anonAuthn), nil, nil, "a.yaml"); err == nil {
		t.Fatal("gate left on after the previous call")
	}
	// AllAlpha reaches the gate as it does in the apiserver.
	if err := lab.ValidateAuthenticationConfig([]byte(anonAuthn), map[string]bool{"AllAlpha": true}, nil, "a.yaml"); err != nil {
		t.Fatalf("AllAlpha: %v", err)
	}
	// A JWT issuer may not be the service-account issuer kubeadm sets.
	jwt := minimalAuthn + "jwt:\n- issuer:\n    url: " + lab.ServiceAccountIssuer + "\n    audiences: [a]\n  claimMappings:\n    username:\n      claim: sub\n      prefix: \"\"\n"
	err := lab.ValidateAuthenticationConfig([]byte(jwt), nil, []string{lab.ServiceAccountIssuer}, "a.yaml")
	if err == nil || !strings.Contains(err.Error(), "a.yaml:5: jwt[0].issuer.url") {
		t.Fatalf("got %v, want a refusal at a.yaml:4 jwt[0].issuer.url", err)
	}
}

// TestComponentRuleNamesTheLabThatSetIt: a bad value from an included lab
// is reported at that lab's file and line.
func TestComponentRuleNamesTheLabThatSetIt(t *testing.T) {
	fsys := fstest.MapFS{
		"labs/x.yaml":   {Data: []byte(labFile("x", goodNodes+"  include: [net]\n"))},
		"labs/net.yaml": {Data: []byte(labFile("net", "  networking:\n    podSubnet: 10.244.0.0/25\n"))},
	}
	c := lab.NewCatalog()
	if err := c.AddBuiltin(fsys, "labs"); err != nil {
		t.Fatal(err)
	}
	_, err := c.Resolve("x", lab.ResolveOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "builtin:labs/net.yaml:7: spec.networking.podSubnet:") {
		t.Fatalf("got %v, want the refusal at builtin:labs/net.yaml:7", err)
	}
}
