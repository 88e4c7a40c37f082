package check

import (
	"fmt"
	"strings"
	"testing"
)

// TestRouteVerdict: how a client's log (upstream's loop, as the client pods
// print it) is judged, and what the reason says when routing is wrong.
func TestRouteVerdict(t *testing.T) {
	zoneOf := map[string]string{"echo-a": "zone-a", "echo-b": "zone-b"}
	loop := func(answers ...string) string {
		var b strings.Builder
		for i, a := range answers {
			fmt.Fprintf(&b, "Date: Mon Nov 30 15:00:%02d UTC 2026 Try: %d\n%s\n", i, i+1, a)
		}
		return b.String()
	}
	rep := func(a string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = a
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		log      string
		zone     string
		sameZone bool
		ok       bool
		want     string
	}{
		{"same zone", loop(rep("echo-a", 12)...), "zone-a", true, true, "the latest 10 answers from echo-a (zone-a) ×10"},
		// Answers before kube-proxy caught up are not held against it.
		{"converged", loop(append(rep("echo-b", 5), rep("echo-a", 10)...)...), "zone-a", true, true, "echo-a (zone-a) ×10"},
		{"too few", loop(rep("echo-a", 4)...), "zone-a", true, false, "4 answer(s) so far, waiting for 10 in a row"},
		{"left the zone", loop(append(rep("echo-a", 10), "echo-b", "echo-a", "echo-a")...), "zone-a", true, false,
			"answered by echo-b in zone-b, not by zone-a's endpoint (echo-a): PreferClose did not keep the traffic in the client's zone (then 2 right answer(s), want 10 in a row)"},
		{"fallback", loop(append(rep("echo-a", 6), rep("echo-b", 4)...)...), "zone-c", false, true, "echo-a (zone-a) ×6, echo-b (zone-b) ×4"},
		{"fallback fails", loop(append(rep("echo-a", 10), tdFailed+" curl exit 28")...), "zone-c", false, false,
			"a request failed (" + tdFailed + " curl exit 28): the Service must answer clients in every zone (then 0 right answer(s)"},
		{"stranger", loop(append(rep("echo-a", 10), "<html>")...), "zone-c", false, false, `answered "<html>", not by one of the Service's ready pods (echo-a in zone-a, echo-b in zone-b)`},
		{"zone without endpoint, same-zone asked", loop(rep("echo-a", 10)...), "zone-c", true, false, "not by zone-c's endpoint (none)"},
	} {
		ok, why := routeVerdict(tc.log, tc.zone, zoneOf, tc.sameZone)
		if ok != tc.ok || !strings.Contains(why, tc.want) {
			t.Errorf("%s: got %t %q, want %t containing %q", tc.name, ok, why, tc.ok, tc.want)
		}
	}
}
