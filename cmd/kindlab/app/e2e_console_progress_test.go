package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kindlab/kindlab/provision/registry"
)

// A real `kindlab up` of the one-node lab, as a process of its own, while
// `kindlab console` serves the instructor's page: the up's own progress
// lines (" • …" steps, which it writes through its cluster lock into the
// lock's progress file) reach the instructor's event stream and show in
// the instructor's page in Debian's chromium, under that cluster, before
// the up ends; then the end line.
func TestEndToEndConsoleFollowsUp(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	img := requireE2E(t)
	chromium := requireBrowser(t)
	isolate(t)
	const name = "progress-e2e"
	downArgs := []string{"down", "--name", name}
	if containerExists(registry.ContainerName) {
		downArgs = append(downArgs, "--keep-registry")
	}
	t.Cleanup(func() {
		run(t, downArgs...)
		nodes := exec.Command("docker", "ps", "-aq", "--filter", "label=io.x-k8s.kind.cluster="+name)
		if out, _ := nodes.Output(); len(bytes.TrimSpace(out)) != 0 {
			exec.Command("sh", "-c", "docker rm -f "+strings.Join(strings.Fields(string(out)), " ")).Run()
		}
	})

	urls := startConsole(t, "127.0.0.1")
	base := "http://" + urls.Listen

	// The instructor's event stream: progress events of the cluster, with
	// when they came.
	type progressLine struct {
		line string
		at   time.Time
	}
	lines := make(chan progressLine, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("instructor events: %v %v", err, resp)
	}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var e struct{ Type, Cluster, Line string }
			if json.Unmarshal([]byte(strings.TrimPrefix(sc.Text(), "data: ")), &e) == nil && e.Type == "progress" && e.Cluster == name {
				lines <- progressLine{e.Line, time.Now()}
			}
		}
	}()

	// The instructor's page in chromium.
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 1000), chromedp.Flag("disable-dev-shm-usage", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate(urls.Instructor), chromedp.WaitVisible(chromedp.CSS(`body[data-live="1"]`))); err != nil {
		t.Fatalf("load the instructor's page: %v", err)
	}

	up := kindlabProcess("up", oneNodeLab, "--name", name, "--image", img, "--skip-checks")
	var upErr bytes.Buffer
	up.Stderr = &upErr
	began := time.Now()
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	upDone := make(chan error, 1)
	go func() { upDone <- up.Wait() }()

	// While the up runs: the page's lines under the cluster, read every
	// 250 ms, and the first of its step lines shown there.
	var pageStep string
	var pageAt time.Time
	sel := fmt.Sprintf(`pre.oplines[data-oplines=%q]`, name)
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	var ended time.Time
wait:
	for {
		select {
		case err := <-upDone:
			ended = time.Now()
			if err != nil {
				t.Fatalf("kindlab up: %v\n%s", err, upErr.String())
			}
			break wait
		case <-poll.C:
			if pageStep != "" {
				continue
			}
			text, err := chromedp.Run(bctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel)))
			if err != nil {
				t.Fatalf("read the instructor's page: %v", err)
			}
			for _, l := range strings.Split(text, "\n") {
				if strings.HasPrefix(l, " • ") {
					pageStep, pageAt = l, time.Now()
					png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
					if err == nil {
						shot := filepath.Join(artifactDir(t), "console-instructor-up-progress.png")
						_ = os.WriteFile(shot, png, 0o644)
						t.Logf("screenshot %s", shot)
					}
					break
				}
			}
		}
	}
	t.Logf("kindlab up %s took %s", name, ended.Sub(began).Round(time.Second))
	if pageStep == "" {
		t.Errorf("no step line of the up showed under %s on the instructor's page before it ended", name)
	} else {
		t.Logf("instructor's page showed %q %s after the up started, %s before it ended", pageStep, pageAt.Sub(began).Round(time.Millisecond), ended.Sub(pageAt).Round(time.Millisecond))
	}

	// The stream: the start line, step lines before the end, the end line.
	var streamStep string
	var streamAt time.Time
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l := <-lines:
			if streamStep == "" && strings.HasPrefix(l.line, " • ") {
				streamStep, streamAt = l.line, l.at
			}
			if !strings.Contains(l.line, ": ended after ") {
				continue
			}
			if streamStep == "" || !streamAt.Before(ended) {
				t.Fatalf("no step line of the up on the event stream before it ended (first %q at %s, up ended %s)", streamStep, streamAt, ended)
			}
			t.Logf("event stream: %q %s after the up started, %s before it ended; then %q", streamStep, streamAt.Sub(began).Round(time.Millisecond), ended.Sub(streamAt).Round(time.Millisecond), l.line)
			return
		case <-deadline:
			t.Fatalf("no end line for %s on the event stream 30s after the up ended (first step line %q)", name, streamStep)
		}
	}
}
