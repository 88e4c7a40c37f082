package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	kindlab "github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
	"github.com/kindlab/kindlab/provision/workload"
)

func builtinCatalog(t *testing.T) *lab.Catalog {
	t.Helper()
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	return c
}

func planFor(t *testing.T, c *lab.Catalog, labName, stateDir string) *render.Plan {
	t.Helper()
	r, err := c.Resolve(labName, lab.ResolveOptions{KnownChecks: check.Names()})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := render.Render(r, render.Options{Name: labName, StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

// create makes a bundle of a lab without a cluster: the lab's files, plan,
// pins and host facts are all it needs, which is what replay uses.
func create(t *testing.T, c *lab.Catalog, labName, out string, edit func(*Input)) *Manifest {
	t.Helper()
	plan := planFor(t, c, labName, filepath.Join(t.TempDir(), "state", "clusters", labName))
	in := Input{Catalog: c, Plan: plan,
		Versions: Versions{Kindlab: "test", Kind: KindVersion()}}
	if edit != nil {
		edit(&in)
	}
	m, err := Create(context.Background(), in, out)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The bundle alone must give back the same lab: same kind config, same
// mounted files, same manifests, same artifact digests, with nothing read
// from the embedded labs.
func TestBuiltinLabRoundTrips(t *testing.T) {
	c := builtinCatalog(t)
	out := filepath.Join(t.TempDir(), "all.tar.gz")
	stateDir := filepath.Join(t.TempDir(), "clusters", "all-features")
	m := create(t, c, "all-features", out, nil)
	orig := planFor(t, c, "all-features", stateDir)

	if m.FormatVersion != FormatVersion || m.Pins.Kind != "v0.31.0" || m.Pins.Kindlab != "test" {
		t.Errorf("manifest pins: format %d, kind %q, kindlab %q", m.FormatVersion, m.Pins.Kind, m.Pins.Kindlab)
	}
	if len(m.Lab.Files) != len(orig.Labs) || m.Lab.Files[0] != "lab/builtin/labs/base.yaml" {
		t.Errorf("lab files %v, want %d starting with base", m.Lab.Files, len(orig.Labs))
	}
	if len(m.Pins.Artifacts) != 1 || !strings.HasPrefix(m.Pins.Artifacts[0].Digest, "sha256:") {
		t.Errorf("artifact pins %+v", m.Pins.Artifacts)
	}
	// The built-in labs hold no secret: a redaction in their files is a
	// false positive that would change what replay runs.
	for _, r := range m.Redactions {
		if strings.HasPrefix(r.File, LabDir+"/") || strings.HasPrefix(r.File, FilesDir+"/") || r.File == KindConfigFile || r.File == PlanFile {
			t.Errorf("redacted in a built-in lab: %+v", r)
		}
	}

	b, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{KindConfigFile, PlanFile, HostFile, "files/authentication-config.yaml"} {
		if _, ok := b.File(f); !ok {
			t.Errorf("bundle lacks %s", f)
		}
	}
	got, err := b.plan(context.Background(), nil, t.TempDir(), "all-features", stateDir, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := orig.KindConfigYAML()
	have, _ := got.KindConfigYAML()
	if string(want) != string(have) {
		t.Errorf("kind config differs:\n%s\nwant:\n%s", have, want)
	}
	if !reflect.DeepEqual(got.Files, orig.Files) || !reflect.DeepEqual(got.Images, orig.Images) ||
		!reflect.DeepEqual(got.Checks, orig.Checks) || !reflect.DeepEqual(got.Workloads, orig.Workloads) {
		t.Errorf("plan differs: files/images/checks/workloads\n%+v\n%+v", got, orig)
	}
	if strings.HasPrefix(got.Resolved.Source, "builtin:") {
		t.Errorf("replayed lab came from the binary: %s", got.Resolved.Source)
	}
	for i, w := range orig.Resolved.Workloads {
		a, _ := workload.Load(w)
		bb, _ := workload.Load(got.Resolved.Workloads[i])
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(bb)
		if string(ja) != string(jb) {
			t.Errorf("workload %s differs after the round trip", w.Name)
		}
	}
	for i, a := range got.Resolved.Artifacts {
		d, err := artifactDigest(a)
		if err != nil || d != m.Pins.Artifacts[i].Digest {
			t.Errorf("artifact %s: digest %s (%v), recorded %s", a.Name, d, err, m.Pins.Artifacts[i].Digest)
		}
	}
}

// A lab on disk that includes a built-in one, with an artifact holding a
// symlink and an empty directory (both count in its digest) and a Secret in
// its manifests (which must not travel).
func TestDiskLabRoundTripsAndItsSecretDoesNot(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proj/labs/mine.yaml", `apiVersion: kindlab.dev/v1alpha1
kind: Lab
metadata:
  name: mine
spec:
  include: [base]
  registry: {enabled: true}
  artifacts:
  - name: data
    source: ../art
    reference: localhost:5001/mine/data:v1
  workloads:
  - name: app
    path: ../manifests
`)
	write("proj/art/a.txt", "hello\n")
	if err := os.Symlink("a.txt", filepath.Join(root, "proj/art/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "proj/art/empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	const secret = "do-not-ship-me-0451"
	write("proj/manifests/app.yaml", `# the app's namespace and its password
apiVersion: v1
kind: Namespace
metadata:
  name: mine
---
apiVersion: v1
kind: Secret
metadata:
  name: pw
  namespace: mine
stringData:
  password: `+secret+`
`)
	c := builtinCatalog(t)
	if _, err := c.AddFile(filepath.Join(root, "proj/labs/mine.yaml")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "mine.tar.gz")
	// A dotfile in a folder the lab names is refused, naming it, and no
	// bundle is written.
	write("proj/manifests/.env", "TOKEN=do-not-ship-me-either\n")
	plan := planFor(t, c, "mine", filepath.Join(t.TempDir(), "state", "clusters", "mine"))
	if _, err := Create(context.Background(), Input{Catalog: c, Plan: plan, Versions: Versions{Kindlab: "test", Kind: KindVersion()}}, out); err == nil ||
		!strings.Contains(err.Error(), ".env is hidden") {
		t.Errorf("a bundle of a lab whose workload folder holds .env: %v, want it refused", err)
	}
	if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refused bundle left %s behind: %v", out, err)
	}
	if err := os.Remove(filepath.Join(root, "proj/manifests/.env")); err != nil {
		t.Fatal(err)
	}
	m := create(t, c, "mine", out, nil)
	wantFiles := []string{"lab/builtin/labs/base.yaml", "lab/disk/labs/mine.yaml"}
	if !reflect.DeepEqual(m.Lab.Files, wantFiles) {
		t.Errorf("lab files %v, want %v", m.Lab.Files, wantFiles)
	}
	var sawLink, sawEmpty bool
	for _, f := range m.Files {
		sawLink = sawLink || (f.Path == "lab/disk/art/link" && f.Link == "a.txt")
		sawEmpty = sawEmpty || (f.Path == "lab/disk/art/empty" && f.Dir)
	}
	if !sawLink || !sawEmpty {
		t.Errorf("symlink kept: %t, empty directory kept: %t", sawLink, sawEmpty)
	}
	if err := Walk(out, func(name string, data []byte) error {
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("%s carries the Secret's value", name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	man, _ := b.File("lab/disk/manifests/app.yaml")
	if !strings.Contains(string(man), "password: "+Redacted) || !strings.Contains(string(man), "kind: Namespace") {
		t.Errorf("redacted manifest:\n%s", man)
	}
	if !hasRedaction(m, "lab/disk/manifests/app.yaml", "Secret value") {
		t.Errorf("redactions %+v do not name the manifest", m.Redactions)
	}
	// Nothing of the original tree is needed any more.
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	got, err := b.plan(context.Background(), nil, t.TempDir(), "mine", t.TempDir(), ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := artifactDigest(got.Resolved.Artifacts[0])
	if err != nil || d != m.Pins.Artifacts[0].Digest {
		t.Errorf("artifact digest after the round trip %s (%v), recorded %s", d, err, m.Pins.Artifacts[0].Digest)
	}
}

func hasRedaction(m *Manifest, file, what string) bool {
	for _, r := range m.Redactions {
		if r.File == file && r.What == what && r.Count > 0 {
			return true
		}
	}
	return false
}

// rewrite copies a bundle entry by entry, letting edit change each
// entry's content (nil drops the entry).
func rewrite(t *testing.T, in, out string, edit func(name string, data []byte) []byte) {
	t.Helper()
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var buf bytes.Buffer
	gw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gw)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if h.Typeflag == tar.TypeReg {
			data = edit(h.Name, data)
			if data == nil {
				continue
			}
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	gw.Close()
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func smallBundle(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "pv.tar.gz")
	create(t, builtinCatalog(t), "pv-last-transition-time", out, nil)
	return out
}

// assertBad checks for one ErrBadBundle line naming file and saying want
// (or one of the |-separated alternatives).
func assertBad(t *testing.T, file string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: opened", want)
	}
	if !errors.Is(err, ErrBadBundle) {
		t.Errorf("%v: not an ErrBadBundle", err)
	}
	msg := err.Error()
	found := false
	for _, w := range strings.Split(want, "|") {
		found = found || strings.Contains(msg, w)
	}
	if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, file+": ") || !found {
		t.Errorf("error %q: want one line starting with %q and containing %q", msg, file+": ", want)
	}
}

func TestNewerFormatVersionIsRefused(t *testing.T) {
	good := smallBundle(t)
	newer := filepath.Join(t.TempDir(), "newer.tar.gz")
	rewrite(t, good, newer, func(name string, data []byte) []byte {
		if name != ManifestFile {
			return data
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		m["formatVersion"] = FormatVersion + 1
		// A newer layout may change anything else too.
		m["files"] = "a newer layout"
		b, _ := json.Marshal(m)
		return b
	})
	_, err := Open(newer)
	assertBad(t, newer, err, "bundle format version 2 is newer than this kindlab reads (1): use a newer kindlab")

	none := filepath.Join(t.TempDir(), "none.tar.gz")
	rewrite(t, good, none, func(name string, data []byte) []byte {
		if name == ManifestFile {
			return []byte(`{"cluster":"x"}`)
		}
		return data
	})
	_, err = Open(none)
	assertBad(t, none, err, "bundle.json has no formatVersion")
}

func TestCorruptOrTruncatedBundleIsRefused(t *testing.T) {
	good := smallBundle(t)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(good); err != nil {
		t.Fatalf("the good bundle: %v", err)
	}
	dir := t.TempDir()
	cases := map[string]struct {
		data []byte
		want string
	}{
		"half":          {data[:len(data)/2], "corrupt or truncated bundle"},
		"no-trailer":    {data[:len(data)-4], "corrupt or truncated bundle"},
		"one-byte-less": {data[:len(data)-1], "corrupt or truncated bundle"},
		"not-gzip":      {[]byte("apiVersion: kindlab.dev/v1alpha1\n"), "not a kindlab bundle: not gzip-compressed"},
		"empty":         {nil, "not a kindlab bundle"},
	}
	flipped := append([]byte(nil), data...)
	flipped[len(flipped)/2] ^= 0xff
	cases["flipped-byte"] = struct {
		data []byte
		want string
	}{flipped, "corrupt or truncated bundle|damaged or altered"}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name+".tar.gz")
			os.WriteFile(p, c.data, 0o644)
			_, err := Open(p)
			assertBad(t, p, err, c.want)
		})
	}

	// Well-formed archives that are not what bundle.json says.
	altered := filepath.Join(dir, "altered.tar.gz")
	rewrite(t, good, altered, func(name string, data []byte) []byte {
		if name == KindConfigFile {
			return bytes.Replace(data, []byte("control-plane"), []byte("kontrol-plane"), 1)
		}
		return data
	})
	_, err = Open(altered)
	assertBad(t, altered, err, "kind-config.yaml does not match its sha256 in bundle.json")

	dropped := filepath.Join(dir, "dropped.tar.gz")
	rewrite(t, good, dropped, func(name string, data []byte) []byte {
		if name == PlanFile {
			return nil
		}
		return data
	})
	_, err = Open(dropped)
	assertBad(t, dropped, err, "truncated bundle: 1 of the")

	other := filepath.Join(dir, "other.tar.gz")
	rewrite(t, good, other, func(name string, data []byte) []byte {
		if name == ManifestFile {
			return nil
		}
		return data
	})
	_, err = Open(other)
	assertBad(t, other, err, "not a kindlab bundle: its first entry is")
}

func TestCompareChecks(t *testing.T) {
	rec := []check.Result{{Name: "a", Status: check.Pass}, {Name: "b", Status: check.Fail, Reason: "x"}, {Name: "c", Status: check.Pass}}
	rep := []check.Result{{Name: "a", Status: check.Pass}, {Name: "b", Status: check.Pass}, {Name: "d", Status: check.Pass}}
	got := compareChecks(rec, rep)
	want := []CheckDiff{
		{Name: "a", Recorded: check.Pass, Replayed: check.Pass, Same: true},
		{Name: "b", Recorded: check.Fail, Replayed: check.Pass, RecordedReason: "x"},
		{Name: "c", Recorded: check.Pass},
		{Name: "d", Replayed: check.Pass},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	pins, same := comparePins(Pins{Kind: "v0.31.0", NodeImage: "n"}, Pins{Kind: "v0.31.0", NodeImage: "m"})
	if same || pins[1].Same != true || pins[3].Name != "node-image" || pins[3].Same {
		t.Errorf("pins %+v same %t", pins, same)
	}
}

func TestRecordedChecksTravel(t *testing.T) {
	results := []check.Result{{Name: "pv-last-transition-time", Status: check.Pass, Duration: time.Second}}
	raw, _ := json.Marshal(results)
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	saved := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	m := create(t, builtinCatalog(t), "pv-last-transition-time", out, func(in *Input) {
		in.Checks = &state.Checks{SavedAt: saved, Results: raw}
	})
	if m.ChecksSavedAt == nil || !m.ChecksSavedAt.Equal(saved) {
		t.Errorf("checksSavedAt %v", m.ChecksSavedAt)
	}
	b, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.RecordedChecks()
	if err != nil || !reflect.DeepEqual(got, results) {
		t.Errorf("recorded checks %+v (%v), want %+v", got, err, results)
	}
}

// A bundle made by a kindlab with a check this one lacks cannot be
// replayed faithfully: refused, naming the file inside the bundle.
func TestLabThatDoesNotResolveHereIsRefused(t *testing.T) {
	good := smallBundle(t)
	odd := filepath.Join(t.TempDir(), "odd.tar.gz")
	var sum string
	rewrite(t, good, odd, func(name string, data []byte) []byte {
		if name == "lab/builtin/labs/pv-last-transition-time.yaml" {
			data = bytes.Replace(data, []byte("checks: [pv-last-transition-time]"), []byte("checks: [pv-last-transition-time, time-travel]"), 1)
			sum = fmt.Sprintf("%x", sha256.Sum256(data))
		}
		return data
	})
	// Make bundle.json agree, as a newer kindlab's own bundle would.
	fixed := filepath.Join(t.TempDir(), "fixed.tar.gz")
	rewrite(t, odd, fixed, func(name string, data []byte) []byte {
		if name != ManifestFile {
			return data
		}
		var m Manifest
		json.Unmarshal(data, &m)
		for i, f := range m.Files {
			if f.Path == "lab/builtin/labs/pv-last-transition-time.yaml" {
				m.Files[i].SHA256 = sum
				m.Files[i].Size += int64(len(", time-travel"))
			}
		}
		b, _ := json.Marshal(m)
		return b
	})
	b, err := Open(fixed)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.plan(context.Background(), nil, t.TempDir(), "x", t.TempDir(), ReplayOptions{})
	assertBad(t, fixed, err, `its lab pv-last-transition-time does not resolve here: lab/builtin/labs/pv-last-transition-time.yaml:`)
	if err != nil && !strings.Contains(err.Error(), `unknown check "time-travel"`) {
		t.Errorf("error does not say what is wrong: %v", err)
	}
}

// run.nodeImage stands for --image, which takes a node image by tag alone
// (an offline build's kindlab.local/node:v1.31.14 has no digest; the pins
// carry its image ID): a bundle recorded from such a lab replays. CI's e2e
// replay failed on exactly this when checkRun asked for a digest.
func TestTagOnlyNodeImagePlans(t *testing.T) {
	tagged := withRun(t, smallBundle(t), func(r *RunSettings) { r.NodeImage = "kindlab.local/node:v1.31.14" })
	b, err := Open(tagged)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := b.plan(context.Background(), nil, t.TempDir(), "x", t.TempDir(), ReplayOptions{})
	if err != nil {
		t.Fatalf("a tag-only run.nodeImage is refused: %v", err)
	}
	if plan.NodeImage != "kindlab.local/node:v1.31.14" {
		t.Errorf("plan runs %q, want the recorded kindlab.local/node:v1.31.14", plan.NodeImage)
	}
}

// A bundle's run settings are its author's, checked as the flags they stand
// for and a lab's fields are: each bad one is a bad bundle (exit 2) naming
// its place in bundle.json (hostile review, session 12).
func TestBadRunSettingsAreRefused(t *testing.T) {
	good := smallBundle(t)
	for _, tc := range []struct {
		name string
		edit func(*RunSettings)
		want string
	}{
		{"negative registry port", func(r *RunSettings) { r.RegistryPort = -7 }, "bundle.json: run.registryPort: -7 is not a TCP port (valid: 1 to 65535)"},
		{"registry port too large", func(r *RunSettings) { r.RegistryPort = 99999 }, "run.registryPort: 99999 is not a TCP port"},
		{"override of no image", func(r *RunSettings) { r.ImageOverrides = map[string]string{"nope": "x"} }, `bundle.json: run.imageOverrides: nope: lab "pv-last-transition-time" has no image "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := withRun(t, good, tc.edit)
			b, err := Open(bad)
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.plan(context.Background(), nil, t.TempDir(), "x", t.TempDir(), ReplayOptions{})
			assertBad(t, bad, err, tc.want)
		})
	}
}

// withRun is a copy of the bundle at good with its bundle.json's run
// settings edited.
func withRun(t *testing.T, good string, edit func(*RunSettings)) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "edited.tar.gz")
	rewrite(t, good, out, func(name string, data []byte) []byte {
		if name != ManifestFile {
			return data
		}
		var m Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		edit(&m.Run)
		b, _ := json.Marshal(m)
		return b
	})
	return out
}
