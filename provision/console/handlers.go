package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.guard(s.instructorPage))
	m.HandleFunc("GET /c/{cluster}", s.guard(s.attendeePage))
	m.HandleFunc("GET /static/{file}", s.guard(s.static))
	m.HandleFunc("GET /api/session", s.guard(s.session))
	m.HandleFunc("GET /api/clusters", s.guard(s.apiClusters))
	m.HandleFunc("GET /api/clusters/{cluster}", s.guard(s.apiCluster))
	m.HandleFunc("GET /api/clusters/{cluster}/nodes", s.guard(s.apiNodes))
	m.HandleFunc("GET /api/clusters/{cluster}/kubeconfig", s.guard(s.apiKubeconfig))
	m.HandleFunc("POST /api/clusters/{cluster}/checks", s.guard(s.apiCheck))
	m.HandleFunc("POST /api/clusters/{cluster}/checks/{check}", s.guard(s.apiCheck))
	m.HandleFunc("POST /api/clusters/{cluster}/reset", s.guard(s.apiReset))
	m.HandleFunc("GET /api/events", s.guard(s.events))
	// Every other path is guarded too: without a token, a 404 would tell
	// which paths exist.
	m.HandleFunc("/", s.guard(func(w http.ResponseWriter, r *http.Request, _ scope) { http.NotFound(w, r) }))
	// net/http's cross-origin protection (Sec-Fetch-Site, then Origin
	// against Host) in front of everything: another site's page cannot
	// even send a POST, whatever the CSRF header says.
	s.mux = http.NewServeMux()
	s.mux.Handle("/", http.NewCrossOriginProtection().Handler(m))
}

// wantsJSON is ?o=json or an Accept of application/json: the pages' data
// for scripts.
func wantsJSON(r *http.Request) bool {
	return r.URL.Query().Get("o") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func jsonError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// ClusterView is a cluster as the JSON endpoints and the pages show it.
type ClusterView struct {
	Cluster
	Steps   []Step   `json:"steps,omitempty"`
	Results []Result `json:"results"`
	// Passed counts the passed checks; StuckAt is the first check, in the
	// lab's order, that failed or has not run: where an attendee is, and
	// StuckWhy its reason when it failed.
	Passed   int    `json:"passed"`
	StuckAt  string `json:"stuckAt,omitempty"`
	StuckWhy string `json:"stuckWhy,omitempty"`
	// URL is the attendee page (with its token when tokens are on).
	URL string `json:"url"`
}

func (s *Server) view(st *clusterState, sc scope, steps bool) ClusterView {
	v := ClusterView{Cluster: st.Cluster, Results: st.ordered(), URL: s.attendeeURL(st.Name, sc)}
	if steps {
		v.Steps = Steps(st.Cluster)
	}
	for _, r := range v.Results {
		switch {
		case r.Status == "pass":
			v.Passed++
		case v.StuckAt == "" && r.Status != "unsupported" && r.Status != "skipped":
			v.StuckAt = r.Name
			if r.Status == "fail" {
				v.StuckWhy = r.Reason
			}
		}
	}
	return v
}

// attendeeURL is the path of a cluster's page: an instructor's link
// carries the attendee's token, so the instructor can hand it out.
func (s *Server) attendeeURL(cluster string, sc scope) string {
	u := "/c/" + url.PathEscape(cluster)
	if !s.opts.Tokens {
		return u
	}
	tok := sc.token
	if sc.all {
		s.mu.Lock()
		tok = s.tokenOf[cluster]
		s.mu.Unlock()
	}
	return u + "?token=" + url.QueryEscape(tok)
}

type pageData struct {
	Title    string
	Token    string
	CSRF     string
	Tokens   bool
	Clusters []ClusterView
	Checks   []string
	Cluster  ClusterView
	Log      []Event
	Ops      []Operation
	// OpLines are the last lines of each cluster's last up, down, reset
	// or replay, shown under its row; OpBoxes those of clusters that have
	// no row (an up creating one, a down that removed it).
	OpLines map[string][]string
	OpBoxes []OpBox
}

// OpBox is a cluster's last operation lines, for a cluster the matrix has
// no row for.
type OpBox struct {
	Cluster string
	Lines   []string
}

// opLinesFor returns the operations' last lines: by cluster for those in
// rows, as boxes (sorted by cluster) for the others.
func (s *Server) opLinesFor(rows []ClusterView) (map[string][]string, []OpBox) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byCluster := map[string][]string{}
	var boxes []OpBox
	for c, l := range s.opLines {
		if slices.ContainsFunc(rows, func(v ClusterView) bool { return v.Name == c }) {
			byCluster[c] = slices.Clone(l)
		} else {
			boxes = append(boxes, OpBox{Cluster: c, Lines: slices.Clone(l)})
		}
	}
	slices.SortFunc(boxes, func(a, b OpBox) int { return strings.Compare(a.Cluster, b.Cluster) })
	return byCluster, boxes
}

