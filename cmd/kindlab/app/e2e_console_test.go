package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kindlab/kindlab/cmd/kindlab/app"
	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	consolecmd "github.com/kindlab/kindlab/cmd/kindlab/app/console"
)

// requireBrowser finds Debian's chromium (make deps installs it), or
// $KINDLAB_CHROMIUM. Without one the browser test skips, unless the run
// requires it (KINDLAB_REQUIRE_BROWSER=1, or KINDLAB_REQUIRE_E2E=1 as make
// e2e sets): then it fails.
func requireBrowser(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("KINDLAB_CHROMIUM"), "chromium", "chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	why := "no chromium on PATH (apt-get install chromium, or KINDLAB_CHROMIUM=/path/to/chrome)"
	if os.Getenv("KINDLAB_REQUIRE_BROWSER") == "1" || os.Getenv("KINDLAB_REQUIRE_E2E") == "1" {
		t.Fatalf("browser test required but cannot run: %s", why)
	}
	t.Skipf("browser test skipped: %s", why)
	return ""
}

// artifactDir is where the browser test leaves its screenshots:
// $KINDLAB_TEST_ARTIFACTS (make e2e: test-artifacts/) or a temp dir.
func artifactDir(t *testing.T) string {
	d := os.Getenv("KINDLAB_TEST_ARTIFACTS")
	if d == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// lanAddress is an address of this machine that is not loopback, for a
// console as a room runs it.
func lanAddress(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatalf("no non-loopback IPv4 address on this machine: %v", addrs)
	return ""
}

// syncBuffer is a bytes.Buffer the console's goroutine writes while the
// test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startConsole runs `kindlab console --listen ADDR:0 -o json` in-process,
// as a room would (tokens on, because ADDR is not loopback), and returns
// its URLs; it stops when the test ends.
func startConsole(t *testing.T, addr string, extra ...string) consolecmd.URLs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errOut := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		args := append([]string{"console", "--listen", net.JoinHostPort(addr, "0"), "-o", "json"}, extra...)
		done <- app.Run(ctx, &cli.Streams{In: strings.NewReader(""), Out: pw, ErrOut: errOut}, args)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("console exit %d: %s", code, errOut.String())
			}
		case <-time.After(10 * time.Second):
			t.Errorf("console still running 10s after Ctrl-C")
		}
	})
	var urls consolecmd.URLs
	if err := json.NewDecoder(pr).Decode(&urls); err != nil {
		t.Fatalf("console URLs: %v (%s)", err, errOut.String())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	return urls
}

