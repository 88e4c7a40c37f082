package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
)

// Bad kit input: one ERROR line naming what is wrong, usage errors exit 2,
// a file that is not a kit exits 1, and nothing is written.
func TestKitBadInput(t *testing.T) {
	dir := isolate(t)
	notKit := filepath.Join(dir, "not-a-kit.tar")
	if err := os.WriteFile(notKit, []byte("just text, not a tar archive at all......"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"kit", "save", "all-features"}, cli.ExitUsage, "--output"},
		{[]string{"kit", "save", "all-features", "-o", filepath.Join(dir, "k.tar"), "--platform", "amd64"}, cli.ExitUsage, "--platform"},
		{[]string{"kit", "save", "no-such-lab", "-o", filepath.Join(dir, "k.tar")}, cli.ExitUsage, "no-such-lab"},
		{[]string{"kit", "load"}, cli.ExitUsage, "arg"},
		{[]string{"kit", "load", filepath.Join(dir, "missing.tar")}, cli.ExitError, "missing.tar"},
		{[]string{"kit", "inspect", notKit}, cli.ExitError, "kit " + notKit},
	} {
		code, _, errOut := run(t, tc.args...)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.code, errOut)
		}
		if strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.HasPrefix(errOut, "ERROR: ") || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: want one ERROR line naming %q, got %q", tc.args, tc.want, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "k.tar")); err == nil {
		t.Error("a failed kit save wrote a kit")
	}
}
