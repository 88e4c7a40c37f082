package app_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/bundle"
)

// An image reference starting with "-" is no reference (distribution's
// grammar, as Docker and containerd parse it) and would read as a flag on
// a docker or kind command line: refused wherever kindlab takes one, a
// flag, a lab file, a bundle's run settings, exit 2 naming it.
func TestImageReferenceLikeAFlagRefused(t *testing.T) {
	dir := isolate(t)
	hex := strings.Repeat("0", 64)
	labFile := filepath.Join(dir, "flaglike.yaml")
	if err := os.WriteFile(labFile, []byte("apiVersion: kindlab.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: flaglike\nspec:\n  nodeImage: \"-v/etc@sha256:"+hex+"\"\n  nodes:\n  - role: control-plane\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := replayableBundle(t, dir)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "flaglike.tar.gz")
	if err := os.WriteFile(bad, rewriteBundle(t, data, func(name string, b []byte) []byte {
		if name == bundle.ManifestFile {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			m["run"].(map[string]any)["nodeImage"] = "-v/etc@sha256:" + hex
			b, _ = json.Marshal(m)
		}
		return b
	}), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"render", "base", "--image=--privileged"}, `--image: "--privileged" is not an image reference`},
		{[]string{"render", "base", "--image", "-v/etc@sha256:" + hex}, `--image: "-v/etc@sha256:`},
		{[]string{"render", "base", "--registry-image=--privileged"}, `--registry-image: "--privileged" is not an image reference`},
		{[]string{"validate", labFile}, labFile + `:6: spec.nodeImage: "-v/etc@sha256:`},
		{[]string{"bundle", "replay", bad, "--name", "flaglike"}, bad + `: bundle.json: run.nodeImage: "-v/etc@sha256:`},
	} {
		code, _, errOut := run(t, tc.args...)
		if code != cli.ExitUsage || strings.Count(errOut, "ERROR") != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, want 2 and one ERROR line with %q: %q", tc.args, code, tc.want, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "clusters")); err == nil {
		t.Error("a refused command wrote state")
	}
}
