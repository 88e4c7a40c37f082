// Package fleet brings up several clusters of one lab side by side, one per
// attendee (`kindlab up LAB --count N`): clusters NAME-1 … NAME-N, each with
// its own API server port and, with a kubeconfig directory, its own
// kubeconfig file to hand out. Every cluster is an ordinary `up` (package
// up); the fleet adds what only several clusters need: refusing more than
// the host can run before anything is created, creating them in parallel up
// to what the host takes, the shared registry started once, and a report
// per cluster.
//
// A cluster that fails does not stop the others: it is cleaned up as a
// failed `up` is (unless Retain), the others stay up, and Up returns an
// error naming it and why, so the caller exits non-zero.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	kindcluster "sigs.k8s.io/kind/pkg/cluster"
	kindexec "sigs.k8s.io/kind/pkg/exec"

	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/down"
	"github.com/kindlab/kindlab/provision/internal/atomicfile"
	"github.com/kindlab/kindlab/provision/internal/text"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/state"
	"github.com/kindlab/kindlab/provision/up"
)

// Options shape one fleet.
type Options struct {
	// Name is the fleet's name; its clusters are Name-1 … Name-Count.
	Name  string
	Count int
	// Lab is the lab every cluster runs; Render the options its plans are
	// rendered with (flags, images, registry), each member with its own
	// Name and StateDir (Store.ClusterDir).
	Lab    *lab.Resolved
	Render render.Options
	Store  state.Store
	// KubeconfigDir, if set, gets one kubeconfig file per cluster,
	// DIR/<cluster>.kubeconfig; otherwise the contexts are merged into the
	// default kubeconfig as a single `up` does.
	KubeconfigDir string
	// Retain keeps the nodes of a cluster that failed, for debugging.
	Retain     bool
	Wait       time.Duration
	SkipChecks bool
	// Status receives every cluster's step lines, each prefixed with its name.
	Status io.Writer
	// Host is the machine's capacity; nil measures it (tests pass their own).
	Host *Host
	// WaitLock is how long to wait for a member another process is working
	// on (see state.Store.Lock); 0 refuses the fleet at once.
	WaitLock time.Duration
}

// Member results.
const (
	ResultUp          = "up"
	ResultCheckFailed = "check-failed"
	ResultFailed      = "failed"
	ResultNotStarted  = "not-started"
)

// Member is one cluster of the fleet and what became of it.
type Member struct {
	Cluster string `json:"cluster"`
	Context string `json:"kubeconfigContext"`
	// Kubeconfig is the file holding the context ("" = the default kubeconfig).
	Kubeconfig string `json:"kubeconfig"`
	// Server is the cluster's API server on the host, e.g. https://127.0.0.1:40123.
	Server  string         `json:"server,omitempty"`
	Created bool           `json:"created"`
	Result  string         `json:"result"`
	Error   string         `json:"error,omitempty"`
	Checks  []check.Result `json:"checks,omitempty"`
	// CleanedUp says a failed cluster was taken down again.
	CleanedUp bool          `json:"cleanedUp,omitempty"`
	Duration  time.Duration `json:"duration"`
}

// Result is what a fleet up did.
type Result struct {
	Fleet    string        `json:"fleet"`
	Lab      string        `json:"lab"`
	Parallel int           `json:"parallel"`
	Clusters []Member      `json:"clusters"`
	Duration time.Duration `json:"duration"`
}

// Failed counts the clusters that are not up.
func (r *Result) Failed() int {
	n := 0
	for _, m := range r.Clusters {
		if m.Result == ResultFailed || m.Result == ResultNotStarted {
			n++
		}
	}
	return n
}

// ChecksFailed reports whether a cluster that is up failed a check.
func (r *Result) ChecksFailed() bool {
	for _, m := range r.Clusters {
		if m.Result == ResultCheckFailed {
			return true
		}
	}
	return false
}

// InputError is a fleet that cannot be made as asked (a flag's value): the
// caller reports it as a usage error. Nothing was created.
type InputError struct {
	Flag string
	Msg  string
}

func (e *InputError) Error() string { return e.Flag + ": " + e.Msg }

