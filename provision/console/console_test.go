package console

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	kindlab "github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/lab"
)

// room is the console's other side for handler tests: two clusters whose
// lab is the real nftables lab file (its instructions as the lab file has
// them), checks that answer what the test tells them, and a record of
// what was asked. The kind-backed implementations are exercised against a
// real lab by the browser test in cmd/kindlab/app.
type room struct {
	mu       sync.Mutex
	clusters []Cluster
	// block makes Check wait for its context (a check that takes long).
	block    bool
	checkCtx chan error
	checked  []string
	resets   []string
	status   Status
}

func newRoom(t *testing.T) *room {
	t.Helper()
	c := lab.NewCatalog()
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("nftables", lab.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ins []Instruction
	for _, i := range r.Instructions {
		ins = append(ins, Instruction{Lab: i.Lab, Text: i.Text})
	}
	mk := func(name string) Cluster {
		return Cluster{Name: name, Lab: "nftables", Fleet: "nftables", Context: "kind-" + name, Description: r.Description,
			Checks: []string{"nftables", "node-bound-token"}, Instructions: ins}
	}
	return &room{clusters: []Cluster{mk("nftables-1"), mk("nftables-2")}, status: "pass", checkCtx: make(chan error, 1)}
}

func (r *room) Clusters(context.Context) ([]Cluster, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Cluster, len(r.clusters))
	copy(out, r.clusters)
	return out, nil
}

func (r *room) Check(ctx context.Context, cluster string, names []string, progress func(Result)) ([]Result, error) {
	r.mu.Lock()
	r.checked = append(r.checked, cluster+"/"+strings.Join(names, ","))
	block, st := r.block, r.status
	r.mu.Unlock()
	if block {
		<-ctx.Done()
		r.checkCtx <- ctx.Err()
		return nil, ctx.Err()
	}
	var out []Result
	for _, n := range names {
		res := Result{Name: n, Feature: n, Status: st, Reason: "reason of " + n + " on " + cluster, Duration: time.Second}
		progress(res)
		out = append(out, res)
	}
	return out, nil
}

func (r *room) Reset(ctx context.Context, cluster string, progress io.Writer) ([]Result, error) {
	r.mu.Lock()
	r.resets = append(r.resets, cluster)
	r.mu.Unlock()
	fmt.Fprintln(progress, " • Deleting what is not the lab's")
	fmt.Fprint(progress, " ✓ Deleting what is not the lab's (0.1s)\n • Waiting for the workloads")
	return []Result{{Name: "nftables", Status: "pass"}}, nil
}

func (r *room) Kubeconfig(_ context.Context, cluster string) ([]byte, error) {
	return []byte("apiVersion: v1\nkind: Config\ncurrent-context: kind-" + cluster + "\n"), nil
}

func (r *room) Nodes(_ context.Context, cluster string) ([]Node, error) {
	return []Node{{Name: cluster + "-control-plane", Zone: "zone-a", Ready: true, Pods: []Pod{{Namespace: "kindlab-nftables", Name: "echo-1", Phase: "Running", Ready: true}}}}, nil
}

