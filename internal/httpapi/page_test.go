package httpapi_test

import (
	"context"
	"fmt"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/transport"
)

// chromium finds the headless browser (Debian package "chromium"). Without
// it the test is skipped on a developer's machine and fails in CI, where
// .ci/run installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (apt-get install chromium); CI must run the status page test")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// dumpDOM loads url in headless Chromium and returns the DOM after load.
// CASPARIAN_SCREENSHOT_DIR, when set, also gets a screenshot of the page.
func dumpDOM(t *testing.T, browser, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,900"}
	out, err := exec.CommandContext(ctx, browser, append(args, "--dump-dom", url)...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chromium --dump-dom %s: %v\n%s", url, err, stderr)
	}
	if dir := os.Getenv("CASPARIAN_SCREENSHOT_DIR"); dir != "" {
		shot := filepath.Join(dir, "status.png")
		if err := exec.CommandContext(ctx, browser, append(args, "--screenshot="+shot, url)...).Run(); err != nil {
			t.Logf("screenshot: %v", err)
		}
	}
	return string(out)
}

// countShown reads the number of a status from the page's count cards.
func countShown(t *testing.T, dom, status string) string {
	t.Helper()
	re := regexp.MustCompile(`id="count-` + strings.ToLower(status) + `"[^>]*>\s*<span class="n">(\d+)</span>`)
	m := re.FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("the page shows no count for %s:\n%s", status, dom)
	}
	return m[1]
}

func TestStatusPage_InChromiumShowsWorkersCountsAndJobs(t *testing.T) {
	browser := chromium(t)
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	e.Plugin("bad")
	e.Plugin("held")
	fv := e.File("in/report.csv", "a\nb\n")
	for i := 0; i < 3; i++ {
		e.Enqueue(fv, "p", 0)
	}
	failed := e.Enqueue(fv, "bad", 0)
	held := e.Enqueue(fv, "held", 0)
	e.Plugin("nobody")
	queued := e.Enqueue(fv, "nobody", 0)

	release := make(chan struct{})
	defer close(release)
	busy := e.Worker(testworker.Options{Identity: "tw-page-busy", Capabilities: []string{"p", "bad", "held"}, Slots: 2,
		Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
			switch j.Dispatch.PluginName {
			case "bad":
				return transport.Conclude{Status: transport.StatusFailed, ErrorMessage: "cannot parse <row 7>"}
			case "held":
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return testworker.Succeed(ctx, j)
		}})
	idle := e.Worker(testworker.Options{Identity: "tw-page-idle", Capabilities: []string{"other"}})
	sentineltest.Eventually(t, 10*time.Second, "queue settled", func() bool {
		c, _ := e.Store.JobsCountByStatus(context.Background())
		return c[db.StatusCompleted] == 3 && c[db.StatusFailed] == 1 && c[db.StatusRunning] == 1
	})
	// RUNNING in the database comes a moment before the worker actor holds
	// the claim; the page shows what the worker actors hold.
	sentineltest.Eventually(t, 5*time.Second, "both workers connected, the held job on one", func() bool {
		ws, _ := e.Sentinel.WorkersInfo(context.Background())
		return len(ws) == 2 && len(ws[0].Running) == 1 && ws[0].Running[0] == held
	})

	start := time.Now()
	dom := dumpDOM(t, browser, e.URL+"/")
	t.Logf("chromium loaded and dumped the page in %s (%d bytes of DOM)", time.Since(start).Round(time.Millisecond), len(dom))

	if !strings.Contains(dom, "<title>Casparian Sentinel</title>") || !strings.Contains(dom, "● serving") {
		t.Errorf("page title or readiness missing:\n%s", dom)
	}
	if !regexp.MustCompile(`<meta http-equiv="refresh" content="\d+">`).MatchString(dom) {
		t.Error("the page does not refresh itself")
	}
	for status, want := range map[string]int{"COMPLETED": 3, "FAILED": 1, "RUNNING": 1, "QUEUED": 1, "SKIPPED": 0, "PENDING": 0} {
		if got := countShown(t, dom, status); got != fmt.Sprint(want) {
			t.Errorf("page shows %s = %s, want %d", status, got, want)
		}
	}
	for _, w := range []string{busy.Identity(), idle.Identity()} {
		if !strings.Contains(dom, `data-worker="`+w+`"`) {
			t.Errorf("worker %s not shown", w)
		}
	}
	if !strings.Contains(dom, "2 connected, 1 of 3 slots busy") {
		t.Errorf("slot summary missing:\n%s", dom)
	}
	// The busy worker's row shows the held job as running.
	row := regexp.MustCompile(`(?s)data-worker="tw-page-busy".*?</tr>`).FindString(dom)
	if !strings.Contains(row, fmt.Sprintf("<td>%d</td>", held)) || !strings.Contains(row, "1/2") || !strings.Contains(row, "p, bad, held") {
		t.Errorf("busy worker row = %s", row)
	}
	for _, id := range []int64{failed, held, queued} {
		if !strings.Contains(dom, fmt.Sprintf(`data-job="%d"`, id)) {
			t.Errorf("job %d not in the recent jobs", id)
		}
	}
	// Text from workers is escaped, not markup.
	if !strings.Contains(dom, html.EscapeString("cannot parse <row 7>")) {
		t.Errorf("the failed job's message is missing or unescaped")
	}
	if !strings.Contains(dom, filepath.Join(e.Root, "in/report.csv")) {
		t.Error("the jobs' file path is not shown")
	}
}
