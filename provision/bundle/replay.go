package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/internal/text"
	"github.com/kindlab/kindlab/provision/kit"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/registry/offlineimage"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
	"github.com/kindlab/kindlab/provision/up"
	"github.com/kindlab/kindlab/provision/workload"
)

// ReplayOptions shape a replay.
type ReplayOptions struct {
	Store state.Store
	// Name is the cluster to create; default: the cluster the bundle was
	// made from.
	Name string
	// NodeImage replaces the recorded node image (e.g. the same image
	// under another name on this machine).
	NodeImage string
	// RegistryImage replaces the recorded registry image, used only when
	// the registry has to be created.
	RegistryImage string
	Kubeconfig    string
	Wait          time.Duration
	// Versions are this kindlab's, compared with the recorded pins.
	Versions Versions
	Status   io.Writer
	// Confirm is shown what the bundle would run once it has been verified
	// and resolved, before anything is created; an error from it stops the
	// replay with nothing created. Nil replays without asking.
	Confirm func(*Review) error
	// WaitLock is how long to wait for the cluster name while another
	// process works on a cluster of that name (see state.Store.Lock).
	WaitLock time.Duration
}

// ReplayResult is how the replayed lab compares with the bundle.
type ReplayResult struct {
	Bundle  string `json:"bundle"`
	Lab     string `json:"lab"`
	Cluster string `json:"cluster"`
	Context string `json:"kubeconfigContext"`
	// RecordedCluster and RecordedAt say where and when the recorded checks ran.
	RecordedCluster string      `json:"recordedCluster"`
	RecordedAt      *time.Time  `json:"recordedAt,omitempty"`
	Pins            []PinDiff   `json:"pins"`
	Checks          []CheckDiff `json:"checks"`
	// Same is true when every check has the recorded status.
	Same bool `json:"same"`
	// PinsSame is true when every pin is as recorded.
	PinsSame bool     `json:"pinsSame"`
	Problems []string `json:"problems,omitempty"`
}

// PinDiff is one pin, recorded and replayed.
type PinDiff struct {
	Name     string `json:"name"`
	Recorded string `json:"recorded"`
	Replayed string `json:"replayed"`
	Same     bool   `json:"same"`
}

// CheckDiff is one check's outcome, recorded and replayed. Statuses are
// compared, not reasons: reasons name pods, addresses and durations that
// differ between any two runs.
type CheckDiff struct {
	Name string `json:"name"`
	// Recorded or Replayed is "" when the check did not run there.
	Recorded       check.Status `json:"recorded"`
	Replayed       check.Status `json:"replayed"`
	Same           bool         `json:"same"`
	RecordedReason string       `json:"recordedReason,omitempty"`
	ReplayedReason string       `json:"replayedReason,omitempty"`
}

// Differences counts the checks whose outcome changed.
func (r *ReplayResult) Differences() int {
	n := 0
	for _, c := range r.Checks {
		if !c.Same {
			n++
		}
	}
	return n
}

// RecordedChecks returns the check results the bundle carries (nil when it
// has none) and when they were taken.
func (b *Bundle) RecordedChecks() ([]check.Result, error) {
	raw, ok := b.File(ChecksFile)
	if !ok {
		return nil, nil
	}
	var c state.Checks
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, badf(b.Path, "%s: %v", ChecksFile, err)
	}
	var out []check.Result
	if err := json.Unmarshal(c.Results, &out); err != nil {
		return nil, badf(b.Path, "%s: results: %v", ChecksFile, err)
	}
	return out, nil
}

