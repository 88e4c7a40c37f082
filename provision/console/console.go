// Package console is `kindlab console`: the workshop's labs in a browser.
// An attendee's page shows one cluster's lab (its description, its
// instructions as steps with commands naming the attendee's context, a
// Check button per feature, Reset, the kubeconfig, the nodes and their
// pods); the instructor's page shows every cluster × check as a matrix that
// server-sent events keep current.
//
// The package knows nothing about kind or Kubernetes: it consumes what it
// needs through the small interfaces below (Lister, Checker, Resetter,
// Kubeconfigs, Inspector, Activity), which the CLI implements with kindlab's
// real provisioner and which tests drive through net/http/httptest.
//
// Security. Bound to loopback (the default), the console serves anyone on
// this machine, and only under the Host names 127.0.0.1, localhost and [::1]
// (a DNS-rebinding page cannot reach it under its own name). With Options.Tokens set (the
// CLI sets it whenever --listen is not a loopback address) every request
// needs a token, in the `token` query parameter or an `Authorization:
// Bearer` header: the instructor's token opens everything, an attendee's
// opens its one cluster; anything else is 401 with no data. Every request
// that changes something is a POST that must carry the page's CSRF token in
// the X-Kindlab-CSRF header and pass net/http's CrossOriginProtection
// (Sec-Fetch-Site / Origin), so another site cannot press a button.
package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Status is a check's outcome, as provision/check reports it ("pass",
// "fail", "unsupported", "skipped"), plus the console's own "running" and
// "" (not run yet).
type Status string

// Statuses the console shows besides the checks' own.
const (
	StatusRunning Status = "running"
	StatusNotRun  Status = ""
)

