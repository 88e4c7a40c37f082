// Package conformance runs upstream's own end-to-end tests (e2e.test of
// k8s.io/kubernetes v1.31.14, built by fixtures/e2ebin) against a running
// lab: the tests that prove the features the lab shows, with the images
// they need coming through the lab's registry mirror, a progress line per
// test as it finishes, and the results read from ginkgo's JSON report.
package conformance

import (
	"regexp"
	"slices"
	"strings"
)

// Focus is the upstream tests that prove one feature a lab shows.
type Focus struct {
	// Check is the lab check (provision/check name) whose feature these
	// tests prove, e.g. "multi-service-cidr".
	Check string `json:"check"`
	// Regexp is a ginkgo focus regular expression matching the tests'
	// full texts (container texts, leaf text and [labels]).
	Regexp string `json:"regexp"`
}

// servicesTests are the Services conformance tests of test/e2e/network/
// service.go (v1.31.14) that send traffic through kube-proxy's rules:
// ClusterIP, NodePort, session affinity, multiport, and one port on TCP and
// UDP. The others there only read or write API objects.
var servicesTests = []string{
	"should serve a basic endpoint from pods",
	"should serve multiport endpoints from pods",
	"should be able to create a functioning NodePort service",
	"should have session affinity work for service with type clusterIP",
	"should have session affinity work for NodePort service",
	"should serve endpoints on same port and different protocols",
}

func servicesFocus() string {
	alts := make([]string, len(servicesTests))
	for i, t := range servicesTests {
		alts[i] = regexp.QuoteMeta(t)
	}
	return `\[sig-network\] Services (` + strings.Join(alts, "|") + `)`
}

// focusByCheck maps a lab check to upstream's tests of its feature.
// Checks without upstream tests that run on a kind cluster (node-bound
// tokens, kube-proxy's health server, anonymous auth endpoints, image
// volumes, device health) have none.
var focusByCheck = []Focus{
	{Check: "multi-service-cidr", Regexp: `\[Feature:ServiceCIDRs\]`},
	{Check: "traffic-distribution", Regexp: `\[Feature:Traffic Distribution\]`},
	{Check: "pv-last-transition-time", Regexp: regexp.QuoteMeta("[sig-storage] PersistentVolumes CSI Conformance should run through the lifecycle of a PV and a PVC")},
	{Check: "nftables", Regexp: servicesFocus()},
	// SkipIfAppArmorNotSupported gates these on --node-os-distro; see
	// Select.
	{Check: "apparmor", Regexp: regexp.QuoteMeta("[sig-node] AppArmor load AppArmor profiles")},
}

// Selection is what a run of e2e.test covers.
type Selection struct {
	// Focus is one entry per feature of the lab that has upstream tests,
	// in the lab's check order.
	Focus []Focus `json:"focus,omitempty"`
	// Left are the lab's checks left out and why, e.g. apparmor on a host
	// without AppArmor.
	Left map[string]string `json:"left,omitempty"`
	// NodeOSDistro is e2e.test's --node-os-distro: "ubuntu" when the
	// AppArmor tests run (upstream skips them on any other distro name,
	// whatever the kernel has), "" otherwise.
	NodeOSDistro string `json:"nodeOSDistro,omitempty"`
}

// Regexp is the ginkgo focus of the whole selection ("" when it is empty).
func (s Selection) Regexp() string {
	alts := make([]string, len(s.Focus))
	for i, f := range s.Focus {
		alts[i] = f.Regexp
	}
	return strings.Join(alts, "|")
}

// Select is upstream's tests for the features of a lab with these checks.
// hostAppArmor says whether this host's kernel enforces AppArmor (kind
// nodes share it); without it the AppArmor tests are left out with the
// reason, as `kindlab check` reports the feature unsupported.
func Select(checks []string, hostAppArmor bool) Selection {
	var s Selection
	for _, f := range focusByCheck {
		if !slices.Contains(checks, f.Check) {
			continue
		}
		if f.Check == "apparmor" {
			if !hostAppArmor {
				if s.Left == nil {
					s.Left = map[string]string{}
				}
				s.Left[f.Check] = "this host's kernel has no AppArmor (/sys/module/apparmor/parameters/enabled), which kind nodes share"
				continue
			}
			s.NodeOSDistro = "ubuntu"
		}
		s.Focus = append(s.Focus, f)
	}
	// Keep the lab's order.
	slices.SortStableFunc(s.Focus, func(a, b Focus) int {
		return slices.Index(checks, a.Check) - slices.Index(checks, b.Check)
	})
	return s
}

// Left is a feature of a lab whose upstream tests were left out.
type Left struct {
	// Check is the lab check, e.g. "apparmor".
	Check string
	// Tests names the upstream tests left out, e.g. "[sig-node] AppArmor
	// load AppArmor profiles".
	Tests string
	// Why is the reason, from Selection.Left.
	Why string
}

// LeftOut is Selection.Left with the tests each check stands for, in
// the order of focusByCheck.
func (s Selection) LeftOut() []Left {
	var out []Left
	for _, f := range focusByCheck {
		if why, ok := s.Left[f.Check]; ok {
			// The focus regexps are regexp.QuoteMeta of the test names
			// (or plain labels): dropping the escapes gives the name back.
			out = append(out, Left{Check: f.Check, Tests: strings.ReplaceAll(f.Regexp, `\`, ""), Why: why})
		}
	}
	return out
}

// DefaultSkip is the ginkgo skip used unless --skip overrides it: tests
// that disrupt the cluster (restart nodes or components) or that upstream
// marks flaky, as sonobuoy's non-disruptive conformance mode skips them.
const DefaultSkip = `\[Disruptive\]|\[Flaky\]`