// Replay recreates a bundle's lab from the bundle alone and compares its
// checks with the recorded ones. Everything that can stop it is checked
// before anything is created: the cluster name is free, the lab in the
// bundle resolves, and every image the cluster needs is in Docker or can be
// pulled. Then the normal up pipeline runs with the recorded settings; its
// failures clean up as up's do. The replayed cluster stays up.
func Replay(ctx context.Context, p *cluster.Provider, b *Bundle, opts ReplayOptions) (*ReplayResult, error) {
	name := opts.Name
	if name == "" {
		name = b.Manifest.Cluster
		if err := lab.ValidateName(name); err != nil {
			return nil, badf(b.Path, "%s: cluster: %v", ManifestFile, err)
		}
	} else if err := lab.ValidateName(name); err != nil {
		return nil, fmt.Errorf("--name: %w", err)
	}
	recorded, err := b.RecordedChecks()
	if err != nil {
		return nil, err
	}
	taken := func() error {
		exists, err := p.Exists(name)
		if err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("cluster %q already exists: replay under another name with --name, or take it down first (kindlab down --name %s)", name, name)
		}
		return nil
	}
	if err := taken(); err != nil {
		return nil, err
	}
	store := opts.Store
	clusterDir := store.ClusterDir(name)

	// Resolve and check in a scratch directory first, so that a bundle that
	// cannot be replayed leaves nothing behind.
	scratch, err := os.MkdirTemp("", "kindlab-replay-*")
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	defer os.RemoveAll(scratch)
	plan, err := b.plan(ctx, p.Engine(), scratch, name, clusterDir, opts)
	if err != nil {
		return nil, err
	}
	// Asked before preflight: checking images already sends requests to
	// the addresses the bundle names.
	if opts.Confirm != nil {
		rev, err := ReviewPlan(plan)
		if err != nil {
			return nil, badf(b.Path, "%v", err)
		}
		if err := opts.Confirm(rev); err != nil {
			return nil, err
		}
	}
	if err := preflight(ctx, p.Engine(), b, plan, opts); err != nil {
		return nil, err
	}

	// Held from before the first file is written until the replayed
	// cluster is up (or cleaned up): an up, down, reset or another replay
	// of the same name waits or is refused meanwhile, and cannot have
	// created the cluster since the check above.
	lock, err := store.Lock(ctx, name, state.LockOptions{Wait: opts.WaitLock, Status: opts.Status})
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	opts.Status = lock.Tee(opts.Status)
	if err := taken(); err != nil {
		return nil, err
	}

	// The lab's files stay in the cluster's state directory as long as the
	// cluster does: `kindlab check -f` can use them, and down removes them.
	_, statErr := os.Stat(clusterDir)
	dirExisted := statErr == nil
	labDir := filepath.Join(clusterDir, "bundle")
	if err := os.RemoveAll(labDir); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	cleanup := func() {
		if _, err := store.Load(name); errors.Is(err, state.ErrNotFound) && !dirExisted {
			os.RemoveAll(clusterDir)
		} else {
			os.RemoveAll(labDir)
		}
	}
	plan, err = b.plan(ctx, p.Engine(), labDir, name, clusterDir, opts)
	if err != nil {
		cleanup()
		return nil, err
	}
	res, err := up.Run(ctx, p, up.Options{
		Plan:       plan,
		Store:      store,
		Wait:       opts.Wait,
		Kubeconfig: opts.Kubeconfig,
		Status:     opts.Status,
		Lock:       lock,
	})
	if err != nil {
		// up took down what it created; what it did not create is ours.
		cleanup()
		return nil, err
	}

	out := &ReplayResult{
		Bundle:          b.Path,
		Lab:             plan.Lab,
		Cluster:         name,
		Context:         res.Context,
		RecordedCluster: b.Manifest.Cluster,
		RecordedAt:      b.Manifest.ChecksSavedAt,
	}
	pins, problems := collectPins(ctx, p.Engine(), plan, res.Lab.Handle.RESTConfig, opts.Versions, opts.Store)
	out.Problems = problems
	out.Pins, out.PinsSame = comparePins(b.Manifest.Pins, pins)
	out.Checks = compareChecks(recorded, res.Checks)
	out.Same = out.Differences() == 0
	return out, nil
}

func registryImage(b *Bundle, opts ReplayOptions) string {
	if opts.RegistryImage != "" {
		return opts.RegistryImage
	}
	return b.Manifest.Run.RegistryImage
}

// plan extracts the bundle's lab under dir, resolves it from those files
// only, and renders it with the recorded settings.
func (b *Bundle) plan(ctx context.Context, e *engine.Engine, dir, name, stateDir string, opts ReplayOptions) (*render.Plan, error) {
	files, err := b.extractLab(dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, badf(b.Path, "%s lists no lab files", ManifestFile)
	}
	// Errors name the files as the bundle does, not where they were
	// extracted.
	inBundle := func(err error) string {
		return strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
	}
	// The lab reads only the bundle: every file it refers to must be in the
	// extracted lab tree, whatever its paths or links say.
	c := lab.NewCatalog()
	for _, f := range files {
		if _, err := c.AddFileIn(filepath.Join(dir, LabDir), f); err != nil {
			return nil, badf(b.Path, "its lab does not load: %s", inBundle(err))
		}
	}
	r, err := c.Resolve(b.Manifest.Lab.Name, lab.ResolveOptions{KnownChecks: check.Names()})
	if err != nil {
		return nil, badf(b.Path, "its lab %s does not resolve here: %s", b.Manifest.Lab.Name, inBundle(err))
	}
	if err := checkRun(b.Manifest.Run); err != nil {
		return nil, badf(b.Path, "%s: %v", ManifestFile, err)
	}
	// The review decodes every manifest, twice: bounded per lab, not only
	// per file (hostile review, session 12: 4 MiB of YAML took 200 MB).
	if err := workload.CheckSize(r.Workloads); err != nil {
		return nil, badf(b.Path, "its lab %s: %s", b.Manifest.Lab.Name, inBundle(err))
	}
	var local func(string) string
	if e != nil {
		local = running.LocalImage(ctx, e, opts.Store)
	}
	image := render.ImageOverride(b.Manifest.Run.NodeImage, r)
	if opts.NodeImage != "" {
		image = opts.NodeImage
	}
	plan, err := render.Render(r, render.Options{
		Name:           name,
		StateDir:       stateDir,
		NodeImage:      image,
		LocalImage:     local,
		RegistryPort:   b.Manifest.Run.RegistryPort,
		RegistryImage:  registryImage(b, opts),
		ImageOverrides: b.Manifest.Run.ImageOverrides,
	})
	if oe := (*lab.OverrideError)(nil); errors.As(err, &oe) {
		return nil, badf(b.Path, "%s: run.imageOverrides: %s: %v", ManifestFile, oe.Name, oe.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Path, err)
	}
	return plan, nil
}

