package bundle

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/crishim"
	"github.com/kindlab/kindlab/provision/doctor"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/internal/confine"
	"github.com/kindlab/kindlab/provision/internal/text"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/progress"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
)

// Input is what a bundle is made from. Only Catalog and Plan are required;
// each other part that is missing is left out of the bundle.
type Input struct {
	// Catalog is where the lab's files are read from.
	Catalog *lab.Catalog
	// Plan is the lab rendered with the settings the cluster runs with
	// (its node image, image overrides, registry port).
	Plan *render.Plan
	// Checks is the cluster's last check run; nil when it has none.
	Checks *state.Checks
	// Config reaches the cluster's apiserver, for its objects and version.
	Config *rest.Config
	// Nodes reach the cluster's nodes, for their runtime versions.
	Nodes check.NodeAccess
	// Engine is the engine the cluster runs on, for the images' pins and
	// the registry; nil records those pins as problems.
	Engine *engine.Engine
	// CollectLogs writes the cluster's logs into a directory; KindLogs is
	// `kind export logs`.
	CollectLogs func(ctx context.Context, dir string) error
	Versions    Versions
	// Store is kindlab's state, where `kit load` notes the images it loaded
	// under a tag only; the zero Store has none.
	Store state.Store
	// Status receives one line per step.
	Status io.Writer
}