func (s *Server) page(w http.ResponseWriter, name string, d pageData) {
	var b bytes.Buffer
	if err := s.pages.ExecuteTemplate(&b, name, d); err != nil {
		http.Error(w, "render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = b.Write([]byte{})
	_, _ = w.Write(b.Bytes())
}

func (s *Server) instructorPage(w http.ResponseWriter, r *http.Request, sc scope) {
	if !sc.all {
		// An attendee who opens the root lands on their own page.
		http.Redirect(w, r, s.attendeeURL(sc.cluster, sc), http.StatusSeeOther)
		return
	}
	cs := s.sortedClusters(sc)
	views := make([]ClusterView, 0, len(cs))
	for _, c := range cs {
		views = append(views, s.view(c, sc, false))
	}
	opLines, opBoxes := s.opLinesFor(views)
	if wantsJSON(r) {
		all := maps.Clone(opLines)
		for _, b := range opBoxes {
			all[b.Cluster] = b.Lines
		}
		writeJSON(w, http.StatusOK, map[string]any{"clusters": views, "checks": allChecks(cs), "operations": s.opsFor(sc), "operationLines": all})
		return
	}
	s.mu.Lock()
	log := slices.Clone(s.log)
	s.mu.Unlock()
	title := s.opts.Title
	if title == "" {
		title = "every lab on this engine"
	}
	s.page(w, "instructor.html", pageData{Title: title, Token: sc.token, CSRF: s.csrf, Tokens: s.opts.Tokens,
		Clusters: views, Checks: allChecks(cs), Log: log, Ops: s.opsFor(sc), OpLines: opLines, OpBoxes: opBoxes})
}

func (s *Server) attendeePage(w http.ResponseWriter, r *http.Request, sc scope) {
	st := s.cluster(r.PathValue("cluster"))
	v := s.view(st, sc, true)
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, v)
		return
	}
	s.page(w, "attendee.html", pageData{Title: st.Lab, Token: sc.token, CSRF: s.csrf, Tokens: s.opts.Tokens, Cluster: v})
}

func (s *Server) static(w http.ResponseWriter, r *http.Request, _ scope) {
	http.ServeFileFS(w, r, staticFS(), r.PathValue("file"))
}

// session gives a script what a page has: the CSRF token for POSTs and
// what its token may see.
func (s *Server) session(w http.ResponseWriter, r *http.Request, sc scope) {
	writeJSON(w, http.StatusOK, map[string]any{"csrf": s.csrf, "instructor": sc.all, "cluster": sc.cluster})
}

func (s *Server) apiClusters(w http.ResponseWriter, r *http.Request, sc scope) {
	cs := s.sortedClusters(sc)
	views := make([]ClusterView, 0, len(cs))
	for _, c := range cs {
		views = append(views, s.view(c, sc, false))
	}
	writeJSON(w, http.StatusOK, views)
}

func (s *Server) apiCluster(w http.ResponseWriter, r *http.Request, sc scope) {
	writeJSON(w, http.StatusOK, s.view(s.cluster(r.PathValue("cluster")), sc, true))
}

func (s *Server) apiNodes(w http.ResponseWriter, r *http.Request, _ scope) {
	c := r.PathValue("cluster")
	nodes, err := s.opts.Inspector.Nodes(r.Context(), c)
	if err != nil {
		jsonError(w, http.StatusBadGateway, fmt.Errorf("nodes of %s: %w", c, err))
		return
	}
	if nodes == nil {
		nodes = []Node{}
	}
	writeJSON(w, http.StatusOK, nodes)
}