// Members names the clusters of a fleet.
func Members(name string, count int) []string {
	out := make([]string, count)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", name, i+1)
	}
	return out
}

// member is a cluster being brought up.
type member struct {
	Member
	plan       *render.Plan
	create     bool          // false: the cluster runs this fleet's lab already (converge)
	exists     bool          // a kind cluster of that name runs
	rec        *state.Record // kindlab's record of it, if any
	kubeconfig string        // where kind writes the context during creation
	lock       *state.Lock   // held from before prepare until Up returns
}

// Up creates (or converges) every cluster of the fleet. Errors about the
// request come back as *InputError before anything exists; once clusters
// are being made the result lists each, and the error names those that failed.
func Up(ctx context.Context, p *cluster.Provider, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Count < 1 {
		return nil, &InputError{"--count", fmt.Sprintf("%d is not a number of clusters (valid: 1 or more)", opts.Count)}
	}
	names := Members(opts.Name, opts.Count)
	// The longest name fails first if any does.
	if err := lab.ValidateName(names[len(names)-1]); err != nil {
		return nil, &InputError{"--name", fmt.Sprintf("%q with --count %d makes cluster names up to %q: %v", opts.Name, opts.Count, names[len(names)-1], err)}
	}
	first, err := renderMember(opts, names[0])
	if err != nil {
		return nil, err
	}
	host := opts.Host
	if host == nil {
		h := MeasureHost(ctx, p.Engine())
		host = &h
	}
	limit := host.MaxClusters(shapeOf(first))
	// A count the host cannot run is refused before any lock is taken:
	// lock files stay once made (see state.Store.LockFile), and a refused
	// --count 3000 would leave 3000 of them. The count is checked again
	// under the locks, where the clusters that exist cannot change.
	running, err := p.List()
	if err != nil {
		return nil, fmt.Errorf("list kind clusters: %w", err)
	}
	if err := checkRoom(opts, host, shapeOf(first), countNew(names, running), first.Lab); err != nil {
		return nil, err
	}
	// Every member is locked before anything is looked at: another up,
	// down or reset of one of them refuses the whole fleet (or is waited
	// for) with nothing created, and the fleet's clean-up of a failed
	// member can never remove what another process made.
	locks, err := LockAll(ctx, opts.Store, names, opts.WaitLock, opts.Status)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, l := range locks {
			l.Unlock()
		}
	}()
	ms, err := prepare(p, opts, names)
	if err != nil {
		return nil, err
	}
	for i, m := range ms {
		m.lock = locks[i]
	}
	toCreate := 0
	for _, m := range ms {
		if m.create {
			toCreate++
		}
	}
	if err := checkConflicts(ms, first.Lab, opts); err != nil {
		return nil, err
	}
	if err := checkRoom(opts, host, shapeOf(first), toCreate, first.Lab); err != nil {
		return nil, err
	}
	// Plans only for a fleet that fits: rendering is cheap, but not a
	// thousand times over for a count that is refused anyway.
	for i, m := range ms {
		// A member that runs already converges with the image overrides
		// it came up with unless overrides are given now, as a single
		// up's converge does (cmd/kindlab/app/up).
		keep := m.exists && m.rec != nil && len(opts.Render.ImageOverrides) == 0 && len(m.rec.ImageOverrides) > 0
		switch {
		case keep:
			mo := opts
			mo.Render.ImageOverrides = m.rec.ImageOverrides
			if m.plan, err = renderMember(mo, m.Cluster); err != nil {
				return nil, err
			}
			if opts.Status != nil {
				fmt.Fprintf(opts.Status, " ✓ Keeping the image overrides cluster %s came up with (--image-override replaces them): %s\n", m.Cluster, render.OverridePairs(m.rec.ImageOverrides))
			}
		case i == 0:
			m.plan = first
		default:
			if m.plan, err = renderMember(opts, m.Cluster); err != nil {
				return nil, err
			}
		}
		m.Context = m.plan.Context
		if m.plan.Lab != first.Lab {
			return nil, fmt.Errorf("cluster %s renders lab %s, not %s", m.Cluster, m.plan.Lab, first.Lab)
		}
	}
	if err := checkDir(opts.KubeconfigDir); err != nil {
		return nil, err
	}
	if err := assignPorts(ms); err != nil {
		return nil, err
	}
	res := &Result{Fleet: opts.Name, Lab: ms[0].plan.Lab, Parallel: host.Parallel(toCreate, limit)}
	out := &lockedWriter{w: opts.Status}
	out.printf("Fleet %s: %d cluster(s) of lab %s (%d to create, %d at a time; this host has room for %d more)\n",
		opts.Name, opts.Count, res.Lab, toCreate, res.Parallel, limit.Clusters)

	// The shared registry is started once, before any node exists: a
	// registry that cannot start fails the fleet in a second, and the
	// clusters only reuse it (registry.Ensure is locked besides).
	var regPort int
	if reg := ms[0].plan.Registry; reg != nil {
		regPort = reg.HostPort
		if _, err := registry.Ensure(ctx, registry.Options{HostPort: reg.HostPort, Image: reg.Image, Docker: p.Engine().Client()}); err != nil {
			return nil, err
		}
	}

	sem := make(chan struct{}, res.Parallel)
	var wg sync.WaitGroup
	var kubeconfigMu sync.Mutex // kind's own kubeconfig lock fails at once instead of waiting
	for _, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				m.Result, m.Error = ResultNotStarted, context.Cause(ctx).Error()
				return
			}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				m.Result, m.Error = ResultNotStarted, context.Cause(ctx).Error()
				return
			}
			bringUp(ctx, p, opts, m, out.prefixed(m.Cluster), &kubeconfigMu)
		}()
	}
	wg.Wait()

	var failed []string
	cleaned := false
	for _, m := range ms {
		res.Clusters = append(res.Clusters, m.Member)
		if m.Result == ResultFailed || m.Result == ResultNotStarted {
			failed = append(failed, fmt.Sprintf("%s: %s", m.Cluster, m.Error))
		}
		cleaned = cleaned || m.CleanedUp
	}
	// Clusters that failed were taken down keeping the registry, since
	// others were still using or about to use it; now that all are done it
	// goes if nothing uses it, as after a failed single up.
	if cleaned && regPort != 0 {
		if _, err := down.ReleaseRegistry(context.WithoutCancel(ctx), p, regPort); err != nil {
			failed = append(failed, "releasing the registry: "+err.Error())
		}
	}
	res.Duration = time.Since(start)
	if len(failed) > 0 {
		return res, fmt.Errorf("fleet %s: %d of %d cluster(s) failed (the others are up): %s",
			opts.Name, res.Failed(), len(ms), strings.Join(failed, "; "))
	}
	return res, nil
}