// KindLogs collects a kind cluster's logs into a directory, as `kind export
// logs` does: every node's journal, kubelet and containerd logs, /var/log,
// and docker inspect of the nodes.
func KindLogs(e *engine.Engine, cluster string) func(ctx context.Context, dir string) error {
	return func(ctx context.Context, dir string) error {
		p := e.Kind()
		// kind's collection takes no context; it runs to completion in the
		// background if the caller gives up.
		done := make(chan error, 1)
		go func() { done <- p.CollectLogs(cluster, dir) }()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Create writes a bundle of a running lab to out. Parts that cannot be
// collected from a broken cluster (logs, objects, versions) are listed in
// the manifest's problems instead of failing: a broken cluster is when a
// bundle is wanted most. What a replay needs (the lab's files, the plan)
// must be there, or nothing is written.
func Create(ctx context.Context, in Input, out string) (*Manifest, error) {
	if in.Catalog == nil || in.Plan == nil || in.Plan.Resolved == nil {
		return nil, fmt.Errorf("bundle: Create needs the lab's catalog and plan")
	}
	plan := in.Plan
	dir, err := os.MkdirTemp("", "kindlab-bundle-*")
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	defer os.RemoveAll(dir)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	defer root.Close()
	st := &stage{dir: dir, root: root, Status: progress.Status{W: in.Status}}
	m := &Manifest{
		FormatVersion: FormatVersion,
		CreatedAt:     time.Now().UTC().Truncate(time.Second),
		Cluster:       plan.ClusterName,
		Run: RunSettings{
			NodeImage:      plan.NodeImage,
			ImageOverrides: plan.ImageOverrides,
		},
	}
	if plan.Registry != nil {
		m.Run.RegistryPort = plan.Registry.HostPort
	}

	st.Start("Copying lab %s and the files it refers to 📄", plan.Lab)
	tree, labFiles, err := collectLab(in.Catalog, plan.Resolved)
	if err == nil {
		// What Open would refuse is not written: a link that leaves its tree,
		// a file below a link, one path twice.
		err = confine.Check(treeEntries(tree), 2)
	}
	if err != nil {
		st.End(false)
		return nil, fmt.Errorf("bundle lab %s: %w", plan.Lab, err)
	}
	for _, e := range tree {
		if err := st.writeTree(e); err != nil {
			st.End(false)
			return nil, err
		}
	}
	m.Lab = LabInfo{Name: plan.Lab, Source: plan.Resolved.Source, Files: labFiles}
	kind, err := plan.KindConfigYAML()
	if err != nil {
		st.End(false)
		return nil, err
	}
	if err := st.write(KindConfigFile, kind); err != nil {
		st.End(false)
		return nil, err
	}
	for _, f := range plan.Files {
		if err := st.write(path.Join(FilesDir, filepath.Base(f.HostPath)), []byte(f.Content)); err != nil {
			st.End(false)
			return nil, err
		}
	}
	if err := st.writeJSON(PlanFile, plan); err != nil {
		st.End(false)
		return nil, err
	}
	st.End(true)

	st.Start("Reading pins and host facts 📌")
	m.Pins, m.Problems = collectPins(ctx, in.Engine, plan, in.Config, in.Versions, in.Store)
	m.Run.RegistryImage = m.Pins.RegistryImage
	host := Host{Findings: doctor.Run(ctx, doctor.Options{RegistryPort: m.Run.RegistryPort, Engine: in.Engine})}
	if in.Nodes != nil {
		host.Nodes = nodeFacts(ctx, in.Nodes)
	}
	if err := st.writeJSON(HostFile, host); err != nil {
		st.End(false)
		return nil, err
	}
	if in.Checks != nil {
		t := in.Checks.SavedAt
		m.ChecksSavedAt = &t
		if err := st.writeJSON(ChecksFile, in.Checks); err != nil {
			st.End(false)
			return nil, err
		}
	} else {
		st.problem("no check results recorded for cluster %s (run `kindlab check` first to include them)", plan.ClusterName)
	}
	st.End(true)

	if in.Config != nil {
		st.Start("Saving the lab's objects 🧾")
		octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := collectObjects(octx, in.Config, plan.Resolved, st)
		cancel()
		if err != nil {
			st.problem("objects: %v", err)
		}
		st.End(err == nil)
	}
	if in.CollectLogs != nil {
		st.Start("Exporting kind logs 🪵")
		logs := filepath.Join(dir, LogsDir)
		err := in.CollectLogs(ctx, logs)
		if err != nil {
			// kind keeps what it did collect; say what failed and go on.
			st.problem("logs: %v", err)
		}
		if cerr := st.scrubTree(LogsDir); cerr != nil {
			st.End(false)
			return nil, cerr
		}
		st.End(err == nil)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	m.Redactions = st.redactions
	m.Problems = append(m.Problems, st.problems...)
	st.Start("Writing %s 📦", out)
	if err := writeArchive(dir, out, m); err != nil {
		st.End(false)
		return nil, err
	}
	st.End(true)
	return m, nil
}

// Host is host.json: doctor's findings and each node's versions.
type Host struct {
	Findings []doctor.Finding `json:"findings"`
	Nodes    []NodeFacts      `json:"nodes,omitempty"`
}

// NodeFacts are what a node says about itself.
type NodeFacts struct {
	Name string `json:"name"`
	// Kubernetes is /kind/version, what the node image was built from.
	Kubernetes string `json:"kubernetes,omitempty"`
	Containerd string `json:"containerd,omitempty"`
	Runc       string `json:"runc,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	// CRIShim is systemd's state of kindlab's CRI shim in the node
	// (active, inactive, failed…), and RuntimeEndpoint the CRI endpoint the
	// kubelet was started with: together, whether the shim really ran.
	CRIShim         string   `json:"criShim,omitempty"`
	RuntimeEndpoint string   `json:"kubeletRuntimeEndpoint,omitempty"`
	Errors          []string `json:"errors,omitempty"`
}

func nodeFacts(ctx context.Context, na check.NodeAccess) []NodeFacts {
	names, err := na.Nodes(ctx)
	if err != nil {
		return []NodeFacts{{Errors: []string{err.Error()}}}
	}
	out := make([]NodeFacts, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := NodeFacts{Name: n}
			for _, q := range []struct {
				dst *string
				cmd []string
			}{
				{&f.Kubernetes, []string{"cat", "/kind/version"}},
				{&f.Containerd, []string{"containerd", "--version"}},
				{&f.Runc, []string{"runc", "--version"}},
				{&f.Kernel, []string{"uname", "-r"}},
			} {
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				b, err := na.Exec(cctx, n, nil, q.cmd...)
				cancel()
				if err != nil {
					f.Errors = append(f.Errors, text.OneLine(err.Error()))
					continue
				}
				first, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
				*q.dst = first
			}
			// `systemctl is-active` prints the state and exits non-zero for
			// anything but active: the state is the answer either way.
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			b, _ := na.Exec(cctx, n, nil, "systemctl", "is-active", crishim.UnitName)
			// KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=… --node-ip=…"
			if flags, err := na.Exec(cctx, n, nil, "cat", "/var/lib/kubelet/kubeadm-flags.env"); err == nil {
				const flag = "--container-runtime-endpoint="
				if _, v, ok := strings.Cut(string(flags), flag); ok {
					f.RuntimeEndpoint, _, _ = strings.Cut(strings.TrimLeft(v, "= "), " ")
					f.RuntimeEndpoint = strings.Trim(strings.TrimSpace(f.RuntimeEndpoint), `"`)
				}
			}
			cancel()
			f.CRIShim = strings.TrimSpace(string(b))
			out[i] = f
		}()
	}
	wg.Wait()
	return out
}