// e2eConsole drives `kindlab console` on the running lab in Debian's
// chromium: the attendee's page runs a check and shows its result; the
// instructor's matrix follows a check an attendee runs, from pass to fail
// when the lab is broken (a ServiceAccount deleted) and back after the
// instructor's Reset; a check
// run stops when its page goes; every button has a label and every status
// words; and a request without a token from another address gets nothing.
func e2eConsole(t *testing.T, name string) {
	chromium := requireBrowser(t)
	addr := lanAddress(t)
	urls := startConsole(t, addr)
	t.Logf("console on %s", urls.Listen)
	attendee := urls.Attendees[name]
	if !urls.Tokens || attendee == "" || !strings.Contains(urls.Instructor, "?token=") {
		t.Fatalf("console on %s: tokens off or no URL for %s: %+v", addr, name, urls)
	}
	base := "http://" + urls.Listen

	// No token, or a wrong one, from another address than loopback:
	// 401 and nothing about the lab.
	for _, path := range []string{"/", "/c/" + name, "/api/clusters", "/api/clusters/" + name + "/kubeconfig", "/api/events", "/?token=x"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), name) {
			t.Errorf("GET %s without a token: %d %q", path, resp.StatusCode, body)
		}
	}
	// The attendee's token gets the kubeconfig; it names the cluster.
	resp, err := http.Get(base + "/api/clusters/" + name + "/kubeconfig?" + strings.SplitN(attendee, "?", 2)[1])
	if err != nil {
		t.Fatal(err)
	}
	kc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(kc), "kind-"+name) {
		t.Errorf("kubeconfig with the attendee's token: %d", resp.StatusCode)
	}

	out := artifactDir(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 1000), chromedp.Flag("disable-dev-shm-usage", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	// Reset asks for confirmation: say yes, as the instructor would.
	dialogs := chromedp.Events(bctx, page.JavascriptDialogOpening)
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(bctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	must := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 7*time.Minute)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(what, js string, v any) {
		t.Helper()
		raw, err := chromedp.Run(bctx, chromedp.Evaluate[json.RawMessage](js))
		if err == nil {
			err = json.Unmarshal(raw, v)
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	shot := func(file string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil {
			t.Fatalf("screenshot %s: %v", file, err)
		}
		p := filepath.Join(out, file)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s (%d bytes)", p, len(png))
	}
	// Every button has a name a screen reader says, every status words.
	accessible := func(view string) {
		t.Helper()
		var problems []string
		eval(view+": accessibility", `(() => {
			const p = [];
			document.querySelectorAll("button").forEach((b) => {
				const name = (b.getAttribute("aria-label") || b.textContent || "").trim();
				if (!name) p.push("button without a label: " + b.outerHTML);
			});
			document.querySelectorAll(".status").forEach((s) => {
				if (!s.textContent.trim()) p.push("status without text: " + s.outerHTML);
			});
			if (!document.documentElement.lang) p.push("no lang on <html>");
			return p;
		})()`, &problems)
		for _, p := range problems {
			t.Errorf("%s: %s", view, p)
		}
	}
	// record keeps every status a selector's element shows, in order.
	record := func(sel string) {
		t.Helper()
		var ok bool
		eval("watch "+sel, fmt.Sprintf(`(() => {
			const el = document.querySelector(%q);
			window.seen = [el.querySelector(".status").dataset.status];
			new MutationObserver(() => {
				const s = el.querySelector(".status").dataset.status;
				if (window.seen[window.seen.length-1] !== s) window.seen.push(s);
			}).observe(el, {subtree: true, childList: true, characterData: true, attributes: true});
			return true;
		})()`, sel), &ok)
	}
	// waitSeen waits until the element went through running and rests on
	// a result, and returns the statuses it showed.
	waitSeen := func(what string, timeout time.Duration) []string {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`window.seen.includes("running") && window.seen[window.seen.length-1] !== "running"`,
			chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
			var seen []string
			eval(what, `window.seen`, &seen)
			t.Fatalf("%s: %v (statuses seen: %v)", what, err, seen)
		}
		var seen []string
		eval(what, `window.seen`, &seen)
		return seen
	}
	text := func(sel string) string {
		t.Helper()
		var s string
		eval("read "+sel, fmt.Sprintf(`document.querySelector(%q).textContent.trim()`, sel), &s)
		return s
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// The attendee's page.
	start := time.Now()
	must("load the attendee's page", chromedp.Navigate(attendee), chromedp.WaitVisible(css(`body[data-live="1"]`)),
		chromedp.WaitVisible(css(`#nodes table`)))
	t.Logf("attendee page loaded, live, nodes shown in %s", time.Since(start).Round(time.Millisecond))
	if got := text(`code[id^="cmd-"]`); !strings.Contains(got, "--context kind-"+name) {
		t.Errorf("first step's command does not name the attendee's context: %q", got)
	}
	if got := text(`#nodes`); !strings.Contains(got, "zone-a") || !strings.Contains(got, name+"-control-plane") {
		t.Errorf("nodes: %q", got)
	}
	accessible("attendee")
	row := `tr.check[data-check="nftables"]`
	record(row)
	start = time.Now()
	must("press Check", chromedp.Click(css(row+` button.run-check`)))
	seen := waitSeen("the nftables row turns to its result", 3*time.Minute)
	t.Logf("Check nftables: pressed to result in %s, statuses %v", time.Since(start).Round(time.Millisecond), seen)
	if got := text(row + ` .status`); seen[len(seen)-1] != "pass" || got != "✓ pass" {
		t.Errorf("nftables on the attendee's page: %v, reads %q; want pass (it passed on up)", seen, got)
	}
	shot("console-attendee.png")

	// A check run stops when its page goes: Check node-bound-token (ten
	// seconds or so), then leave while it runs.
	ev := instructorEvents(t, base, urls.Instructor)
	slow := `tr.check[data-check="node-bound-token"]`
	must("press Check node-bound-token", chromedp.Click(css(slow+` button.run-check`)),
		chromedp.WaitVisible(css(slow+` .status[data-status="running"]`)))
	start = time.Now()
	must("leave the page", chromedp.Navigate("about:blank"))
	if line := ev.waitLine(t, name+": check run cancelled", time.Minute); line == "" {
		t.Error("the check run went on after its page went")
	} else {
		t.Logf("check run cancelled %s after its page went", time.Since(start).Round(time.Millisecond))
	}

	// The instructor's page follows what an attendee does.
	start = time.Now()
	must("load the instructor's page", chromedp.Navigate(urls.Instructor), chromedp.WaitVisible(css(`body[data-live="1"]`)))
	t.Logf("instructor page loaded and live in %s", time.Since(start).Round(time.Millisecond))
	accessible("instructor")
	cell := fmt.Sprintf(`td.cell[data-cluster=%q][data-check="node-bound-token"]`, name)
	// Break the lab as an attendee might: delete the ServiceAccount the
	// node-bound-token check mints its token for, so that check fails.
	cs := clientFor(t, "", "kind-"+name)
	if err := cs.CoreV1().ServiceAccounts("kindlab-node-bound-token").Delete(context.Background(), "token-demo", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("break the lab: %v", err)
	}
	record(cell)
	// The attendee presses Check (the API their page calls, with their token).
	attendeePost(t, base, attendee, "/api/clusters/"+name+"/checks/node-bound-token")
	seen = waitSeen("the matrix cell follows the attendee's check", 4*time.Minute)
	t.Logf("matrix cell after the attendee's check on the broken lab: %v (%s)", seen, text(cell+` .status`))
	if seen[len(seen)-1] != "fail" || text(cell+` .status`) != "✗ fail" {
		t.Errorf("matrix cell after breaking the lab: %v, want fail", seen)
	}
	if p := text(fmt.Sprintf(`td.progress[data-progress=%q]`, name)); !strings.Contains(p, "stuck at node-bound-token: ") || !strings.Contains(p, "token-demo") {
		t.Errorf("progress column: %q, want stuck at node-bound-token with the reason (token-demo is gone)", p)
	}
	shot("console-instructor.png")

	// The instructor resets that cluster from the matrix; the cell goes
	// back to pass with the reset's checks, its lines in the log.
	record(cell)
	start = time.Now()
	must("press Reset", chromedp.Click(css(fmt.Sprintf(`button.reset[data-cluster=%q]`, name))))
	seen = waitSeen("the matrix cell after the reset", 6*time.Minute)
	t.Logf("Reset from the instructor's page: back to %v in %s", seen, time.Since(start).Round(time.Millisecond))
	if seen[len(seen)-1] != "pass" {
		t.Errorf("matrix cell after the reset: %v, want pass", seen)
	}
	if log := text(`#log`); !strings.Contains(log, name+": reset done") {
		t.Errorf("activity log lacks the reset: %q", log)
	}
	shot("console-instructor-after-reset.png")
}

// attendeePost POSTs as an attendee's page does: their token, the CSRF
// header from /api/session.
func attendeePost(t *testing.T, base, pageURL, path string) {
	t.Helper()
	tok := strings.TrimPrefix(strings.SplitN(pageURL, "?", 2)[1], "token=")
	get, _ := http.NewRequest("GET", base+"/api/session", nil)
	get.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	var sess struct{ CSRF string }
	err = json.NewDecoder(resp.Body).Decode(&sess)
	resp.Body.Close()
	if err != nil || sess.CSRF == "" {
		t.Fatalf("session: %v", err)
	}
	post, _ := http.NewRequest("POST", base+path, nil)
	post.Header.Set("Authorization", "Bearer "+tok)
	post.Header.Set("X-Kindlab-CSRF", sess.CSRF)
	go func() {
		resp, err := http.DefaultClient.Do(post)
		if err == nil {
			resp.Body.Close()
		}
	}()
}

// consoleEvents reads the instructor's event stream for progress lines.
type consoleEvents struct{ lines chan string }

func instructorEvents(t *testing.T, base, instructorURL string) *consoleEvents {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events?"+strings.SplitN(instructorURL, "?", 2)[1], nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("instructor events: %v %v", err, resp)
	}
	ev := &consoleEvents{lines: make(chan string, 1000)}
	go func() {
		defer resp.Body.Close()
		dec := bufio.NewScanner(resp.Body)
		dec.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for dec.Scan() {
			line := dec.Text()
			if !strings.HasPrefix(line, "data: ") {
				continue
			}
			var e struct{ Type, Line string }
			if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &e) == nil && e.Type == "line" {
				select {
				case ev.lines <- e.Line:
				default:
				}
			}
		}
	}()
	return ev
}

// waitLine returns the first line containing want, "" after timeout.
func (e *consoleEvents) waitLine(t *testing.T, want string, timeout time.Duration) string {
	deadline := time.After(timeout)
	for {
		select {
		case l := <-e.lines:
			if strings.Contains(l, want) {
				return l
			}
		case <-deadline:
			return ""
		}
	}
}

// TestConsoleBrowserOnRunningLab is e2eConsole for development, on a lab
// already running: KINDLAB_CONSOLE_CLUSTER names its cluster (with
// KINDLAB_STATE_DIR and KUBECONFIG as it was brought up with). CI runs
// e2eConsole inside TestEndToEndAllFeatures, on the end-to-end lab.
func TestConsoleBrowserOnRunningLab(t *testing.T) {
	name := os.Getenv("KINDLAB_CONSOLE_CLUSTER")
	if name == "" {
		t.Skip("development hook: set KINDLAB_CONSOLE_CLUSTER to a running lab's cluster (CI runs this in TestEndToEndAllFeatures/console)")
	}
	// A lab from a file (fixtures/labs/one-node.yaml) is recorded by the
	// path up was given, relative to the repository's root.
	t.Chdir("../../..")
	e2eConsole(t, name)
}