// renderMember renders the plan of one cluster of the fleet.
func renderMember(opts Options, cluster string) (*render.Plan, error) {
	ro := opts.Render
	ro.Name, ro.StateDir = cluster, opts.Store.ClusterDir(cluster)
	plan, err := render.Render(opts.Lab, ro)
	if err != nil {
		return nil, fmt.Errorf("render cluster %s of the fleet: %w", cluster, err)
	}
	return plan, nil
}

// LockAll takes the locks of clusters in order (two fleets that overlap
// then cannot each hold a part of the other), sharing one wait among them.
// On failure it releases what it took and returns the first member's
// *state.BusyError.
func LockAll(ctx context.Context, store state.Store, clusters []string, wait time.Duration, status io.Writer) ([]*state.Lock, error) {
	var deadline time.Time
	if wait > 0 {
		deadline = time.Now().Add(wait)
	}
	locks := make([]*state.Lock, 0, len(clusters))
	for _, name := range clusters {
		w := wait
		if wait > 0 {
			// Never 0, which would mean "do not wait" rather than "time is up".
			w = max(time.Until(deadline), time.Millisecond)
		}
		l, err := store.Lock(ctx, name, state.LockOptions{Wait: w, Status: status})
		if err != nil {
			for _, h := range locks {
				h.Unlock()
			}
			return nil, err
		}
		locks = append(locks, l)
	}
	return locks, nil
}