func (s *Server) apiKubeconfig(w http.ResponseWriter, r *http.Request, sc scope) {
	c := r.PathValue("cluster")
	if s.opts.Tokens && sc.all {
		// Credentials go to the attendee whose cluster it is, by their
		// own token only: the instructor's page links each attendee's page.
		http.Error(w, "403 a kubeconfig is served with its attendee's token only", http.StatusForbidden)
		return
	}
	kc, err := s.opts.Kubeconfigs.Kubeconfig(r.Context(), c)
	if err != nil {
		jsonError(w, http.StatusBadGateway, fmt.Errorf("kubeconfig of %s: %w", c, err))
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", "kubeconfig-"+c+".yaml"))
	_, _ = w.Write(kc)
}

// acquire takes a cluster's run slot, waiting while another run holds it,
// until ctx is done.
func (s *Server) acquire(ctx context.Context, cluster string) (func(), error) {
	busy := s.busyOf(cluster)
	if busy == nil {
		return nil, fmt.Errorf("no such cluster %s", cluster)
	}
	select {
	case busy <- struct{}{}:
		return func() { <-busy }, nil
	default:
	}
	s.logLine(cluster, cluster+": waiting for the run before this one to end")
	select {
	case busy <- struct{}{}:
		return func() { <-busy }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// apiCheck runs one check (…/checks/NAME) or all the cluster's checks.
// The run lives as long as the request: when the page that asked goes
// (its connection closes), the run is cancelled and the checks it did not
// finish get their previous result back.
func (s *Server) apiCheck(w http.ResponseWriter, r *http.Request, _ scope) {
	c := r.PathValue("cluster")
	st := s.cluster(c)
	names := st.Checks
	if n := r.PathValue("check"); n != "" {
		if !slices.Contains(st.Checks, n) {
			jsonError(w, http.StatusNotFound, fmt.Errorf("cluster %s has no check %q (its checks: %s)", c, n, strings.Join(st.Checks, ", ")))
			return
		}
		names = []string{n}
	}
	if len(names) == 0 {
		writeJSON(w, http.StatusOK, []Result{})
		return
	}
	ctx := r.Context()
	release, err := s.acquire(ctx, c)
	if err != nil {
		return // the page went while it waited
	}
	defer release()
	prev := map[string]Result{}
	for _, n := range names {
		prev[n] = st.result(n)
		s.setResult(c, Result{Name: n, Status: StatusRunning})
	}
	s.logLine(c, fmt.Sprintf("%s: checking %s", c, strings.Join(names, ", ")))
	var mu sync.Mutex
	done := map[string]bool{}
	start := time.Now()
	results, err := s.opts.Checker.Check(ctx, c, names, func(res Result) {
		if ctx.Err() != nil {
			return // cut short: not a result
		}
		mu.Lock()
		done[res.Name] = true
		mu.Unlock()
		s.setResult(c, res)
	})
	if ctx.Err() != nil {
		mu.Lock()
		for _, n := range names {
			if !done[n] {
				s.setResult(c, prev[n])
			}
		}
		mu.Unlock()
		s.logLine(c, fmt.Sprintf("%s: check run cancelled (its page went)", c))
		return
	}
	if err != nil {
		for _, n := range names {
			if !done[n] {
				s.setResult(c, Result{Name: n, Status: "fail", Reason: err.Error()})
			}
		}
		s.logLine(c, fmt.Sprintf("%s: check run failed: %v", c, err))
		jsonError(w, http.StatusBadGateway, err)
		return
	}
	for _, res := range results {
		if !done[res.Name] {
			s.setResult(c, res)
		}
	}
	s.logLine(c, fmt.Sprintf("%s: %s in %s", c, summary(results), time.Since(start).Round(100*time.Millisecond)))
	writeJSON(w, http.StatusOK, results)
}

func summary(rs []Result) string {
	count := map[Status]int{}
	for _, r := range rs {
		count[r.Status]++
	}
	var parts []string
	for _, st := range []Status{"pass", "fail", "unsupported", "skipped"} {
		if count[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", count[st], st))
		}
	}
	return strings.Join(parts, ", ")
}

// apiReset resets a cluster's lab, streaming its progress lines as
// events. Unlike a check run it does not stop when the page goes: a reset
// cut in the middle would leave the lab half put back.
func (s *Server) apiReset(w http.ResponseWriter, r *http.Request, _ scope) {
	c := r.PathValue("cluster")
	ctx := context.WithoutCancel(r.Context())
	release, err := s.acquire(r.Context(), c)
	if err != nil {
		return
	}
	defer release()
	// The reset ends with the lab's checks: its cells show them running
	// meanwhile, and get their old result back if the reset fails.
	st := s.cluster(c)
	for _, n := range st.Checks {
		s.setResult(c, Result{Name: n, Status: StatusRunning})
	}
	restore := func(got []Result) {
		for _, n := range st.Checks {
			if !slices.ContainsFunc(got, func(r Result) bool { return r.Name == n }) {
				s.setResult(c, st.result(n))
			}
		}
	}
	s.logLine(c, c+": reset started")
	lw := &lineWriter{emit: func(line string) { s.logLine(c, c+": "+line) }}
	start := time.Now()
	results, err := s.opts.Resetter.Reset(ctx, c, lw)
	lw.Close()
	if err != nil {
		restore(nil)
		s.logLine(c, fmt.Sprintf("%s: reset failed: %v", c, err))
		jsonError(w, http.StatusBadGateway, fmt.Errorf("reset %s: %w", c, err))
		return
	}
	for _, res := range results {
		s.setResult(c, res)
	}
	restore(results)
	s.logLine(c, fmt.Sprintf("%s: reset done in %s (%s)", c, time.Since(start).Round(100*time.Millisecond), summary(results)))
	if results == nil {
		results = []Result{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"cluster": c, "checks": results})
}

// lineWriter turns written bytes into lines.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(string)
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimRight(string(l.buf[:i]), "\r"); strings.TrimSpace(line) != "" {
			l.emit(line)
		}
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

// Close emits a last line without a newline.
func (l *lineWriter) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.TrimSpace(string(l.buf)) != "" {
		l.emit(string(l.buf))
	}
	l.buf = nil
}

// events is the server-sent event stream of what the token may see
// (text/event-stream; each event's data is an Event as JSON). It ends when
// the page goes, or the hub drops it for falling behind.
func (s *Server) events(w http.ResponseWriter, r *http.Request, sc scope) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	sub := s.hub.subscribe(sc)
	defer s.hub.unsubscribe(sub)
	// The first event tells the page the stream is open: a page that
	// reconnected reloads what it missed.
	if _, err := fmt.Fprint(w, "retry: 2000\nevent: hello\ndata: {}\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.gone:
			return
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case e := <-sub.ch:
			b, _ := json.Marshal(e)
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Type, b); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
