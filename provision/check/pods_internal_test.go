package check

import (
	"strings"
	"testing"
)

// TestOldContainerd: the versions a kubelet reports in
// node.status.nodeInfo.containerRuntimeVersion, from kind's node images
// (v0.24.0: 1.7.18; v0.27.0: 2.0.x; v0.29.0: 2.1.1; v0.31.0: 2.2.0) and
// CRI-O, which this reason is not about.
func TestOldContainerd(t *testing.T) {
	for v, old := range map[string]bool{
		"containerd://1.7.18": true, "containerd://2.0.3": true, "containerd://v2.0.0": true,
		"containerd://2.1.1": false, "containerd://2.2.0": false, "containerd://3.0.0": false,
		"cri-o://1.31.0": false, "": false, "containerd://garbage": false,
	} {
		reason := oldContainerd(v)
		if (reason != "") != old {
			t.Errorf("%q: reason %q, want old=%t", v, reason, old)
		}
		if old && (!strings.Contains(reason, "from 2.1.0 on") || !strings.Contains(reason, "failed to mkdir")) {
			t.Errorf("%q: reason %q lacks the version and containerd's own failure", v, reason)
		}
	}
}