// checkRun checks a bundle's run settings as up checks the flags they
// stand for (--registry-port; run.imageOverrides, --image-override, are
// refused by render, and plan names them): they come from the bundle's
// author, not from the user replaying. run.nodeImage is --image, which
// takes any image reference (a node image built offline has a tag only;
// pins.nodeImageID is then its content pin, and preflight compares it);
// Open has already refused one that is no image reference.
func checkRun(run RunSettings) error {
	if p := run.RegistryPort; p != 0 && (p < 1 || p > 65535) {
		return fmt.Errorf("run.registryPort: %d is not a TCP port (valid: 1 to 65535)", p)
	}
	return nil
}

// preflight checks that every image the replayed lab needs can be had:
// the node image in Docker or pullable, each image the workloads run
// pullable by the nodes (from the local registry or upstream), and the
// registry's image if the registry has to be created. It reports every
// missing image in one line.
func preflight(ctx context.Context, e *engine.Engine, b *Bundle, plan *render.Plan, opts ReplayOptions) error {
	var missing []string
	// After `kit load` a pinned image is in Docker under its tag only; up
	// hands kind that tag, so it counts as present.
	pins := b.Manifest.Pins
	for _, ref := range plan.NodeImages() {
		id, _, err := dockerImage(ctx, e, kit.LocalImage(ctx, e.Client(), opts.Store, ref))
		switch {
		case err == nil:
			want := pins.NodeImageIDs[ref]
			if want == "" && ref == pins.NodeImage {
				want = pins.NodeImageID // bundles made before per-node images
			}
			if want != "" && id != want && opts.Status != nil {
				fmt.Fprintf(opts.Status, "warning: node image %s here is %s, the bundle recorded %s: the lab may not behave the same\n", ref, short(id), short(want))
			}
		case !errdefs.IsNotFound(err) && !strings.Contains(err.Error(), "No such image"):
			return fmt.Errorf("inspect node image %s: %w", ref, err)
		default:
			if perr := pullable(ctx, ref, 0); perr != nil {
				missing = append(missing, fmt.Sprintf("node image %s is not in the Docker engine and cannot be pulled (%v)", ref, perr))
			}
		}
	}
	port := 0
	registryStopped := false
	if plan.Registry != nil {
		port = plan.Registry.HostPort
		st, err := registry.Inspect(ctx, registry.Options{HostPort: port, Docker: e.Client()})
		if err != nil {
			return err
		}
		registryStopped = !st.Absent() && !st.Running
		if st.Absent() {
			img := plan.Registry.PinnedImage
			if _, _, err := dockerImage(ctx, e, plan.Registry.Image); err != nil && !strings.HasPrefix(img, offlineimage.Repository+":") {
				if perr := pullable(ctx, img, 0); perr != nil {
					missing = append(missing, fmt.Sprintf("registry image %s is not in the Docker engine and cannot be pulled (%v); pass --registry-image %s", img, perr, offlineimage.Tag))
				}
			}
		}
	}
	refs, err := workloadImages(plan)
	if err != nil {
		return badf(b.Path, "%v", err)
	}
	for _, ref := range refs {
		if registryStopped && isLocal(ref.ref) {
			// What it holds cannot be asked while it is stopped, and starting
			// it is not for a check to do.
			missing = append(missing, fmt.Sprintf("image %s of workload %s is on the local registry, which is stopped: start it with `kindlab registry up`", ref.ref, ref.workload))
			continue
		}
		if err := pullable(ctx, ref.ref, port); err != nil {
			missing = append(missing, fmt.Sprintf("image %s of workload %s cannot be pulled (%v)", ref.ref, ref.workload, err))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("cannot replay %s, nothing was created: %s", b.Path, strings.Join(missing, "; "))
	}
	return nil
}

func short(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	return "sha256:" + id[:min(12, len(id))]
}

type imageUse struct{ ref, workload string }

// workloadImages lists the images the lab's manifests run, with "@image/"
// names resolved through the lab's (overridden) images.
func workloadImages(plan *render.Plan) ([]imageUse, error) {
	seen := map[string]bool{}
	var out []imageUse
	for _, w := range plan.Resolved.Workloads {
		objs, err := workload.Load(w)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			if err := workload.ResolveImages(o, plan.Images); err != nil {
				return nil, err
			}
			for _, ref := range containerImages(o) {
				if !seen[ref] {
					seen[ref] = true
					out = append(out, imageUse{ref: ref, workload: w.Name})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ref < out[j].ref })
	return out, nil
}

// containerImages finds the container images of any pod-bearing object:
// the string values of "image" keys. An image volume's source is a map
// (image: {reference: …}) and is an artifact up pushes, so it is skipped.
func containerImages(u *unstructured.Unstructured) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				if s, ok := x.(string); ok && k == "image" {
					out = append(out, s)
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		}
	}
	walk(u.Object)
	return out
}