// stage is the directory a bundle is assembled in. Everything written
// through it passes the redaction rules (redact.go).
type stage struct {
	progress.Status
	dir string
	// root is dir opened as an os.Root: every write goes through it, so a
	// symlink the lab's tree brought in never makes one land outside.
	root       *os.Root
	redactions []Redaction
	problems   []string
}

func (s *stage) write(name string, data []byte) error {
	data, found := Text(data)
	s.redactions = append(s.redactions, redactions(name, found)...)
	if d := path.Dir(name); d != "." {
		if err := s.root.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
	}
	if err := s.root.WriteFile(name, data, 0o644); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}

func (s *stage) writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("bundle: encode %s: %w", name, err)
	}
	return s.write(name, append(b, '\n'))
}

func (s *stage) writeTree(e treeEntry) error {
	switch {
	case e.dir:
		return s.root.MkdirAll(e.path, 0o755)
	case e.link != "":
		if err := s.root.MkdirAll(path.Dir(e.path), 0o755); err != nil {
			return err
		}
		return s.root.Symlink(e.link, e.path)
	}
	data, found := redactManifest(e.path, e.data)
	s.note(e.path, found)
	return s.write(e.path, data)
}

// note records values replaced outside the text rules (by Object).
func (s *stage) note(file string, found map[string]int) {
	s.redactions = append(s.redactions, redactions(file, found)...)
}

// scrubTree passes every file under a stage directory written by someone
// else (kind's log export) through the text rules, streaming: a log of any
// size is read line by line into a file beside it, which then replaces it.
// Files the rules cannot see into (binary, compressed) are dropped and named
// in the problems: an unreadable secret is still a secret.
func (s *stage) scrubTree(dir string) error {
	root := filepath.Join(s.dir, dir)
	var dropped []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == root {
				return fs.SkipDir
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(s.dir, p)
		rel = filepath.ToSlash(rel)
		if !d.Type().IsRegular() {
			dropped = append(dropped, rel)
			return os.Remove(p)
		}
		found, bin, err := scrubFile(p)
		if err != nil {
			return err
		}
		if bin {
			dropped = append(dropped, rel)
			return os.Remove(p)
		}
		s.redactions = append(s.redactions, redactions(rel, found)...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("bundle: redact %s: %w", dir, err)
	}
	if len(dropped) > 0 {
		sort.Strings(dropped)
		s.problem("left out %d binary or non-regular log file(s) that cannot be checked for secrets: %s", len(dropped), strings.Join(dropped, ", "))
	}
	return nil
}

// scrubFile redacts the file at p in place, through a temporary file beside
// it; bin says it is binary and was left alone.
func scrubFile(p string) (found map[string]int, bin bool, err error) {
	in, err := os.Open(p)
	if err != nil {
		return nil, false, err
	}
	defer in.Close()
	r := bufio.NewReaderSize(in, 64<<10)
	head, err := r.Peek(8000)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, false, err
	}
	if binary(head) {
		return nil, true, nil
	}
	out, err := os.CreateTemp(filepath.Dir(p), ".redact-*")
	if err != nil {
		return nil, false, err
	}
	defer os.Remove(out.Name()) // gone after the rename; there on failure
	found, err = Stream(out, r)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", p, err)
	}
	if err := os.Chmod(out.Name(), 0o644); err != nil {
		return nil, false, err
	}
	return found, false, os.Rename(out.Name(), p)
}

func binary(b []byte) bool {
	for _, magic := range [][]byte{{0x1f, 0x8b}, {0x28, 0xb5, 0x2f, 0xfd}, {0xfd, '7', 'z', 'X', 'Z', 0}, {'P', 'K', 3, 4}} {
		if bytes.HasPrefix(b, magic) {
			return true
		}
	}
	return bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0
}

func (s *stage) problem(format string, args ...any) {
	s.problems = append(s.problems, text.OneLine(fmt.Sprintf(format, args...)))
}
