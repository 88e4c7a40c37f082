package conformance

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The full texts of the upstream tests each feature must select, as
// e2e.test v1.31.14 names them (its JSON report in testdata).
var upstreamNames = map[string][]string{
	"multi-service-cidr":      {"[sig-network] [Feature:ServiceCIDRs] should create Services and servce on different Service CIDRs"},
	"traffic-distribution":    {"[sig-network] [Feature:Traffic Distribution] when Service has trafficDistribution=PreferClose should route traffic to an endpoint that is close to the client"},
	"pv-last-transition-time": {"[sig-storage] PersistentVolumes CSI Conformance should run through the lifecycle of a PV and a PVC [Conformance]"},
	"nftables": {
		"[sig-network] Services should serve a basic endpoint from pods [Conformance]",
		"[sig-network] Services should serve multiport endpoints from pods [Conformance]",
		"[sig-network] Services should be able to create a functioning NodePort service [Conformance]",
		"[sig-network] Services should have session affinity work for service with type clusterIP [LinuxOnly] [Conformance]",
		"[sig-network] Services should have session affinity work for NodePort service [LinuxOnly] [Conformance]",
		"[sig-network] Services should serve endpoints on same port and different protocols [Conformance]",
	},
	"apparmor": {"[sig-node] AppArmor load AppArmor profiles should enforce an AppArmor profile specified on the pod"},
}

// Tests of the same areas that must stay out: API-only Services tests,
// other PersistentVolume tests, disruptive ones.
var notSelected = []string{
	"[sig-network] Services should provide secure master service [Conformance]",
	"[sig-network] Services should be able to switch session affinity for service with type clusterIP [LinuxOnly] [Conformance]",
	"[sig-network] Services should delete a collection of services [Conformance]",
	"[sig-storage] PersistentVolumes NFS with Single PV - PVC pairs create a PVC and a pre-bound PV: test write access",
}

func TestSelectPerFeature(t *testing.T) {
	all := []string{"apparmor", "kube-proxy-health", "pv-last-transition-time", "nftables", "node-bound-token",
		"multi-service-cidr", "traffic-distribution", "image-volume", "anonymous-auth"}
	for _, apparmor := range []bool{false, true} {
		s := Select(all, apparmor)
		var checks []string
		for _, f := range s.Focus {
			checks = append(checks, f.Check)
		}
		want := []string{"pv-last-transition-time", "nftables", "multi-service-cidr", "traffic-distribution"}
		if apparmor {
			want = append([]string{"apparmor"}, want...)
		}
		if !slices.Equal(checks, want) {
			t.Errorf("apparmor=%v: focus on %v, want %v (the lab's order)", apparmor, checks, want)
		}
		if apparmor != (s.NodeOSDistro == "ubuntu") {
			t.Errorf("apparmor=%v: --node-os-distro %q", apparmor, s.NodeOSDistro)
		}
		if got := s.Left["apparmor"]; apparmor != (got == "") {
			t.Errorf("apparmor=%v: left %q", apparmor, got)
		}
		re := regexp.MustCompile(s.Regexp())
		for check, names := range upstreamNames {
			for _, n := range names {
				if re.MatchString(n) != slices.Contains(want, check) {
					t.Errorf("apparmor=%v: focus matches %q: %v", apparmor, n, re.MatchString(n))
				}
			}
		}
		for _, n := range notSelected {
			if re.MatchString(n) {
				t.Errorf("focus matches %q", n)
			}
		}
	}
	if s := Select([]string{"anonymous-auth", "image-volume"}, true); s.Regexp() != "" || len(s.Focus) != 0 {
		t.Errorf("a lab without upstream tests selected %+v", s)
	}
	if s := Select([]string{"nftables"}, false); !regexp.MustCompile(s.Regexp()).MatchString(upstreamNames["nftables"][5]) ||
		regexp.MustCompile(s.Regexp()).MatchString(upstreamNames["multi-service-cidr"][0]) {
		t.Errorf("nftables alone: %q", s.Regexp())
	}
	skip := regexp.MustCompile(DefaultSkip)
	if !skip.MatchString("[sig-network] Services should work after restarting apiserver [Disruptive]") || skip.MatchString(upstreamNames["nftables"][0]) {
		t.Errorf("default skip %q", DefaultSkip)
	}
}

func TestArgs(t *testing.T) {
	opts := Options{Kubeconfig: "/k", Kubectl: "/bin/kubectl", Focus: "a|b", Skip: "c", ReportDir: "/r",
		Timeout: 90 * time.Minute, RepoList: "/r/repo-list.yaml", NodeOSDistro: "ubuntu"}
	got := strings.Join(Args(opts), " ")
	want := "--kubeconfig=/k --kubectl-path=/bin/kubectl --provider=skeleton --report-dir=/r --ginkgo.focus=a|b --ginkgo.skip=c " +
		"--ginkgo.json-report=/r/report.json --ginkgo.no-color --ginkgo.v --ginkgo.timeout=1h30m0s " +
		"--kube-test-repo-list=/r/repo-list.yaml --node-os-distro=ubuntu"
	if got != want {
		t.Errorf("args\n%s\nwant\n%s", got, want)
	}
	got = strings.Join(Args(Options{Kubeconfig: "/k", Kubectl: "kubectl", Focus: "a", ReportDir: "/r"}), " ")
	if strings.Contains(got, "repo-list") || strings.Contains(got, "node-os") || strings.Contains(got, "timeout") {
		t.Errorf("optional flags given when unset: %s", got)
	}
}