// pullable asks the image's registry for its manifest. Images on the local
// registry (localhost:5001 in lab files) are asked for at the registry's
// host port.
func pullable(ctx context.Context, ref string, port int) error {
	// Nodes try the local registry's mirror path for other registries
	// first (where a kit put them): present there is pullable.
	if !isLocal(ref) && port != 0 {
		if mirror, err := registry.LocalReference(ref, port); err == nil && pullable(ctx, mirror, port) == nil {
			return nil
		}
	}
	local := isLocal(ref)
	if local && port != 0 {
		ref = registry.PushReference(ref, port)
	}
	var opts []name.Option
	if local {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(withoutTag(ref), opts...)
	if err != nil {
		return fmt.Errorf("not an image reference: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var rt http.RoundTripper = remote.DefaultTransport
	if local {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		rt = t
	}
	_, err = remote.Head(r, remote.WithContext(ctx), remote.WithTransport(rt), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		msg := text.OneLine(err.Error())
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		if local {
			msg += "; push it to the local registry first, e.g. `make offline-images`"
		}
		return errors.New(msg)
	}
	return nil
}

func comparePins(recorded, replayed Pins) ([]PinDiff, bool) {
	rec := map[string]string{}
	var order []string
	for _, p := range recorded.Flat() {
		rec[p.Name] = p.Value
		order = append(order, p.Name)
	}
	rep := map[string]string{}
	for _, p := range replayed.Flat() {
		if _, ok := rec[p.Name]; !ok {
			order = append(order, p.Name)
		}
		rep[p.Name] = p.Value
	}
	same := true
	var out []PinDiff
	for _, n := range order {
		d := PinDiff{Name: n, Recorded: rec[n], Replayed: rep[n], Same: rec[n] == rep[n]}
		same = same && d.Same
		out = append(out, d)
	}
	return out, same
}

func compareChecks(recorded, replayed []check.Result) []CheckDiff {
	var out []CheckDiff
	done := map[string]bool{}
	find := func(list []check.Result, n string) *check.Result {
		for i := range list {
			if list[i].Name == n {
				return &list[i]
			}
		}
		return nil
	}
	add := func(n string) {
		if done[n] {
			return
		}
		done[n] = true
		d := CheckDiff{Name: n}
		if r := find(recorded, n); r != nil {
			d.Recorded, d.RecordedReason = r.Status, r.Reason
		}
		if r := find(replayed, n); r != nil {
			d.Replayed, d.ReplayedReason = r.Status, r.Reason
		}
		d.Same = d.Recorded == d.Replayed
		out = append(out, d)
	}
	for _, r := range recorded {
		add(r.Name)
	}
	for _, r := range replayed {
		add(r.Name)
	}
	return out
}

func isLocal(ref string) bool {
	return strings.HasPrefix(ref, "localhost:") || strings.HasPrefix(ref, "127.0.0.1:")
}

// withoutTag drops the tag of a name:tag@digest reference, which Docker and
// kind accept and go-containerregistry refuses; the digest decides anyway.
func withoutTag(ref string) string {
	repoTag, digest, ok := strings.Cut(ref, "@")
	if !ok {
		return ref
	}
	if i := strings.LastIndex(repoTag, ":"); i > strings.LastIndex(repoTag, "/") {
		repoTag = repoTag[:i]
	}
	return repoTag + "@" + digest
}