// Result is one check's outcome on one cluster, the JSON shape of
// provision/check.Result.
type Result struct {
	Name     string        `json:"name"`
	Feature  string        `json:"feature,omitempty"`
	Status   Status        `json:"status"`
	Reason   string        `json:"reason,omitempty"`
	Details  []string      `json:"details,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Instruction is one lab's `instructions` text; Lab is the lab it comes
// from (a lab that includes others has one per lab), whose name its
// commands use for node names.
type Instruction struct {
	Lab  string `json:"lab"`
	Text string `json:"text"`
}

// Cluster is one running cluster of a lab kindlab brought up.
type Cluster struct {
	// Name is the cluster's name (kind's), e.g. nftables-3.
	Name string `json:"name"`
	// Lab is the lab it runs, e.g. nftables.
	Lab   string `json:"lab"`
	Fleet string `json:"fleet,omitempty"`
	// Context is its kubeconfig context, e.g. kind-nftables-3.
	Context      string        `json:"context"`
	Description  string        `json:"description,omitempty"`
	Checks       []string      `json:"checks"`
	Instructions []Instruction `json:"-"`
	// Results are the last results saved for it (kindlab check, up,
	// reset), in any order; checks without one are not run yet.
	Results []Result `json:"-"`
}

// Node is one node of a cluster with its zone and pods.
type Node struct {
	Name  string `json:"name"`
	Role  string `json:"role,omitempty"`
	Zone  string `json:"zone,omitempty"`
	Ready bool   `json:"ready"`
	Pods  []Pod  `json:"pods"`
}

// Pod is one pod on a node.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Phase is the pod's phase (Running, Pending …).
	Phase string `json:"phase"`
	Ready bool   `json:"ready"`
}

// Operation is a kindlab command holding a cluster (up, down, reset, a
// bundle replay), as its lock file names it.
type Operation struct {
	Cluster string    `json:"cluster"`
	Command string    `json:"command"`
	PID     int       `json:"pid"`
	Since   time.Time `json:"since"`
}

// Lister lists the clusters the console serves, with their last results.
type Lister interface {
	Clusters(ctx context.Context) ([]Cluster, error)
}

// Checker runs checks on a cluster. It calls progress once per result as
// each finishes (in any order, one call at a time) and returns them all in
// the order of names. Cancelling ctx stops the run.
type Checker interface {
	Check(ctx context.Context, cluster string, names []string, progress func(Result)) ([]Result, error)
}

// Resetter puts a cluster's lab back to its start (kindlab reset), writing
// its progress lines to progress, and returns the checks it ran after.
type Resetter interface {
	Reset(ctx context.Context, cluster string, progress io.Writer) ([]Result, error)
}

// Kubeconfigs gives a cluster's kubeconfig file (YAML).
type Kubeconfigs interface {
	Kubeconfig(ctx context.Context, cluster string) ([]byte, error)
}

// Inspector lists a cluster's nodes with their zones and pods.
type Inspector interface {
	Nodes(ctx context.Context, cluster string) ([]Node, error)
}

// Activity lists the kindlab commands working on clusters right now (nil:
// the console shows only what it runs itself).
type Activity interface {
	Operations(ctx context.Context) ([]Operation, error)
}

// ProgressSource is an Activity that also reads what each operation prints
// as it runs (kindlab's: the lock holder's progress file, see
// state.Store.ProgressFile). The console follows it every Options.Follow
// while the operation runs, and once more when it ends.
type ProgressSource interface {
	// Progress returns op's progress lines from byte offset from on and the
	// offset to go on from. It returns at once, with a bounded number of
	// lines of bounded length (the source does not trust what it reads),
	// and starts from 0 when what it reads was started afresh.
	Progress(ctx context.Context, op Operation, from int64) (lines []string, next int64, err error)
}

// maxDrain is how many reads of an ended operation's progress the console
// makes at most, for what it printed since the last read.
const maxDrain = 16

// OpLinesShown is how many of an operation's last lines the instructor's
// page shows under its cluster.
const OpLinesShown = 12

// Options configure a Server.
type Options struct {
	Lister      Lister
	Checker     Checker
	Resetter    Resetter
	Kubeconfigs Kubeconfigs
	Inspector   Inspector
	Activity    Activity
	// Tokens turns token authentication on (see the package comment).
	Tokens bool
	// Refresh is how often the cluster list and saved results are read
	// again (default 2s).
	Refresh time.Duration
	// Follow is how often the activity and the running operations'
	// progress lines are read (default 500ms).
	Follow time.Duration
	// Title names the room on the instructor's page (e.g. the fleet).
	Title string
}

//go:embed templates/*.html static/*
var assets embed.FS

// Server is the console's HTTP handler and its live state.
type Server struct {
	opts  Options
	hub   *hub
	csrf  string
	pages *template.Template
	mux   *http.ServeMux
	// instructor is the instructor's token ("" without Tokens).
	instructor string

	mu sync.Mutex
	// clusters by name, in the order Lister gave them.
	clusters map[string]*clusterState
	order    []string
	// tokens maps an attendee token to its cluster; a cluster keeps its
	// token for the server's life, even if it goes and comes back.
	tokens  map[string]string
	tokenOf map[string]string
	// ops are the running operations by opKey; opOffset is how far each
	// one's progress was read.
	ops      map[string]Operation
	opOffset map[string]int64
	// opLines are the last OpLinesShown lines of each cluster's last
	// operation: its start, its progress, its end.
	opLines  map[string][]string
	log      []Event
	started  bool
	refreshd chan struct{}
}

type clusterState struct {
	Cluster
	results map[string]Result
	// busy is held by whatever runs on the cluster (a check run, a reset):
	// two runs of one check would fight over the objects it creates.
	busy chan struct{}
}

// New returns a console over opts. Call Start to load the clusters and keep
// them current.
func New(opts Options) (*Server, error) {
	if opts.Lister == nil || opts.Checker == nil || opts.Resetter == nil || opts.Kubeconfigs == nil || opts.Inspector == nil {
		return nil, fmt.Errorf("console: Lister, Checker, Resetter, Kubeconfigs and Inspector are all required")
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 2 * time.Second
	}
	if opts.Follow <= 0 {
		opts.Follow = 500 * time.Millisecond
	}
	pages, err := template.New("").Funcs(template.FuncMap{
		"statusText": statusText,
		"statusOf":   func(s string) Result { return Result{Status: Status(s)} },
		"join":       func(l []string) string { return strings.Join(l, " ") },
		"inc":        func(i int) int { return i + 1 },
		"add":        func(a, b int) int { return a + b },
		"shorten": func(s string) string {
			if r := []rune(s); len(r) > 90 {
				return string(r[:89]) + "…"
			}
			return s
		},
		"resultFor": func(rs []Result, name string) *Result {
			for i := range rs {
				if rs[i].Name == name {
					return &rs[i]
				}
			}
			return nil
		},
		"statusClass": func(s Status) string {
			if s == StatusNotRun {
				return "st-none"
			}
			return "st-" + string(s)
		},
	}).ParseFS(assets, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	s := &Server{
		opts:     opts,
		hub:      newHub(),
		csrf:     newToken(),
		pages:    pages,
		clusters: map[string]*clusterState{},
		tokens:   map[string]string{},
		tokenOf:  map[string]string{},
		ops:      map[string]Operation{},
		opOffset: map[string]int64{},
		opLines:  map[string][]string{},
		refreshd: make(chan struct{}),
	}
	if opts.Tokens {
		s.instructor = newToken()
	}
	s.routes()
	return s, nil
}

// newToken is 256 random bits, URL-safe: unguessable, and safe in a query.
func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Start reads the clusters once (an error is returned: the console has
// nothing to show) and then again every Options.Refresh until ctx is done,
// publishing what changed.
func (s *Server) Start(ctx context.Context) error {
	if err := s.refresh(ctx); err != nil {
		return err
	}
	s.follow(ctx)
	go every(ctx, s.opts.Follow, func() { s.follow(ctx) })
	go every(ctx, s.opts.Refresh, func() {
		if err := s.refresh(ctx); err != nil && ctx.Err() == nil {
			s.logLine("", "could not read the clusters: "+err.Error())
		}
	})
	return nil
}

// every calls f every d until ctx is done.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// InstructorToken is the instructor's token ("" without Options.Tokens).
func (s *Server) InstructorToken() string { return s.instructor }

// AttendeeTokens maps each cluster known so far to its attendee token
// (empty without Options.Tokens).
func (s *Server) AttendeeTokens() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	if !s.opts.Tokens {
		return out
	}
	for c, t := range s.tokenOf {
		out[c] = t
	}
	return out
}

// Clusters are the names of the clusters known so far, in the Lister's order.
func (s *Server) Clusters() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order)
}

// ServeHTTP serves the console.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// refresh reads the clusters, saved results and operations and publishes
// the differences.
func (s *Server) refresh(ctx context.Context) error {
	cs, err := s.opts.Lister.Clusters(ctx)
	if err != nil {
		return err
	}
	var events []Event
	s.mu.Lock()
	seen := map[string]bool{}
	var order []string
	changedList := false
	for _, c := range cs {
		seen[c.Name] = true
		order = append(order, c.Name)
		st, ok := s.clusters[c.Name]
		if !ok {
			st = &clusterState{results: map[string]Result{}, busy: make(chan struct{}, 1)}
			s.clusters[c.Name] = st
			if _, has := s.tokenOf[c.Name]; !has {
				t := newToken()
				s.tokenOf[c.Name], s.tokens[t] = t, c.Name
			}
			changedList = true
			if s.started {
				events = append(events, s.lineLocked(c.Name, fmt.Sprintf("cluster %s (lab %s) is up", c.Name, c.Lab)))
			}
		}
		saved := st.results
		st.Cluster = c
		st.results = saved
		// Saved results replace the console's own when they differ: a
		// `kindlab check` in a terminal shows on the page too. A check the
		// console is running keeps its "running" until it ends.
		for _, r := range c.Results {
			old, had := st.results[r.Name]
			if had && (old.Status == StatusRunning || sameResult(old, r)) {
				continue
			}
			st.results[r.Name] = r
			if s.started {
				events = append(events, Event{Type: "check", Cluster: c.Name, Result: &r})
			}
		}
	}
	for name := range s.clusters {
		if !seen[name] {
			delete(s.clusters, name)
			changedList = true
			events = append(events, s.lineLocked(name, fmt.Sprintf("cluster %s is gone", name)))
		}
	}
	s.order = order
	first := !s.started
	s.started = true
	s.mu.Unlock()
	if changedList && !first {
		events = append(events, Event{Type: "clusters"})
	}
	for _, e := range events {
		s.hub.publish(e)
	}
	if first {
		close(s.refreshd)
	}
	return nil
}

// opKey names one operation: a cluster's next holder is another one,
// even with the same command.
func opKey(op Operation) string {
	return fmt.Sprintf("%s\x00%d\x00%d\x00%s", op.Cluster, op.PID, op.Since.UnixNano(), op.Command)
}

// follow reads the operations and what they printed since the last call,
// and publishes it: a start line for a new operation (to the log, as the
// first of its lines), its new progress lines (under its cluster only:
// "progress" events), and for one that ended its last lines and its end
// line. Only Start's goroutine calls it; the reading happens outside s.mu,
// so a slow file never holds up a page.
func (s *Server) follow(ctx context.Context) {
	if s.opts.Activity == nil {
		return
	}
	ops, err := s.opts.Activity.Operations(ctx)
	if err != nil {
		return // best effort: a log of who works on what
	}
	src, _ := s.opts.Activity.(ProgressSource)
	now := map[string]Operation{}
	for _, op := range ops {
		now[opKey(op)] = op
	}
	s.mu.Lock()
	prev := maps.Clone(s.ops)
	offsets := maps.Clone(s.opOffset)
	s.mu.Unlock()

	type read struct {
		lines []string
		next  int64
	}
	reads := map[string]read{}
	if src != nil {
		for k, op := range now {
			lines, next, err := src.Progress(ctx, op, offsets[k])
			if err != nil {
				next = offsets[k]
			}
			reads[k] = read{lines, next}
		}
		// An operation that ended: what it printed after the last read,
		// up to maxDrain reads (the source bounds each).
		for k, op := range prev {
			if _, still := now[k]; still {
				continue
			}
			var r read
			from := offsets[k]
			for range maxDrain {
				lines, next, err := src.Progress(ctx, op, from)
				if err != nil || next == from {
					break
				}
				r.lines = append(r.lines, lines...)
				from = next
			}
			if len(r.lines) > OpLinesShown {
				r.lines = r.lines[len(r.lines)-OpLinesShown:]
			}
			reads[k] = r
		}
	}

	var events []Event
	s.mu.Lock()
	started := slices.Sorted(maps.Keys(now))
	for _, k := range started {
		op := now[k]
		if _, had := prev[k]; !had {
			line := fmt.Sprintf("%s: started at %s (pid %d)", op.Command, op.Since.Local().Format(time.TimeOnly), op.PID)
			s.opLines[op.Cluster] = nil
			events = append(events, s.lineLocked(op.Cluster, line), s.opLineLocked(op.Cluster, line))
		}
		for _, l := range reads[k].lines {
			events = append(events, s.opLineLocked(op.Cluster, l))
		}
		if r, ok := reads[k]; ok {
			s.opOffset[k] = r.next
		}
	}
	for _, k := range slices.Sorted(maps.Keys(prev)) {
		if _, still := now[k]; still {
			continue
		}
		op := prev[k]
		for _, l := range reads[k].lines {
			events = append(events, s.opLineLocked(op.Cluster, l))
		}
		line := fmt.Sprintf("%s: ended after %s", op.Command, time.Since(op.Since).Round(time.Second))
		events = append(events, s.lineLocked(op.Cluster, line), s.opLineLocked(op.Cluster, line))
		delete(s.opOffset, k)
	}
	s.ops = now
	s.mu.Unlock()
	for _, e := range events {
		s.hub.publish(e)
	}
}

// opLineLocked keeps a line among its cluster's last OpLinesShown and
// returns its "progress" event.
func (s *Server) opLineLocked(cluster, line string) Event {
	l := append(s.opLines[cluster], line)
	if len(l) > OpLinesShown {
		l = slices.Clone(l[len(l)-OpLinesShown:])
	}
	s.opLines[cluster] = l
	return Event{Type: "progress", Cluster: cluster, Line: line, Time: time.Now()}
}

func sameResult(a, b Result) bool {
	return a.Status == b.Status && a.Reason == b.Reason && a.Duration == b.Duration
}

// logLine publishes a progress line (cluster "" for the console itself).
func (s *Server) logLine(cluster, line string) {
	s.mu.Lock()
	e := s.lineLocked(cluster, line)
	s.mu.Unlock()
	s.hub.publish(e)
}

// lineLocked records a line in the instructor's log (the last 200 are
// kept for a page loaded later) and returns its event.
func (s *Server) lineLocked(cluster, line string) Event {
	e := Event{Type: "line", Cluster: cluster, Line: line, Time: time.Now()}
	s.log = append(s.log, e)
	if len(s.log) > 200 {
		s.log = slices.Clone(s.log[len(s.log)-200:])
	}
	return e
}

// scope is what a request may see: every cluster, or one.
type scope struct {
	all     bool
	cluster string
	token   string
}

func (sc scope) allows(cluster string) bool { return sc.all || sc.cluster == cluster }

// authenticate returns the request's scope, or false when it has none.
func (s *Server) authenticate(r *http.Request) (scope, bool) {
	if !s.opts.Tokens {
		return scope{all: true}, true
	}
	tok := r.URL.Query().Get("token")
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		tok = strings.TrimPrefix(h, "Bearer ")
	}
	if tok == "" {
		return scope{}, false
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.instructor)) == 1 {
		return scope{all: true, token: tok}, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Every token is compared, in constant time each, so the time taken
	// says nothing about which one came close.
	cluster := ""
	for t, c := range s.tokens {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(t)) == 1 {
			cluster = c
		}
	}
	if cluster == "" {
		return scope{}, false
	}
	return scope{cluster: cluster, token: tok}, true
}

// loopbackHost reports whether a Host header names this machine's
// loopback: what a browser sends for http://127.0.0.1:PORT, never for a
// rebound DNS name.
func loopbackHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// guard wraps every handler: Host check without tokens, authentication,
// and the cluster path value checked against the scope. A refused request
// gets a status and one line, never data.
func (s *Server) guard(h func(http.ResponseWriter, *http.Request, scope)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer") // the token is in the URL
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
		if !s.opts.Tokens && !loopbackHost(r.Host) {
			http.Error(w, "this console answers on 127.0.0.1 only (kindlab console --listen ADDR serves a room, with tokens)", http.StatusForbidden)
			return
		}
		sc, ok := s.authenticate(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kindlab console"`)
			http.Error(w, "401 unauthorized: open the URL kindlab console printed (it carries your token)", http.StatusUnauthorized)
			return
		}
		if c := r.PathValue("cluster"); c != "" {
			if !sc.allows(c) {
				// The same answer as for an unknown cluster: a token does
				// not learn which other clusters exist.
				http.Error(w, "404 no such cluster", http.StatusNotFound)
				return
			}
			if s.cluster(c) == nil {
				http.Error(w, "404 no such cluster", http.StatusNotFound)
				return
			}
		}
		if r.Method == http.MethodPost {
			if subtle.ConstantTimeCompare([]byte(r.Header.Get(csrfHeader)), []byte(s.csrf)) != 1 {
				http.Error(w, "403 missing or wrong "+csrfHeader+" header (GET /api/session gives it)", http.StatusForbidden)
				return
			}
		}
		h(w, r, sc)
	}
}