// countNew is how many of names are not among the running clusters.
func countNew(names, running []string) int {
	n := 0
	for _, name := range names {
		if !contains(running, name) {
			n++
		}
	}
	return n
}

// checkRoom refuses a fleet whose toCreate new clusters of lab (of shape
// s) the host has no room for (Host.MaxClustersFor), naming the count that
// fits and the fix for the count asked.
func checkRoom(opts Options, host *Host, s Shape, toCreate int, lab string) error {
	limit := host.MaxClustersFor(s, toCreate)
	if toCreate <= limit.Clusters {
		return nil
	}
	return &InputError{"--count", fmt.Sprintf("%d needs %d new cluster(s) of lab %s but this host has room for %d (valid: --count %d or less here): %s; %s",
		opts.Count, toCreate, lab, limit.Clusters, opts.Count-toCreate+limit.Clusters, limit.Reason, limit.Fix)}
}

// prepare finds which of the fleet's clusters exist already.
func prepare(p *cluster.Provider, opts Options, names []string) ([]*member, error) {
	running, err := p.List()
	if err != nil {
		return nil, fmt.Errorf("list kind clusters: %w", err)
	}
	var ms []*member
	for _, name := range names {
		m := &member{Member: Member{Cluster: name, Context: "kind-" + name}, create: true}
		rec, err := opts.Store.Load(name)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return nil, err
		}
		// A record without its cluster is stale (up overwrites it); only a
		// cluster that exists can be in the way.
		if contains(running, name) {
			m.create = false
			m.exists = true
			if err == nil {
				m.rec = &rec
				m.Kubeconfig = rec.Kubeconfig
			}
		}
		if m.create {
			m.Kubeconfig = kubeconfigFile(opts.KubeconfigDir, name)
			// kind writes the context into a file of the cluster's own
			// while it creates it (parallel creates stay apart, and a half
			// made cluster never shows in a file handed out); once it is
			// up, publishKubeconfig moves it where the user looks.
			m.kubeconfig = filepath.Join(opts.Store.ClusterDir(name), "kubeconfig")
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// checkConflicts refuses names taken by something that is not this
// fleet's lab: a foreign kind cluster, another lab, a cluster outside the fleet.
func checkConflicts(ms []*member, labName string, opts Options) error {
	for _, m := range ms {
		switch {
		case !m.exists:
		case m.rec == nil:
			return &InputError{"--name", fmt.Sprintf("cluster %s of fleet %s already exists and kindlab did not create it; pick another --name", m.Cluster, opts.Name)}
		case m.rec.Lab != labName:
			return &InputError{"--name", fmt.Sprintf("cluster %s already runs lab %s, not %s; pick another --name, or take it down first (kindlab down --name %s)", m.Cluster, m.rec.Lab, labName, m.Cluster)}
		case m.rec.Fleet != opts.Name:
			return &InputError{"--name", fmt.Sprintf("cluster %s already exists outside fleet %s; pick another --name, or take it down first (kindlab down --name %s)", m.Cluster, opts.Name, m.Cluster)}
		}
	}
	return nil
}

func kubeconfigFile(dir, cluster string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, down.FleetKubeconfigName(cluster))
}

// bringUp runs one cluster's `up` and records the outcome in m.
func bringUp(ctx context.Context, fleetP *cluster.Provider, opts Options, m *member, status io.Writer, kubeconfigMu *sync.Mutex) {
	began := time.Now()
	defer func() { m.Duration = time.Since(began) }()
	fail := func(err error) {
		m.Result, m.Error = ResultFailed, reason(err)
	}
	// This member's lines also go to its own progress file (kindlab
	// console follows each member), without the fleet's prefix.
	status = m.lock.Tee(status)
	// kind's progress for this member goes to its own prefixed stream.
	p := fleetP.WithLogger(newKindLogger(status))
	res, err := up.Run(ctx, p, up.Options{
		Plan:       m.plan,
		Store:      opts.Store,
		Retain:     true, // the fleet cleans up itself, keeping the registry the others use
		Wait:       opts.Wait,
		Kubeconfig: m.kubeconfig,
		SkipChecks: opts.SkipChecks,
		Status:     status,
		Fleet:      opts.Name,
		Lock:       m.lock,
	})
	if err != nil {
		fail(err)
		switch {
		case !m.create || opts.Retain:
		case errors.Is(err, cluster.ErrNodesExist):
			// Someone else's nodes: only the record this up wrote goes.
			_ = opts.Store.Remove(m.Cluster)
		default:
			cleanUp(ctx, opts, m, p, status)
		}
		return
	}
	m.Created, m.Checks = res.Created, res.Checks
	m.Result = ResultUp
	if check.AnyFailed(res.Checks) {
		m.Result = ResultCheckFailed
	}
	if err := publishKubeconfig(p.Engine().Kind(), opts, m, kubeconfigMu); err != nil {
		fail(fmt.Errorf("the cluster is up but its kubeconfig is not: %w", err))
		return
	}
	fmt.Fprintf(status, " ✓ Cluster %s is up: kubectl --kubeconfig %s get nodes\n", m.Cluster, displayKubeconfig(m.Kubeconfig))
}

// cleanUp takes a failed cluster down as a failed `up` does, except for
// the registry: other clusters of the fleet are using it.
func cleanUp(ctx context.Context, opts Options, m *member, p *cluster.Provider, status io.Writer) {
	_, err := down.Run(context.WithoutCancel(ctx), p, opts.Store, down.Options{Cluster: m.Cluster, Kubeconfig: m.kubeconfig, KeepRegistry: true, Lock: m.lock})
	if err != nil {
		m.Error += fmt.Sprintf(" (and cleaning up failed: %v)", oneLine(err))
		return
	}
	m.CleanedUp = true
	if m.kubeconfig != "" {
		_, _, _ = down.RemoveEmptyKubeconfig(m.kubeconfig)
	}
	fmt.Fprintf(status, " ✗ Cluster %s failed and was removed\n", m.Cluster)
}

// publishKubeconfig makes sure the context is where the user will look:
// the per-cluster file, or merged into the default kubeconfig (one cluster
// at a time: kind's kubeconfig lock fails instead of waiting).
func publishKubeconfig(kp *kindcluster.Provider, opts Options, m *member, mu *sync.Mutex) error {
	mu.Lock()
	defer mu.Unlock()
	path := m.Kubeconfig
	switch {
	case path != "" && (m.create || !hasContext(path, m.Context)):
		// A file to hand out is written whole and renamed into place:
		// an attendee never gets half of one (see writeKubeconfig).
		if err := writeKubeconfig(kp, m.Cluster, path); err != nil {
			return fmt.Errorf("write context %s to %s: %w", m.Context, path, err)
		}
	case path == "" && !hasContext(path, m.Context):
		// The default kubeconfig is shared with kind and kubectl: kind
		// merges into it under its own lock.
		if err := kp.ExportKubeConfig(m.Cluster, path, false); err != nil {
			return fmt.Errorf("write context %s to %s: %w", m.Context, displayKubeconfig(path), err)
		}
	}
	if m.create {
		// The context now lives where the user looks: down removes it
		// from there; the creation-time file goes with the cluster's state.
		rec, err := opts.Store.Load(m.Cluster)
		if err != nil {
			return err
		}
		rec.Kubeconfig = path
		if err := opts.Store.Save(rec); err != nil {
			return err
		}
		_ = os.Remove(m.kubeconfig)
	}
	if raw, err := kp.KubeConfig(m.Cluster, false); err == nil {
		if cfg, err := clientcmd.Load([]byte(raw)); err == nil {
			for _, c := range cfg.Clusters {
				m.Server = c.Server
			}
		}
	}
	return nil
}

// writeKubeconfig writes a cluster's kubeconfig (kind's, as `kind get
// kubeconfig` prints it) to path atomically, mode 0600 as client-go
// writes them. Other contexts a file of that name already holds are kept.
func writeKubeconfig(kp *kindcluster.Provider, cluster, path string) error {
	raw, err := kp.KubeConfig(cluster, false)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.Load([]byte(raw))
	if err != nil {
		return err
	}
	if old, err := clientcmd.LoadFromFile(path); err == nil {
		for k, v := range cfg.Clusters {
			old.Clusters[k] = v
		}
		for k, v := range cfg.AuthInfos {
			old.AuthInfos[k] = v
		}
		for k, v := range cfg.Contexts {
			old.Contexts[k] = v
		}
		old.CurrentContext = cfg.CurrentContext
		cfg = old
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

// hasContext reports whether a kubeconfig file ("" = the default ones)
// holds a context.
func hasContext(path, context string) bool {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules = &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	}
	cfg, err := rules.Load()
	if err != nil {
		return false
	}
	_, ok := cfg.Contexts[context]
	return ok
}

func displayKubeconfig(path string) string {
	if path == "" {
		if env := os.Getenv("KUBECONFIG"); env != "" {
			return env
		}
		return "~/.kube/config"
	}
	return path
}

// checkDir makes sure kubeconfig files can be written in dir, creating it
// if needed, before any cluster is made.
func checkDir(dir string) error {
	if dir == "" {
		return nil
	}
	bad := func(err error) error {
		return &InputError{"--kubeconfig-dir", fmt.Sprintf("%s is not a directory kindlab can write kubeconfig files in: %v (valid: a writable directory, created if missing)", dir, unwrapPath(err))}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return bad(err)
	}
	f, err := os.CreateTemp(dir, ".kindlab-write-test-*")
	if err != nil {
		return bad(err)
	}
	f.Close()
	return os.Remove(f.Name())
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// assignPorts gives every cluster to create its own API server port, all
// picked while every one is held: kind picks each by itself, and two
// creates racing for "a free port" could get the same one.
func assignPorts(ms []*member) error {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, m := range ms {
		// -1: the engine picks each port itself (render does that for an
		// API server address of a remote engine's host), without a race.
		if !m.create || m.plan.Config.Networking.APIServerPort == -1 {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("pick an API server port for %s: %w", m.Cluster, err)
		}
		held = append(held, l)
		m.plan.Config.Networking.APIServerPort = int32(l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

func shapeOf(p *render.Plan) Shape {
	roles := make([]string, 0, len(p.Config.Nodes))
	for _, n := range p.Config.Nodes {
		roles = append(roles, string(n.Role))
	}
	return ShapeOfNodes(roles)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func oneLine(err error) string { return text.OneLine(err.Error()) }

// reason is an error in one line that says why. kind's errors for a
// failed command are the whole command line and its exit status; the
// command's own last words (e.g. Docker's "container name is already in
// use") are what the user needs.
func reason(err error) string {
	msg := oneLine(err)
	var re *kindexec.RunError
	if !errors.As(err, &re) || len(re.Command) == 0 {
		return msg
	}
	// The last line that reports an error (docker ends with a usage hint).
	out := ""
	for _, line := range strings.Split(strings.TrimSpace(string(re.Output)), "\n") {
		if line = strings.TrimSpace(line); line != "" && (out == "" || strings.Contains(strings.ToLower(line), "error")) {
			out = line
		}
	}
	if out == "" {
		return msg
	}
	cmd := re.Command[0]
	if len(re.Command) > 1 {
		cmd += " " + re.Command[1]
	}
	prefix := ""
	if i := strings.Index(msg, `command "`); i > 0 {
		prefix = msg[:i]
	}
	return fmt.Sprintf("%s`%s` failed: %s", prefix, cmd, strings.Join(strings.Fields(out), " "))
}

// FleetMembers lists the recorded clusters of a fleet, by name. A record
// kindlab did not write (state.ErrBadStateFile) is no member, whatever
// fleet it claims: nothing acts on it (`kindlab status` names it).
func FleetMembers(store state.Store, name string) ([]state.Record, error) {
	recs, _, err := store.List()
	if err != nil {
		return nil, err
	}
	var out []state.Record
	for _, r := range recs {
		if r.Fleet == name {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return memberLess(out[i].Cluster, out[j].Cluster) })
	return out, nil
}

// memberLess orders NAME-2 before NAME-10.
func memberLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}
