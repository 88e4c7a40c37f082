package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kindlab "github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/bundle"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/render"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	s := &cli.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	code := cli.Execute(context.Background(), NewCommand(s, "test"), s, args)
	return code, out.String(), errOut.String()
}

func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("KINDLAB_STATE_DIR", filepath.Join(dir, "state"))
	t.Setenv("KUBECONFIG", filepath.Join(dir, "kubeconfig"))
	return dir
}

// smallBundle makes a real bundle of a built-in lab without a cluster.
func smallBundle(t *testing.T, dir string) string {
	t.Helper()
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("pv-last-transition-time", lab.ResolveOptions{KnownChecks: check.Names()})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := render.Render(r, render.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "pv.tar.gz")
	if _, err := bundle.Create(context.Background(), bundle.Input{Catalog: c, Plan: plan}, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func oneErrorLine(t *testing.T, errOut string) string {
	t.Helper()
	s := strings.TrimSpace(errOut)
	if strings.Contains(s, "\n") || !strings.HasPrefix(s, "ERROR: ") {
		t.Fatalf("want one ERROR line, got %q", errOut)
	}
	return strings.TrimPrefix(s, "ERROR: ")
}

// An unusable bundle is a bad argument: exit 2, one line naming the file,
// and nothing created (the bundle is read whole before anything else).
func TestReplayRefusesUnusableBundles(t *testing.T) {
	dir := isolate(t)
	good := smallBundle(t, dir)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.tar.gz")
	os.WriteFile(truncated, data[:len(data)*2/3], 0o644)
	newer := filepath.Join(dir, "newer.tar.gz")
	writeNewer(t, good, newer)
	for file, want := range map[string]string{
		truncated:                            truncated + ": corrupt or truncated bundle: ",
		newer:                                newer + ": bundle format version 7 is newer than this kindlab reads (1): use a newer kindlab",
		filepath.Join(dir, "missing.tar.gz"): filepath.Join(dir, "missing.tar.gz") + ": cannot read it: no such file or directory",
	} {
		code, _, errOut := run(t, "replay", file)
		line := oneErrorLine(t, errOut)
		if !strings.HasPrefix(line, want) {
			t.Errorf("replay %s: %q, want it to start with %q", filepath.Base(file), line, want)
		}
		if code != cli.ExitUsage {
			t.Errorf("replay %s: exit %d, want %d", filepath.Base(file), code, cli.ExitUsage)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Errorf("a refused replay wrote state: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "kubeconfig")); !os.IsNotExist(err) {
		t.Errorf("a refused replay wrote a kubeconfig: %v", err)
	}
}

// writeNewer rewrites a bundle as a future kindlab might write it.
func writeNewer(t *testing.T, in, out string) {
	t.Helper()
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, _ := gzip.NewReader(f)
	tr := tar.NewReader(gz)
	var buf bytes.Buffer
	gw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if h.Name == bundle.ManifestFile {
			var m map[string]any
			json.Unmarshal(data, &m)
			m["formatVersion"] = 7
			data, _ = json.Marshal(m)
			h.Size = int64(len(data))
		}
		tw.WriteHeader(h)
		tw.Write(data)
	}
	tw.Close()
	gw.Close()
	os.WriteFile(out, buf.Bytes(), 0o644)
}

func TestCreateNeedsALabKindlabBroughtUp(t *testing.T) {
	isolate(t)
	code, _, errOut := run(t, "create")
	if line := oneErrorLine(t, errOut); code != cli.ExitUsage || !strings.Contains(line, "--name") {
		t.Errorf("create without a lab: exit %d, %q", code, line)
	}
	code, _, errOut = run(t, "create", "pv-last-transition-time")
	if line := oneErrorLine(t, errOut); code != cli.ExitUsage || !strings.Contains(line, `cluster "pv-last-transition-time" was not brought up by kindlab`) {
		t.Errorf("create of a lab that is not up: exit %d, %q", code, line)
	}
	code, _, errOut = run(t, "create", "no-such-lab")
	if code != cli.ExitUsage {
		t.Errorf("create of an unknown lab: exit %d, %s", code, errOut)
	}
}

func TestPrintReplay(t *testing.T) {
	var b bytes.Buffer
	err := printReplay(&b, &bundle.ReplayResult{
		Pins: []bundle.PinDiff{{Name: "kind", Recorded: "v0.31.0", Replayed: "v0.31.0", Same: true},
			{Name: "node-image-id", Recorded: "sha256:aaaa", Replayed: "sha256:bbbb"}},
		Checks: []bundle.CheckDiff{{Name: "image-volume", Recorded: check.Pass, Replayed: check.Unsupported, ReplayedReason: "readonly must be true"},
			{Name: "nftables", Recorded: check.Pass, Replayed: check.Pass, Same: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `PIN            RECORDED     REPLAYED
kind           v0.31.0      same
node-image-id  sha256:aaaa  sha256:bbbb

CHECK         RECORDED  REPLAYED     
image-volume  PASS      UNSUPPORTED  DIFFERS
nftables      PASS      PASS         

image-volume: recorded pass, replayed unsupported
  replayed: readonly must be true
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

// Hostile bundles and bad limits end in one line and exit 2 from the CLI,
// with nothing created (issue 12).
func TestReplayRefusesHostileBundles(t *testing.T) {
	dir := isolate(t)
	forge := func(name string, manifest string, extra func(*tar.Writer)) string {
		var buf bytes.Buffer
		gw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(gw)
		tw.WriteHeader(&tar.Header{Name: "bundle.json", Typeflag: tar.TypeReg, Size: int64(len(manifest)), Mode: 0o644})
		tw.Write([]byte(manifest))
		if extra != nil {
			extra(tw)
		}
		tw.Close()
		gw.Close()
		p := filepath.Join(dir, name)
		os.WriteFile(p, buf.Bytes(), 0o644)
		return p
	}
	victim := filepath.Join(dir, "authorized_keys")
	chain := forge("chain.tar.gz", `{"formatVersion":1,"files":[
		{"path":"lab/disk/c","link":"."},
		{"path":"lab/disk/d","link":"c/c/c/c/../../../../`+strings.Repeat("../", 30)+strings.TrimPrefix(victim, "/")+`"},
		{"path":"lab/disk/d","size":4,"sha256":"`+strings.Repeat("0", 64)+`"}]}`, nil)
	huge := forge("huge.tar.gz", `{"formatVersion":1,"files":[{"path":"logs/x","size":1099511627776,"sha256":"`+strings.Repeat("0", 64)+`"}]}`, nil)
	lying := forge("lying.tar.gz", `{"formatVersion":1,"files":[{"path":"logs/x","size":4,"sha256":"`+strings.Repeat("0", 64)+`"}]}`,
		func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: "logs/x", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644})
		})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"replay", chain}, chain + `: bundle.json: "lab/disk/d" appears twice`},
		{[]string{"replay", huge}, huge + ": logs/x (1099511627776 bytes as listed) is larger than the limit of 1Gi (raise it with --max-file-size"},
		{[]string{"replay", lying}, lying + `: entry "logs/x" does not match its size in bundle.json`},
		{[]string{"replay", huge, "--max-total-size", "lots"}, `--max-total-size "lots": want a positive whole number of bytes such as 512Mi, 4Gi or 100M`},
		{[]string{"replay", huge, "--max-file-size", "-1"}, `--max-file-size "-1": want a positive whole number of bytes`},
		{[]string{"replay", huge, "--max-file-size", "10m"}, `--max-file-size "10m": want a positive whole number of bytes such as 512Mi, 4Gi or 100M`},
		{[]string{"replay", huge, "--max-total-size", "0.5"}, `--max-total-size "0.5": want a positive whole number of bytes`},
	} {
		code, _, errOut := run(t, c.args...)
		line := oneErrorLine(t, errOut)
		if code != cli.ExitUsage || !strings.HasPrefix(line, c.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 and a line starting %q", c.args, code, line, c.want)
		}
	}
	if _, err := os.Lstat(victim); !os.IsNotExist(err) {
		t.Errorf("the victim file exists: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Errorf("a refused replay wrote state: %v", err)
	}
}