const csrfHeader = "X-Kindlab-CSRF"

// cluster returns a copy of a cluster's state, nil if unknown.
func (s *Server) cluster(name string) *clusterState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.clusters[name]
	if !ok {
		return nil
	}
	cp := *st
	cp.results = map[string]Result{}
	for k, v := range st.results {
		cp.results[k] = v
	}
	return &cp
}

// busyOf is the cluster's run semaphore (nil if unknown).
func (s *Server) busyOf(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.clusters[name]; ok {
		return st.busy
	}
	return nil
}

// setResult records a result and publishes it.
func (s *Server) setResult(cluster string, r Result) {
	s.mu.Lock()
	if st, ok := s.clusters[cluster]; ok {
		st.results[r.Name] = r
	}
	s.mu.Unlock()
	s.hub.publish(Event{Type: "check", Cluster: cluster, Result: &r})
}

// ordered returns a cluster's results in its checks' order, one per check.
func (st *clusterState) ordered() []Result {
	out := make([]Result, 0, len(st.Checks))
	for _, n := range st.Checks {
		out = append(out, st.result(n))
	}
	return out
}

// result is a check's last result, StatusNotRun if it has none.
func (st *clusterState) result(name string) Result {
	if r, ok := st.results[name]; ok {
		return r
	}
	return Result{Name: name, Status: StatusNotRun}
}

