package conformance

import (
	"testing"
)

// The progress follower, fed e2e.test's real output of a run (testdata
// RUN-e2e.log.gz), reports each test once, in the order it ran, with the
// names, states and times of the same run's JSON report; fed in odd chunks,
// it reports the same.
func TestProgressFollowsRealRuns(t *testing.T) {
	for _, run := range realRuns {
		t.Run(run, func(t *testing.T) { testProgress(t, run) })
	}
}

// realRuns are the runs of `kindlab conformance all-features` whose
// output and report are in testdata.
var realRuns = []string{"offline-agnhost"}

func testProgress(t *testing.T, run string) {
	log := readTestdata(t, run+"-e2e.log.gz")
	rep, err := ParseReport(readTestdata(t, run+"-report.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{len(log), 1, 7, 4096} {
		var got []Progress
		w := newProgressWriter(func(p Progress) { got = append(got, p) })
		for i := 0; i < len(log); i += chunk {
			end := min(i+chunk, len(log))
			if n, err := w.Write(log[i:end]); n != end-i || err != nil {
				t.Fatalf("write: %d, %v", n, err)
			}
		}
		if len(got) != len(rep.Results) {
			t.Fatalf("chunk %d: %d progress lines, the report has %d tests", chunk, len(got), len(rep.Results))
		}
		for i, p := range got {
			r := rep.Results[i]
			if p.Name != r.Name || p.State != r.State || p.Done != i+1 || p.Total != len(rep.Results) {
				t.Errorf("chunk %d: line %d: %+v, report %s %q", chunk, i, p, r.State, r.Name)
			}
			if d := p.Took.Seconds() - r.Seconds; d > 0.01 || d < -0.01 {
				t.Errorf("chunk %d: %s took %v, report %.3fs", chunk, p.Name, p.Took, r.Seconds)
			}
		}
	}
}

func TestStripLabels(t *testing.T) {
	for in, want := range map[string]string{
		"[sig-network] Services should serve a basic endpoint from pods [Conformance] [sig-network, Conformance]":                                     "[sig-network] Services should serve a basic endpoint from pods [Conformance]",
		"[sig-storage] PersistentVolumes CSI Conformance should run through the lifecycle of a PV and a PVC [Conformance] [sig-storage, Conformance]": "[sig-storage] PersistentVolumes CSI Conformance should run through the lifecycle of a PV and a PVC [Conformance]",
		"[sig-node] AppArmor load AppArmor profiles should enforce an AppArmor profile specified on the pod [sig-node]":                               "[sig-node] AppArmor load AppArmor profiles should enforce an AppArmor profile specified on the pod",
		"a test without labels [Conformance]": "a test without labels [Conformance]",
		"plain":                               "plain",
	} {
		if got := stripLabels(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
