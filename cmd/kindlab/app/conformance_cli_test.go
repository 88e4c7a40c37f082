package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad input to `kindlab conformance` is one ERROR line naming the flag (or
// lab) and what is valid, exit 2, before any engine is asked or any file
// written.
func TestConformanceBadInput(t *testing.T) {
	dir := isolate(t)
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	notExec := filepath.Join(dir, "e2e.test")
	if err := os.WriteFile(notExec, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"no lab", "", []string{"conformance"}, "accepts 1 arg"},
		{"two labs", "", []string{"conformance", "nftables", "apparmor"}, "accepts 1 arg"},
		{"bad focus", "", []string{"conformance", "nftables", "--focus", "[sig-network"}, `--focus "[sig-network": not a regular expression`},
		{"bad skip", "", []string{"conformance", "nftables", "--skip", "(Serial"}, `--skip "(Serial": not a regular expression`},
		{"zero timeout", "", []string{"conformance", "nftables", "--timeout", "0s"}, "--timeout 0s: want a positive duration"},
		{"negative timeout", "", []string{"conformance", "nftables", "--timeout", "-5m"}, "--timeout -5m0s: want a positive duration"},
		{"timeout not a duration", "", []string{"conformance", "nftables", "--timeout", "soon"}, `invalid argument "soon" for "--timeout"`},
		{"missing e2e.test", "", []string{"conformance", "nftables", "--e2e-test", filepath.Join(dir, "nope")}, "--e2e-test " + filepath.Join(dir, "nope") + ": no such file"},
		{"e2e.test not executable", "", []string{"conformance", "nftables", "--e2e-test", notExec}, ": not executable (valid: an executable file"},
		{"e2e.test a directory", "", []string{"conformance", "nftables", "--e2e-test", dir}, ": is a directory"},
		{"missing kubectl", "", []string{"conformance", "nftables", "--kubectl", filepath.Join(dir, "nope")}, "--kubectl " + filepath.Join(dir, "nope") + ": no such file"},
		{"report dir is a file", "", []string{"conformance", "nftables", "--report-dir", file}, "--report-dir " + file + ": is a file"},
		{"bad output", "", []string{"conformance", "nftables", "-o", "yaml"}, `--output: "yaml" is not a format`},
		{"unknown lab", "", []string{"conformance", "no-such-lab"}, "no-such-lab"},
		{"lab without upstream tests", "", []string{"conformance", "anonymous-auth"}, "lab anonymous-auth shows no feature with upstream e2e tests here"},
		{"env e2e.test missing", filepath.Join(dir, "gone"), []string{"conformance", "nftables"}, "KINDLAB_E2E_TEST=" + filepath.Join(dir, "gone") + ": no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KINDLAB_E2E_TEST", tc.env)
			code, out, errOut := run(t, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, errOut)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "ERROR: ") || !strings.Contains(lines[0], tc.want) {
				t.Errorf("stderr %q, want one ERROR line containing %q", errOut, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "state", "conformance")); err == nil {
				t.Error("a report directory was created for bad input")
			}
		})
	}
}
