package migrate

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
)

const legacy = `apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations:
    container.apparmor.security.beta.kubernetes.io/app: localhost/my-profile
spec:
  containers:
  - name: app
    image: nginx
`

func run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewCommand(&cli.Streams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestAppArmorWriteInPlace(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	for _, f := range []string{a, b} {
		if err := os.WriteFile(f, []byte(legacy), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, err := run(t, "", "apparmor", "-w", a, b)
	if err != nil {
		t.Fatal(err)
	}
	if out != "" || !strings.Contains(errOut, "a.yaml: 1 annotation(s) migrated") {
		t.Errorf("stdout %q stderr %q", out, errOut)
	}
	for _, f := range []string{a, b} {
		got, _ := os.ReadFile(f)
		if strings.Contains(string(got), "container.apparmor") || !strings.Contains(string(got), "localhostProfile: my-profile") {
			t.Errorf("%s not migrated:\n%s", f, got)
		}
		if st, _ := os.Stat(f); st.Mode().Perm() != 0o640 {
			t.Errorf("%s mode %v, want 0640 kept", f, st.Mode().Perm())
		}
	}
}

func TestAppArmorStdinToStdout(t *testing.T) {
	out, _, err := run(t, legacy, "apparmor", "-")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "type: Localhost") || strings.Contains(out, "container.apparmor") {
		t.Errorf("output:\n%s", out)
	}
}

// One bad file leaves every file untouched.
func TestAppArmorBadValueWritesNothing(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte(legacy), 0o644)
	os.WriteFile(bad, []byte(strings.Replace(legacy, "localhost/my-profile", "localhost", 1)), 0o644)
	_, _, err := run(t, "", "apparmor", "-w", good, bad)
	if err == nil || !strings.Contains(err.Error(), `bad.yaml: document 1 (Pod p): annotation container.apparmor.security.beta.kubernetes.io/app: bad value "localhost"`) {
		t.Fatalf("error %v", err)
	}
	if got, _ := os.ReadFile(good); string(got) != legacy {
		t.Errorf("good.yaml was rewritten although bad.yaml failed")
	}
}

// Input is bounded as a lab's manifest files are: a stream that never
// ends (/dev/zero, a hostile pipe) or a huge file is refused after 4 MiB,
// exit 2, nothing written.
func TestAppArmorInputIsBounded(t *testing.T) {
	big := strings.Repeat(legacy+"---\n", (4<<20)/len(legacy)+1)
	_, _, err := run(t, big, "apparmor", "-")
	if err == nil || cli.CodeOf(err) != cli.ExitUsage || !strings.Contains(err.Error(), "standard input: it is larger than 4 MiB") {
		t.Errorf("4 MiB on standard input: %v (exit %d)", err, cli.CodeOf(err))
	}
	f := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(f, []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = run(t, "", "apparmor", "-w", f)
	if err == nil || cli.CodeOf(err) != cli.ExitUsage || !strings.Contains(err.Error(), "big.yaml: cannot read it: it is larger than 4 MiB") {
		t.Errorf("a 4 MiB file: %v (exit %d)", err, cli.CodeOf(err))
	}
	if got, _ := os.ReadFile(f); string(got) != big {
		t.Error("the refused file was changed")
	}
}
