package up

import (
	"os"
	"path/filepath"
	"testing"
)

// The kubeconfig up records is the file kind writes the context to:
// kubectl's rule over $KUBECONFIG (the only file; else the first that
// exists; else the last), absolute; --kubeconfig as given; "" for kind's
// default without $KUBECONFIG, and for a fleet's member.
func TestKubeconfigFor(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	if err := os.WriteFile(b, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  string
		opts Options
		want string
	}{
		{env: "", want: ""},
		{env: "rel/config", want: filepath.Join(dir, "rel", "config")},
		{env: a + string(filepath.ListSeparator) + b + string(filepath.ListSeparator) + c, want: b},
		{env: a + string(filepath.ListSeparator) + c, want: c},
		{env: a, opts: Options{Kubeconfig: "given"}, want: "given"},
		{env: a, opts: Options{Fleet: "f"}, want: ""},
	} {
		t.Setenv("KUBECONFIG", tc.env)
		if got := kubeconfigFor(tc.opts); got != tc.want {
			t.Errorf("KUBECONFIG=%q, %+v: %q, want %q", tc.env, tc.opts, got, tc.want)
		}
	}
}