// statusText is what a status reads as: every status has words, not only a colour.
func statusText(s Status) string {
	switch s {
	case "pass":
		return "✓ pass"
	case "fail":
		return "✗ fail"
	case "unsupported":
		return "– unsupported"
	case "skipped":
		return "– skipped"
	case StatusRunning:
		return "… running"
	case StatusNotRun:
		return "not run yet"
	}
	return string(s)
}

// staticFS is the embedded static directory.
func staticFS() fs.FS {
	sub, err := fs.Sub(assets, "static")
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}

// sortedClusters returns the clusters in the Lister's order.
func (s *Server) sortedClusters(sc scope) []*clusterState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*clusterState
	for _, n := range s.order {
		if st, ok := s.clusters[n]; ok && sc.allows(n) {
			cp := *st
			cp.results = map[string]Result{}
			for k, v := range st.results {
				cp.results[k] = v
			}
			out = append(out, &cp)
		}
	}
	return out
}

// allChecks is the union of the clusters' checks: the matrix's columns, in
// the order they first appear.
func allChecks(cs []*clusterState) []string {
	var out []string
	for _, c := range cs {
		for _, n := range c.Checks {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// opsFor lists the running operations, sorted by cluster.
func (s *Server) opsFor(sc scope) []Operation {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Operation
	for _, op := range s.ops {
		if sc.allows(op.Cluster) {
			out = append(out, op)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}