func start(t *testing.T, r *room, tokens bool) (*Server, *httptest.Server) {
	t.Helper()
	s, err := New(Options{Lister: r, Checker: r, Resetter: r, Kubeconfigs: r, Inspector: r, Tokens: tokens, Refresh: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(ctx, s)
	t.Cleanup(func() { cancel(); ts.Close() })
	return s, ts
}

// newTestServer serves s until ctx is done (its event streams end then).
func newTestServer(ctx context.Context, s *Server) *httptest.Server {
	ts := httptest.NewUnstartedServer(s)
	ts.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	ts.Start()
	return ts
}

type req struct {
	method, path, token, csrf, origin, host string
}

func do(t *testing.T, ts *httptest.Server, q req) (int, string, http.Header) {
	t.Helper()
	if q.method == "" {
		q.method = http.MethodGet
	}
	hr, err := http.NewRequest(q.method, ts.URL+q.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.token != "" {
		hr.Header.Set("Authorization", "Bearer "+q.token)
	}
	if q.csrf != "" {
		hr.Header.Set(csrfHeader, q.csrf)
	}
	if q.origin != "" {
		hr.Header.Set("Origin", q.origin)
	}
	if q.host != "" {
		hr.Host = q.host
	}
	resp, err := ts.Client().Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// Every endpoint the console serves, with the cluster it is about ("" =
// none): the token tests walk them all.
var endpoints = []struct{ method, path, cluster string }{
	{"GET", "/", ""},
	{"GET", "/?o=json", ""},
	{"GET", "/c/nftables-2", "nftables-2"},
	{"GET", "/c/nftables-2?o=json", "nftables-2"},
	{"GET", "/static/console.js", ""},
	{"GET", "/static/console.css", ""},
	{"GET", "/api/session", ""},
	{"GET", "/api/clusters", ""},
	{"GET", "/api/clusters/nftables-2", "nftables-2"},
	{"GET", "/api/clusters/nftables-2/nodes", "nftables-2"},
	{"GET", "/api/clusters/nftables-2/kubeconfig", "nftables-2"},
	{"POST", "/api/clusters/nftables-2/checks", "nftables-2"},
	{"POST", "/api/clusters/nftables-2/checks/nftables", "nftables-2"},
	{"POST", "/api/clusters/nftables-2/reset", "nftables-2"},
	{"GET", "/api/events", ""},
	{"GET", "/no/such/path", ""},
}

func TestLoopbackServesEveryEndpoint(t *testing.T) {
	r := newRoom(t)
	s, ts := start(t, r, false)
	for _, e := range endpoints {
		if e.path == "/api/events" || e.path == "/no/such/path" {
			continue
		}
		code, body, _ := do(t, ts, req{method: e.method, path: e.path, csrf: s.csrf})
		if code != http.StatusOK {
			t.Errorf("%s %s: %d %s", e.method, e.path, code, body)
		}
	}
	if code, _, _ := do(t, ts, req{path: "/no/such/path"}); code != http.StatusNotFound {
		t.Errorf("unknown path: %d, want 404", code)
	}
	// The instructor's page: both clusters, every check as a column,
	// statuses in words.
	_, body, _ := do(t, ts, req{path: "/"})
	for _, want := range []string{"nftables-1", "nftables-2", `data-check="node-bound-token"`, "✓ pass", "0/2 pass; stuck at nftables"} {
		if !strings.Contains(body, want) {
			t.Errorf("instructor page lacks %q", want)
		}
	}
	// The attendee's page: the lab's steps with commands for its context
	// and node names, a labelled Check button per check, the kubeconfig.
	_, body, _ = do(t, ts, req{path: "/c/nftables-2"})
	for _, want := range []string{
		"kubectl --context kind-nftables-2 -n kindlab-nftables get svc echo",
		"docker exec nftables-2-worker nft list table ip kube-proxy",
		"kindlab check nftables --name nftables-2",
		`aria-label="Check node-bound-token"`,
		"/api/clusters/nftables-2/kubeconfig",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("attendee page lacks %q", want)
		}
	}
	if _, body, _ = do(t, ts, req{path: "/c/nftables-1"}); !strings.Contains(body, "not run yet") {
		t.Error("a check that never ran does not read \"not run yet\"")
	}
	var v ClusterView
	_, body, _ = do(t, ts, req{path: "/c/nftables-2?o=json"})
	if err := json.Unmarshal([]byte(body), &v); err != nil || v.Name != "nftables-2" || len(v.Steps) != 4 || v.Context != "kind-nftables-2" {
		t.Errorf("attendee JSON: %v %+v", err, v)
	}
	code, body, h := do(t, ts, req{path: "/api/clusters/nftables-1/kubeconfig"})
	if code != 200 || !strings.Contains(body, "kind-nftables-1") || !strings.Contains(h.Get("Content-Disposition"), "kubeconfig-nftables-1.yaml") {
		t.Errorf("kubeconfig: %d %q %v", code, body, h)
	}
	var nodes []Node
	_, body, _ = do(t, ts, req{path: "/api/clusters/nftables-1/nodes"})
	if err := json.Unmarshal([]byte(body), &nodes); err != nil || len(nodes) != 1 || nodes[0].Zone != "zone-a" || len(nodes[0].Pods) != 1 {
		t.Errorf("nodes: %v %s", err, body)
	}
	if _, body, h := do(t, ts, req{path: "/static/console.js"}); !strings.Contains(body, "EventSource") || !strings.Contains(h.Get("Content-Type"), "javascript") {
		t.Errorf("console.js: %v", h)
	}
}

// Bound to loopback without tokens, a request under another Host name (a
// DNS-rebinding page) gets nothing.
func TestLoopbackRefusesForeignHost(t *testing.T) {
	_, ts := start(t, newRoom(t), false)
	for _, host := range []string{"evil.example", "evil.example:8480", "192.0.2.1:8480"} {
		code, body, _ := do(t, ts, req{path: "/api/clusters", host: host})
		if code != http.StatusForbidden || strings.Contains(body, "nftables-1") {
			t.Errorf("Host %s: %d %q", host, code, body)
		}
	}
	for _, host := range []string{"127.0.0.1:8480", "localhost:8480", "[::1]:8480"} {
		if code, _, _ := do(t, ts, req{path: "/api/clusters", host: host}); code != http.StatusOK {
			t.Errorf("Host %s: %d", host, code)
		}
	}
}

func TestTokensRefuseEveryEndpointWithoutOne(t *testing.T) {
	r := newRoom(t)
	s, ts := start(t, r, true)
	for _, tok := range []string{"", "not-a-token", s.InstructorToken() + "x"} {
		for _, e := range endpoints {
			code, body, h := do(t, ts, req{method: e.method, path: e.path, token: tok, csrf: s.csrf})
			if code != http.StatusUnauthorized {
				t.Errorf("%s %s token %q: %d, want 401", e.method, e.path, tok, code)
			}
			if strings.Contains(body, "nftables") || strings.Contains(body, "kind-") || h.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s token %q: leaks data or lacks WWW-Authenticate: %q", e.method, e.path, tok, body)
			}
		}
	}
	// A token in the query works as one in the header (EventSource and
	// links cannot set headers); a wrong one is refused the same way.
	if code, _, _ := do(t, ts, req{path: "/?token=" + s.InstructorToken()}); code != http.StatusOK {
		t.Errorf("instructor token in the query: %d", code)
	}
	if code, _, _ := do(t, ts, req{path: "/?token=" + s.AttendeeTokens()["nftables-1"] + "A"}); code != http.StatusUnauthorized {
		t.Errorf("altered token in the query: %d", code)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.checked) != 0 || len(r.resets) != 0 {
		t.Errorf("refused requests reached the lab: checks %v resets %v", r.checked, r.resets)
	}
}

func TestAttendeeTokenIsScopedToItsCluster(t *testing.T) {
	r := newRoom(t)
	s, ts := start(t, r, true)
	toks := s.AttendeeTokens()
	one := toks["nftables-1"]
	if one == "" || toks["nftables-2"] == "" || one == toks["nftables-2"] || one == s.InstructorToken() {
		t.Fatalf("tokens: %v instructor %s", toks, s.InstructorToken())
	}
	// nftables-1's token opens nothing of nftables-2, and the answer is
	// the one an unknown cluster gets.
	for _, e := range endpoints {
		if e.cluster != "nftables-2" {
			continue
		}
		code, body, _ := do(t, ts, req{method: e.method, path: e.path, token: one, csrf: s.csrf})
		if code != http.StatusNotFound || strings.Contains(body, "nftables-2") {
			t.Errorf("%s %s with nftables-1's token: %d %q", e.method, e.path, code, body)
		}
		codeUnknown, _, _ := do(t, ts, req{method: e.method, path: strings.Replace(e.path, "nftables-2", "nope", 1), token: one, csrf: s.csrf})
		if codeUnknown != code {
			t.Errorf("%s: another's cluster %d, an unknown one %d: the answer tells them apart", e.path, code, codeUnknown)
		}
	}
	// Its own cluster works, lists show only it, the root sends it home.
	if code, _, _ := do(t, ts, req{path: "/c/nftables-1", token: one}); code != http.StatusOK {
		t.Errorf("own page: %d", code)
	}
	_, body, _ := do(t, ts, req{path: "/api/clusters", token: one})
	if !strings.Contains(body, "nftables-1") || strings.Contains(body, "nftables-2") {
		t.Errorf("cluster list for nftables-1's token: %s", body)
	}
	hr, _ := http.NewRequest("GET", ts.URL+"/", nil)
	hr.Header.Set("Authorization", "Bearer "+one)
	cl := ts.Client()
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cl.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/c/nftables-1?token=") {
		t.Errorf("root with an attendee token: %d %s", resp.StatusCode, loc)
	}
	// The event stream of nftables-1 carries nothing of nftables-2.
	events := stream(t, ts, one)
	if code, _, _ := do(t, ts, req{method: "POST", path: "/api/clusters/nftables-2/checks", token: s.InstructorToken(), csrf: s.csrf}); code != 200 {
		t.Fatalf("instructor check: %d", code)
	}
	if code, _, _ := do(t, ts, req{method: "POST", path: "/api/clusters/nftables-1/checks/nftables", token: one, csrf: s.csrf}); code != 200 {
		t.Fatalf("attendee check: %d", code)
	}
	got := events.until(t, func(e Event) bool { return e.Type == "check" && e.Cluster == "nftables-1" && e.Result.Status == "pass" })
	for _, e := range got {
		if e.Cluster != "nftables-1" {
			t.Errorf("nftables-1's stream got an event of %q: %+v", e.Cluster, e)
		}
	}
	// Kubeconfigs: the attendee's own token only, not the instructor's.
	if code, body, _ := do(t, ts, req{path: "/api/clusters/nftables-1/kubeconfig", token: one}); code != 200 || !strings.Contains(body, "kind-nftables-1") {
		t.Errorf("own kubeconfig: %d", code)
	}
	if code, body, _ := do(t, ts, req{path: "/api/clusters/nftables-1/kubeconfig", token: s.InstructorToken()}); code != http.StatusForbidden || strings.Contains(body, "Config") {
		t.Errorf("kubeconfig with the instructor's token: %d %q", code, body)
	}
}

func TestCSRF(t *testing.T) {
	r := newRoom(t)
	s, ts := start(t, r, false)
	for _, q := range []req{
		{method: "POST", path: "/api/clusters/nftables-1/reset"},
		{method: "POST", path: "/api/clusters/nftables-1/checks", csrf: "wrong"},
		// The right header from another site's page: refused by Origin.
		{method: "POST", path: "/api/clusters/nftables-1/reset", csrf: s.csrf, origin: "http://evil.example"},
	} {
		if code, body, _ := do(t, ts, q); code != http.StatusForbidden {
			t.Errorf("%+v: %d %s", q, code, body)
		}
	}
	// GET never changes anything.
	if code, _, _ := do(t, ts, req{path: "/api/clusters/nftables-1/reset"}); code != http.StatusNotFound {
		t.Errorf("GET reset: %d", code)
	}
	r.mu.Lock()
	if len(r.checked) != 0 || len(r.resets) != 0 {
		t.Errorf("refused requests reached the lab: checks %v resets %v", r.checked, r.resets)
	}
	r.mu.Unlock()
	// Same origin, with the token: done.
	if code, body, _ := do(t, ts, req{method: "POST", path: "/api/clusters/nftables-1/reset", csrf: s.csrf, origin: ts.URL}); code != 200 {
		t.Errorf("same-origin reset: %d %s", code, body)
	}
	var sess struct{ CSRF string }
	_, body, _ := do(t, ts, req{path: "/api/session"})
	if json.Unmarshal([]byte(body), &sess); sess.CSRF != s.csrf {
		t.Errorf("session: %s", body)
	}
}

// A check's result reaches every page through the event stream: running
// first, then its result; the instructor's matrix and JSON show it.
func TestCheckStreamsResults(t *testing.T) {
	r := newRoom(t)
	s, ts := start(t, r, false)
	events := stream(t, ts, "")
	r.mu.Lock()
	r.status = "fail"
	r.mu.Unlock()
	code, body, _ := do(t, ts, req{method: "POST", path: "/api/clusters/nftables-1/checks/nftables", csrf: s.csrf})
	var res []Result
	if err := json.Unmarshal([]byte(body), &res); code != 200 || err != nil || len(res) != 1 || res[0].Status != "fail" {
		t.Fatalf("check: %d %s", code, body)
	}
	got := events.until(t, func(e Event) bool { return e.Type == "check" && e.Result.Status == "fail" })
	if got[0].Type != "check" || got[0].Result.Status != StatusRunning {
		t.Errorf("first event %+v, want the check running", got[0])
	}
	events.until(t, func(e Event) bool { return e.Type == "line" && strings.Contains(e.Line, "1 fail") })
	_, body, _ = do(t, ts, req{path: "/?o=json"})
	if !strings.Contains(body, `"stuckAt": "nftables"`) || !strings.Contains(body, "reason of nftables on nftables-1") {
		t.Errorf("instructor JSON after the check: %s", body)
	}
	if code, _, _ := do(t, ts, req{method: "POST", path: "/api/clusters/nftables-1/checks/nope", csrf: s.csrf}); code != http.StatusNotFound {
		t.Errorf("unknown check: %d", code)
	}
	// A result saved elsewhere (kindlab check in a terminal) shows too.
	r.mu.Lock()
	r.clusters[1].Results = []Result{{Name: "node-bound-token", Status: "unsupported", Reason: "from a terminal"}}
	r.mu.Unlock()
	events.until(t, func(e Event) bool {
		return e.Type == "check" && e.Cluster == "nftables-2" && e.Result.Reason == "from a terminal"
	})
}

// The run ends with the request: a page that goes cancels its check.
func TestCheckCancelledWhenPageGoes(t *testing.T) {
	r := newRoom(t)
	r.block = true
	s, ts := start(t, r, false)
	events := stream(t, ts, "")
	ctx, cancel := context.WithCancel(context.Background())
	hr, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/api/clusters/nftables-1/checks/nftables", nil)
	hr.Header.Set(csrfHeader, s.csrf)
	go func() {
		resp, err := ts.Client().Do(hr)
		if err == nil {
			resp.Body.Close()
		}
	}()
	events.until(t, func(e Event) bool { return e.Type == "check" && e.Result.Status == StatusRunning })
	cancel()
	select {
	case err := <-r.checkCtx:
		if err == nil {
			t.Error("check ended without its context done")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("check still running 5s after its page went")
	}
	// Its cell goes back to what it was (not run), not to a failure.
	events.until(t, func(e Event) bool {
		return e.Type == "check" && e.Result.Name == "nftables" && e.Result.Status == StatusNotRun
	})
	events.until(t, func(e Event) bool { return e.Type == "line" && strings.Contains(e.Line, "cancelled") })
}

func TestResetStreamsProgress(t *testing.T) {
	r := newRoom(t)
	s, ts := start(t, r, false)
	events := stream(t, ts, "")
	code, body, _ := do(t, ts, req{method: "POST", path: "/api/clusters/nftables-2/reset", csrf: s.csrf})
	if code != 200 || !strings.Contains(body, `"cluster": "nftables-2"`) {
		t.Fatalf("reset: %d %s", code, body)
	}
	// Its checks show running while it lasts; the one it ran gets its
	// result, the other its old one (not run) back.
	events.until(t, func(e Event) bool {
		return e.Type == "check" && e.Result.Name == "node-bound-token" && e.Result.Status == StatusRunning
	})
	events.until(t, func(e Event) bool {
		return e.Type == "line" && e.Line == "nftables-2:  • Deleting what is not the lab's"
	})
	events.until(t, func(e Event) bool { return e.Type == "line" && e.Line == "nftables-2:  • Waiting for the workloads" })
	events.until(t, func(e Event) bool { return e.Type == "check" && e.Cluster == "nftables-2" && e.Result.Status == "pass" })
	events.until(t, func(e Event) bool {
		return e.Type == "check" && e.Result.Name == "node-bound-token" && e.Result.Status == StatusNotRun
	})
}

// A cluster that comes or goes is announced on the instructor's stream.
func TestClustersComeAndGo(t *testing.T) {
	r := newRoom(t)
	_, ts := start(t, r, false)
	events := stream(t, ts, "")
	r.mu.Lock()
	gone := r.clusters[0].Name
	r.clusters = r.clusters[1:]
	r.mu.Unlock()
	events.until(t, func(e Event) bool { return e.Type == "line" && e.Line == "cluster "+gone+" is gone" })
	events.until(t, func(e Event) bool { return e.Type == "clusters" })
	if code, _, _ := do(t, ts, req{path: "/c/" + gone}); code != http.StatusNotFound {
		t.Errorf("page of a cluster that went: %d", code)
	}
}

func TestSteps(t *testing.T) {
	r := newRoom(t)
	c := r.clusters[0]
	c.Name, c.Context, c.Lab = "all-features", "kind-all-features", "all-features"
	c.Checks = []string{"nftables"}
	steps := Steps(c)
	if len(steps) != 4 {
		t.Fatalf("steps: %+v", steps)
	}
	if steps[0].Text != "kube-proxy runs in nftables mode:" || len(steps[0].Commands) != 1 {
		t.Errorf("step 1: %+v", steps[0])
	}
	if want := "kubectl --context kind-all-features -n kube-system get configmap"; !strings.HasPrefix(steps[0].Commands[0], want) {
		t.Errorf("step 1 command %q, want prefix %q", steps[0].Commands[0], want)
	}
	if got := steps[1].Commands[0]; !strings.Contains(got, "\ndocker exec all-features-worker nft list") || !strings.Contains(got, `"$(kubectl --context kind-all-features -n kindlab-nftables`) {
		t.Errorf("step 2 command: %q", got)
	}
	if got := steps[3]; got.Text != "Prove it:" || got.Commands[0] != "kindlab check all-features --name all-features --only nftables" {
		t.Errorf("step 4: %+v", got)
	}
	// A command inside a sentence: the sentence stays whole, the command
	// is a block too.
	nbt := Steps(Cluster{Name: "ws-1", Lab: "node-bound-token", Context: "kind-ws-1", Instructions: []Instruction{{Lab: "node-bound-token",
		Text: "4. A token bound to a node that is deleted stops working: kindlab check node-bound-token\n   does that with a throw-away Node object.\n"}}})
	if len(nbt) != 1 || nbt[0].Text != "A token bound to a node that is deleted stops working: kindlab check node-bound-token does that with a throw-away Node object." ||
		len(nbt[0].Commands) != 1 || nbt[0].Commands[0] != "kindlab check node-bound-token --name ws-1" {
		t.Errorf("command inside a sentence: %+v", nbt)
	}
	// A context or cluster name stands for itself, "$1" included (hostile
	// review, session 13: it expanded as a replacement template).
	odd := Steps(Cluster{Name: "x", Context: "ctx-$1-${2}", Instructions: []Instruction{{Lab: "nftables", Text: "1. Look: kubectl get pods\n2. Node:\n     docker exec nftables-worker true\n"}}})
	if len(odd) != 2 || odd[0].Commands[0] != "kubectl --context ctx-$1-${2} get pods" || odd[1].Commands[0] != "docker exec x-worker true" {
		t.Errorf("a context with $ in it: %+v", odd)
	}
	// A heredoc stays one block, with its own indentation.
	multi := Steps(Cluster{Name: "x", Context: "kind-x", Instructions: []Instruction{{Lab: "multi-service-cidr", Text: "1. Add:\n     kubectl apply -f - <<EOF\n     kind: ServiceCIDR\n     spec:\n       cidrs: [a]\n     EOF\n   then look.\n"}}})
	if len(multi) != 1 || len(multi[0].Commands) != 1 || multi[0].Commands[0] != "kubectl --context kind-x apply -f - <<EOF\nkind: ServiceCIDR\nspec:\n  cidrs: [a]\nEOF" || multi[0].Text != "Add: then look." {
		t.Errorf("heredoc: %+v", multi)
	}
}

// eventStream reads a server-sent event stream.
type eventStream struct {
	ch   chan Event
	errc chan error
}

func stream(t *testing.T, ts *httptest.Server, token string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hr, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/events", nil)
	if token != "" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := ts.Client().Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	es := &eventStream{ch: make(chan Event, 1000), errc: make(chan error, 1)}
	sc := bufio.NewScanner(resp.Body)
	// The hello event comes first: from then on nothing is missed.
	hello := make(chan struct{})
	go func() {
		defer resp.Body.Close()
		var typ string
		first := true
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				typ = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if typ == "hello" && first {
					first = false
					close(hello)
					continue
				}
				var e Event
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &e); err != nil {
					es.errc <- fmt.Errorf("event %q: %w", line, err)
					return
				}
				es.ch <- e
			}
		}
	}()
	select {
	case <-hello:
	case <-time.After(5 * time.Second):
		t.Fatal("no hello event on the stream")
	}
	return es
}

// until returns the events read up to and including the first that
// matches, failing after 5 s.
func (es *eventStream) until(t *testing.T, match func(Event) bool) []Event {
	t.Helper()
	var got []Event
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e := <-es.ch:
			got = append(got, e)
			if match(e) {
				return got
			}
		case err := <-es.errc:
			t.Fatal(err)
		case <-deadline:
			t.Fatalf("no matching event in 5s; got %+v", got)
		}
	}
}
