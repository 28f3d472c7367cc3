package httpapi_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
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
		t.Fatal("chromium is not installed (apt-get install chromium); CI must run the console's browser tests")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

func TestConsole_PageRunsOnlyItsOwnScriptAndSetsNoCookie(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, withTokens(t))
	page := send(t, "GET", e.URL+"/", "", bearerOf(readToken))
	if page.code != 200 || !strings.Contains(page.body, `id="view-jobs"`) {
		t.Fatalf("console with a read token: %d %s", page.code, page.body)
	}
	csp := page.header.Get("Content-Security-Policy")
	nonce := regexp.MustCompile(`script-src 'nonce-([^']+)'`).FindStringSubmatch(csp)
	if nonce == nil || !strings.Contains(csp, "style-src 'nonce-"+nonce[1]+"'") ||
		!strings.Contains(page.body, `<script nonce="`+nonce[1]+`">`) || !strings.Contains(page.body, `<style nonce="`+nonce[1]+`">`) ||
		!strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q does not allow the page's script and style alone", csp)
	}
	// The policy has no 'unsafe-inline': an inline handler or style
	// attribute would not run, so there must be none.
	if m := regexp.MustCompile(`<[^>]+\s(on[a-z]+|style)=`).FindString(page.body); m != "" {
		t.Errorf("the page has an inline handler or style attribute, which its policy blocks: %s", m)
	}
	if page.header.Get("Referrer-Policy") != "no-referrer" || page.header.Get("Set-Cookie") != "" ||
		page.header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers: %v", page.header)
	}
	if again := send(t, "GET", e.URL+"/", "", bearerOf(readToken)); again.header.Get("Content-Security-Policy") == csp {
		t.Error("two answers have the same nonce")
	}

	// A browser without a token gets the console, which asks for one; other
	// clients get JSON.
	asked := send(t, "GET", e.URL+"/?token="+wrongToken, "", "Accept: text/html,application/xhtml+xml")
	if asked.code != http.StatusUnauthorized || !strings.HasPrefix(asked.header.Get("WWW-Authenticate"), "Bearer") ||
		!strings.Contains(asked.body, `id="login-form"`) || !strings.Contains(asked.body, `data-refused="the API token is not valid"`) ||
		asked.header.Get("Content-Security-Policy") == "" {
		t.Errorf("console with a wrong token, for a browser: %d %v\n%s", asked.code, asked.header, asked.body)
	}
	if a := send(t, "GET", e.URL+"/", ""); a.code != http.StatusUnauthorized || reasonOf(t, a) != "no_token" {
		t.Errorf("console without a token, for curl: %d %s", a.code, a.body)
	}
	if a := send(t, "GET", e.URL+"/api/v1/status", "", "Accept: text/html"); a.code != http.StatusUnauthorized || reasonOf(t, a) != "no_token" {
		t.Errorf("API without a token, Accept: text/html: %d %s", a.code, a.body)
	}
}

// browserTab starts headless Chromium and returns the context of one tab,
// closed when the test ends.
func browserTab(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// artifacts is the folder for the test's screenshots: under
// $CASPARIAN_TEST_ARTIFACTS when set (kept), else under t.TempDir().
func artifacts(t *testing.T) string {
	t.Helper()
	base := os.Getenv("CASPARIAN_TEST_ARTIFACTS")
	if base == "" {
		base = t.TempDir()
	}
	dir := filepath.Join(base, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// page drives one tab of the console.
type page struct {
	t   *testing.T
	ctx context.Context
	dir string // screenshots
}

// do runs steps within 30 s.
//
// The console redraws its tables when fresh data arrives. A redraw between
// finding a button and clicking it removes the node the click was aimed at
// (CDP: "Could not find node with given id"); the steps, which then did
// nothing, run again.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	for {
		err := chromedp.Do(ctx, steps...)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "Could not find node with given id") || ctx.Err() != nil {
			p.t.Fatalf("%s: %v\n%s", what, err, p.text("document.body.innerText"))
		}
		p.t.Logf("%s: the node went away with a redraw; again", what)
	}
}

// wait waits up to within for a JavaScript expression to be true.
func (p *page) wait(within time.Duration, what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, within+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(within))); err != nil {
		p.t.Fatalf("waiting for %s (%s): %v\nthe page shows:\n%s", what, expr, err, p.text("document.body.innerText"))
	}
}

// text evaluates a JavaScript expression to a string.
func (p *page) text(expr string) string {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		return fmt.Sprintf("(%s: %v)", expr, err)
	}
	return s
}

// shot writes a screenshot of the viewport to the artifacts folder.
func (p *page) shot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(p.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
}

// loadedOnce marks the page's window; a navigation or reload would lose it.
const loadedOnce = `window.loadedOnce === "yes"`

func TestConsole_InChromiumRetriesAJobAndBulkCancelsLive(t *testing.T) {
	t.Parallel()
	ctx := browserTab(t)
	e := sentineltest.Start(t, withTokens(t))
	e.Plugin("flaky", "nobody")
	fv := e.File("in/report.csv", "a\nb\n")
	var healed atomic.Bool
	e.Worker(testworker.Options{Identity: "tw-console", Capabilities: []string{"flaky"}, Slots: 2,
		Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
			if !healed.Load() {
				return transport.Conclude{Status: transport.StatusFailed, ErrorMessage: "cannot parse <row 7>"}
			}
			return testworker.Succeed(ctx, j)
		}})
	failed := e.Enqueue(fv, "flaky", 0)
	e.WaitJob(failed, job.StatusFailed)
	healed.Store(true)
	e.WaitJob(e.Enqueue(fv, "flaky", 0), job.StatusCompleted)
	var queued []int64
	for i := 0; i < 3; i++ {
		queued = append(queued, e.Enqueue(fv, "nobody", 0))
	}
	p := &page{t: t, ctx: ctx, dir: artifacts(t)}

	// Opened with ?token=: the console takes the token out of the address
	// and shows the overview from the event stream.
	p.do("open the console", chromedp.Navigate(e.URL+"/?token="+adminToken))
	p.wait(20*time.Second, "the overview", `document.getElementById("ready").textContent === "● serving" &&
		document.querySelector("#count-failed .n")?.textContent === "1" &&
		document.querySelector("#count-queued .n")?.textContent === "3" &&
		document.getElementById("slots").textContent === "0 of 2"`)
	p.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.loadedOnce = "yes"`))
	if u := p.text("location.href"); strings.Contains(u, "token") {
		t.Errorf("the token stays in the address: %s", u)
	}
	p.shot("1-overview")

	// Filter to FAILED (the count card opens the jobs filtered) and open
	// the job.
	p.do("list the FAILED jobs", chromedp.Click(chromedp.ID("count-failed")))
	p.wait(20*time.Second, "the FAILED job alone", fmt.Sprintf(`document.getElementById("filter-status").value === "FAILED" &&
		document.querySelectorAll("#jobs-body tr.job").length === 1 &&
		document.querySelector("#jobs-body tr.job[data-job='%d'][data-status='FAILED']") !== null`, failed))
	// The error filter narrows it, in any case.
	p.do("filter by error", chromedp.SendKeys(chromedp.ID("filter-error"), "ROW 7\n"))
	p.wait(20*time.Second, "the job matched by its error", fmt.Sprintf(`document.getElementById("jobs-body").dataset.query === "status=FAILED&error=ROW+7&limit=25" &&
		document.getElementById("page-info").textContent === "1–1 of 1" &&
		document.querySelector("#jobs-body tr.job[data-job='%d']") !== null`, failed))
	p.do("open the job", chromedp.Click(chromedp.CSS(fmt.Sprintf("#jobs-body tr.job[data-job='%d']", failed))))
	p.wait(20*time.Second, "the job's detail", `document.getElementById("detail-status").textContent === "FAILED" &&
		document.querySelector("#detail-fields [data-field='error']").textContent === "cannot parse <row 7>" &&
		document.querySelector("#detail-fields [data-field='dispatch']").textContent.includes('"plugin_name": "flaky"') &&
		document.querySelector("#detail-fields [data-field='dispatch']").textContent.includes('report.csv') &&
		!document.getElementById("job-retry").disabled && document.getElementById("job-cancel").disabled`)
	p.shot("2-failed-job")

	// Retry: the detail follows the job to COMPLETED from the event stream,
	// and the FAILED list empties, with no reload. (Attempt 2, or more when
	// a loaded machine misses heartbeats and the job is requeued.)
	p.do("retry", chromedp.Click(chromedp.ID("job-retry")))
	p.wait(30*time.Second, "the job COMPLETED", `document.getElementById("detail-status").textContent === "COMPLETED" &&
		parseInt(document.querySelector("#detail-fields [data-field='attempts']").textContent) >= 2 &&
		document.querySelectorAll("#jobs-body tr.job").length === 0`)
	if got := e.Job(failed); got.Status != job.StatusCompleted {
		t.Errorf("job %d is %s in the database", failed, got.Status)
	}
	// The history: the failed attempt with its reason first, the completion
	// last, one row per attempt.
	p.wait(20*time.Second, "the attempts", `(() => {
		const rows = document.querySelectorAll("#detail-attempts tr.attempt");
		const n = parseInt(document.querySelector("#detail-fields [data-field='attempts']").textContent);
		return rows.length === n && rows[0].dataset.attempt === "1" &&
			rows[0].textContent.includes("FAILED") && rows[0].textContent.includes("cannot parse <row 7>") &&
			rows[0].textContent.includes("tw-console") && rows[n-1].textContent.includes("COMPLETED");
	})()`)
	p.wait(time.Second, "the same page (no navigation)", loadedOnce)
	p.shot("3-retried-job")

	// Bulk cancel of the filter QUEUED + nobody, confirmed with its count.
	p.do("filter QUEUED jobs of nobody", chromedp.Click(chromedp.ID("detail-close")), chromedp.Evaluate[chromedp.Void](`
		for (const [id, v] of [["filter-status", "QUEUED"], ["filter-plugin", "nobody"], ["filter-error", ""]]) {
			const s = document.getElementById(id);
			s.value = v;
			s.dispatchEvent(new Event("change"));
		}`))
	p.wait(20*time.Second, "the three QUEUED jobs", `document.querySelectorAll("#jobs-body tr.job[data-status='QUEUED']").length === 3 &&
		document.getElementById("page-info").textContent === "1–3 of 3"`)
	p.do("bulk cancel", chromedp.Click(chromedp.ID("bulk-cancel")))
	p.wait(20*time.Second, "the confirmation", `document.getElementById("confirm").open`)
	if q := p.text(`document.getElementById("confirm-text").textContent`); q != "Cancel 3 jobs matching status QUEUED, plugin nobody?" {
		t.Errorf("confirmation asks %q", q)
	}
	p.shot("4-bulk-confirm")
	p.do("confirm", chromedp.Click(chromedp.ID("confirm-yes")))
	p.wait(30*time.Second, "the jobs SKIPPED", `document.getElementById("message").textContent === "Cancel: 3 of 3 matching jobs changed." &&
		document.querySelector("#count-skipped .n")?.textContent === "3" &&
		document.querySelectorAll("#jobs-body tr.job").length === 0`)
	for _, id := range queued {
		if got := e.Job(id); got.Status != job.StatusSkipped {
			t.Errorf("job %d is %s after the bulk cancel", id, got.Status)
		}
	}
	p.wait(time.Second, "the same page (no navigation)", loadedOnce)
	p.shot("5-bulk-cancelled")

	// The other views are tables of the API's lists.
	p.do("workers", chromedp.Click(chromedp.CSS(`#nav button[data-view="workers"]`)))
	p.wait(20*time.Second, "the worker", `document.querySelector("#workers-body tr[data-worker='tw-console']")?.textContent.includes("flaky") &&
		document.getElementById("workers-summary").textContent === "(1 connected, 0 of 2 slots busy)"`)
	p.shot("6-workers")
	p.do("plugins", chromedp.Click(chromedp.CSS(`#nav button[data-view="plugins"]`)))
	p.wait(20*time.Second, "the plugins", `document.querySelectorAll("#plugins-body tr[data-plugin]").length === 2 &&
		document.querySelector("#plugins-body tr[data-plugin='flaky']").textContent.includes("1.0.0")`)
	p.do("sources", chromedp.Click(chromedp.CSS(`#nav button[data-view="sources"]`)))
	p.wait(20*time.Second, "the source root", fmt.Sprintf(`document.getElementById("sources-body").textContent.includes(%q) &&
		document.getElementById("routes-body").textContent === "No routing rule."`, e.Root))
	p.wait(time.Second, "the same page (no navigation)", loadedOnce)
}

func TestConsole_InChromiumAsksForATokenAndSaysWhenItIsReadOnly(t *testing.T) {
	t.Parallel()
	ctx := browserTab(t)
	e := sentineltest.Start(t, withTokens(t))
	e.Plugin("broken")
	fv := e.File("a.txt", "a\n")
	e.Worker(testworker.Options{Capabilities: []string{"broken"}, Run: failing})
	failed := e.Enqueue(fv, "broken", 0)
	e.WaitJob(failed, job.StatusFailed)
	p := &page{t: t, ctx: ctx, dir: artifacts(t)}

	p.do("open the console without a token", chromedp.Navigate(e.URL+"/"))
	p.wait(20*time.Second, "the login box", `!document.getElementById("login").hidden && document.getElementById("main").hidden`)
	p.shot("1-login")
	p.do("give a read token",
		chromedp.SendKeys(chromedp.ID("login-token"), readToken),
		chromedp.Click(chromedp.CSS("#login-form button[type=submit]")))
	p.wait(20*time.Second, "the overview", `document.querySelector("#count-failed .n")?.textContent === "1"`)
	p.do("open the failed job", chromedp.Click(chromedp.ID("count-failed")))
	p.wait(20*time.Second, "the failed job listed", fmt.Sprintf(`document.getElementById("jobs-body").dataset.query === "status=FAILED&limit=25" &&
		document.querySelector("#jobs-body tr.job[data-job='%d']") !== null`, failed))
	p.do("open it and retry", chromedp.Click(chromedp.CSS(fmt.Sprintf("#jobs-body tr.job[data-job='%d']", failed))))
	p.wait(20*time.Second, "the detail", `!document.getElementById("job-retry").disabled`)
	p.do("retry", chromedp.Click(chromedp.ID("job-retry")))
	p.wait(20*time.Second, "the refusal", `document.getElementById("message").classList.contains("error") &&
		document.getElementById("message").textContent.includes("needs an admin token")`)
	p.shot("2-read-only")
	if got := e.Job(failed); got.Status != job.StatusFailed {
		t.Errorf("a read token retried job %d: %s", failed, got.Status)
	}

	// A plugin's pause is refused the same way.
	p.do("plugins", chromedp.Click(chromedp.CSS(`#nav button[data-view="plugins"]`)))
	p.wait(20*time.Second, "the plugin", `document.querySelector("#plugins-body tr[data-plugin='broken'] button[data-action='pause']") !== null`)
	p.do("pause", chromedp.Click(chromedp.CSS(`#plugins-body tr[data-plugin='broken'] button[data-action='pause']`)))
	p.wait(20*time.Second, "the refusal", `document.getElementById("message").classList.contains("error") &&
		document.getElementById("message").textContent.startsWith("Could not pause plugin broken: This needs an admin token")`)
	if ps, err := e.Sentinel.Plugins(context.Background()); err != nil || len(ps) != 1 || ps[0].Settings.Paused() {
		t.Errorf("a read token paused the plugin: %+v %v", ps, err)
	}
}

func TestConsole_InChromiumWithoutTokensOpensAtOnce(t *testing.T) {
	t.Parallel()
	ctx := browserTab(t)
	e := sentineltest.Start(t, nil)
	e.Plugin("nobody")
	e.Enqueue(e.File("a.txt", "a\n"), "nobody", 0)
	p := &page{t: t, ctx: ctx, dir: artifacts(t)}
	p.do("open the console", chromedp.Navigate(e.URL+"/"))
	p.wait(20*time.Second, "the overview without a login", `document.querySelector("#count-queued .n")?.textContent === "1" &&
		document.getElementById("login").hidden && document.getElementById("logout").hidden &&
		document.getElementById("live").textContent === "● live"`)
	p.shot("1-overview")

	// This Sentinel runs no scanner: a rescan is refused with the reason.
	p.do("sources", chromedp.Click(chromedp.CSS(`#nav button[data-view="sources"]`)))
	p.do("rescan", chromedp.Click(chromedp.ID("rescan")))
	p.wait(20*time.Second, "the 409's reason", `document.getElementById("message").classList.contains("error") &&
		document.getElementById("message").textContent.startsWith("Could not rescan: ") &&
		document.getElementById("message").textContent.includes("scanner is off")`)
	p.shot("2-rescan-refused")
}

// The Plugins view pauses a plugin: its job stays QUEUED while a worker
// that can run it waits, and the overview says how long; resumed from the
// console, the job completes and the counts follow from the event stream,
// with no reload. Then its settings, a backfill confirmed with its count,
// and a rescan of the sources.
func TestConsole_InChromiumPausesResumesAndBackfillsAPlugin(t *testing.T) {
	t.Parallel()
	ctx := browserTab(t)
	e := sentineltest.Start(t, func(c *config.Config) {
		withTokens(t)(c)
		c.ScanInterval = time.Hour
	})
	e.Plugin("slow", "later")
	e.Worker(testworker.Options{Identity: "tw-slow", Capabilities: []string{"slow"}, Slots: 1, Run: testworker.Succeed})
	testwait.Eventually(t, sentineltest.Within, "the first scan pass", func() bool { return e.Sentinel.Stats().ScanPasses.Load() >= 1 })
	p := &page{t: t, ctx: ctx, dir: artifacts(t)}

	p.do("open the console", chromedp.Navigate(e.URL+"/?token="+adminToken))
	p.wait(20*time.Second, "the overview", `document.getElementById("ready").textContent === "● serving" &&
		document.getElementById("slots").textContent === "0 of 1" && document.getElementById("queue-age").textContent === "none"`)
	p.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.loadedOnce = "yes"`))

	const slow = `#plugins-body tr[data-plugin='slow']`
	p.do("plugins", chromedp.Click(chromedp.CSS(`#nav button[data-view="plugins"]`)))
	p.wait(20*time.Second, "slow active", `document.querySelector("`+slow+` [data-field='dispatch']")?.textContent === "active" &&
		document.querySelector("`+slow+` [data-field='job-timeout']").textContent === "default" &&
		document.querySelector("`+slow+` [data-field='max-retries']").textContent === "default"`)
	p.do("pause slow", chromedp.Click(chromedp.CSS(slow+` button[data-action='pause']`)))
	p.wait(20*time.Second, "slow paused", `document.querySelector("`+slow+`")?.dataset.paused === "true" &&
		document.querySelector("`+slow+` [data-field='dispatch']").textContent === "paused" &&
		document.querySelector("`+slow+` button[data-action='resume']") !== null &&
		document.getElementById("message").textContent.startsWith("Plugin slow is paused")`)
	p.shot("1-paused")

	// A job of the paused plugin waits though tw-slow is connected and idle:
	// the overview shows it QUEUED, and for longer and longer.
	// (A job of later, which no worker runs, makes two plugins: the
	// overview lists them.)
	fv := e.File("in/a.txt", "a\n")
	waiting := e.Enqueue(fv, "slow", 0)
	e.Enqueue(fv, "later", 0)
	p.do("overview", chromedp.Click(chromedp.CSS(`#nav button[data-view="overview"]`)))
	p.wait(20*time.Second, "the job QUEUED for 2 s", `document.querySelector("#count-queued .n")?.textContent === "2" &&
		document.getElementById("slots").textContent === "0 of 1" &&
		/^[0-9]+s$/.test(document.getElementById("queue-age").textContent) &&
		parseInt(document.getElementById("queue-age").textContent) >= 2 &&
		!document.getElementById("queue-ages").hidden &&
		/^slow: oldest QUEUED job waiting [0-9]+s$/.test(document.querySelector("#queue-ages li[data-plugin='slow']")?.textContent) &&
		document.querySelector("#queue-ages li[data-plugin='later']") !== null`)
	if got := e.Job(waiting); got.Status != job.StatusQueued {
		t.Fatalf("job %d of the paused plugin is %s", waiting, got.Status)
	}
	p.shot("2-queued-while-paused")

	// Resumed: the job completes, and the overview follows live.
	p.do("plugins", chromedp.Click(chromedp.CSS(`#nav button[data-view="plugins"]`)))
	p.wait(20*time.Second, "the resume button", `document.querySelector("`+slow+` button[data-action='resume']") !== null`)
	p.do("resume slow", chromedp.Click(chromedp.CSS(slow+` button[data-action='resume']`)))
	p.wait(30*time.Second, "the job COMPLETED", `document.querySelector("`+slow+`")?.dataset.paused === "false" &&
		document.querySelector("#count-completed .n")?.textContent === "1" &&
		document.querySelector("#count-queued .n")?.textContent === "1" &&
		document.getElementById("queue-age").title === "plugin later" && document.getElementById("queue-ages").hidden`)
	if got := e.Job(waiting); got.Status != job.StatusCompleted {
		t.Errorf("job %d is %s after the resume", waiting, got.Status)
	}
	p.wait(time.Second, "the same page (no navigation)", loadedOnce)
	p.shot("3-resumed")

	// Settings: a 400 is shown, then a valid change is.
	setSettings := func(timeout, retries string) {
		p.do("settings "+timeout+" "+retries, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`
			document.querySelector("%[1]s input[name='job_timeout']").value = %[2]q;
			document.querySelector("%[1]s input[name='max_retries']").value = %[3]q;`, slow, timeout, retries)),
			chromedp.Click(chromedp.CSS(slow+` form.settings button[type=submit]`)))
	}
	setSettings("soon", "2")
	p.wait(20*time.Second, "the 400", `document.getElementById("message").classList.contains("error") &&
		document.getElementById("message").textContent.startsWith("Could not save the settings of slow: job_timeout:")`)
	setSettings("5m", "2")
	p.wait(20*time.Second, "the settings", `document.querySelector("`+slow+` [data-field='job-timeout']")?.textContent === "5m0s" &&
		document.querySelector("`+slow+` [data-field='max-retries']").textContent === "2" &&
		document.getElementById("message").textContent === "Plugin slow: job timeout 5m0s, max retries 2."`)
	p.shot("4-settings")

	// Backfill: a file routed to a tag later subscribes to, after the fact.
	for _, req := range [][2]string{{"/api/v1/routes", `{"pattern": "*.csv", "tag": "csv"}`},
		{"/api/v1/plugins/later/subscriptions", `{"tags": ["csv"]}`}} {
		if a := send(t, "POST", e.URL+req[0], req[1], "Content-Type: application/json", bearerOf(adminToken)); a.code/100 != 2 {
			t.Fatalf("POST %s: %d %s", req[0], a.code, a.body)
		}
	}
	e.File("in/b.csv", "b\n")
	const later = `#plugins-body tr[data-plugin='later']`
	p.do("backfill later", chromedp.Click(chromedp.CSS(later+` button[data-action='backfill']`)))
	p.wait(20*time.Second, "the confirmation", `document.getElementById("confirm").open`)
	if q := p.text(`document.getElementById("confirm-text").textContent`); q != "Backfill later: queue a job for 1 file its subscriptions match that have none of it?" {
		t.Errorf("confirmation asks %q", q)
	}
	p.shot("5-backfill-confirm")
	p.do("confirm", chromedp.Click(chromedp.ID("confirm-yes")))
	p.wait(20*time.Second, "the backfill", `document.getElementById("message").textContent === "Backfill of later: 1 job queued for 1 matching file."`)
	testwait.Eventually(t, sentineltest.Within, "later's job queued", func() (bool, string) {
		c := e.Counts()
		return c[job.StatusQueued] == 2, fmt.Sprint(c)
	})

	// Rescan: 202, said so.
	passes := e.Sentinel.Stats().ScanPasses.Load()
	p.do("sources", chromedp.Click(chromedp.CSS(`#nav button[data-view="sources"]`)))
	p.do("rescan", chromedp.Click(chromedp.ID("rescan")))
	p.wait(20*time.Second, "the scan started", `!document.getElementById("message").classList.contains("error") &&
		document.getElementById("message").textContent.startsWith("Scan started")`)
	testwait.Eventually(t, sentineltest.Within, "a scan pass", func() bool { return e.Sentinel.Stats().ScanPasses.Load() > passes })
	p.wait(time.Second, "the same page (no navigation)", loadedOnce)
	p.shot("6-rescan")
}

// The jobs' column headers sort the list, either way, and the pages follow
// the order by cursor: 27 jobs of priorities 0-8, a page of 25.
func TestConsole_InChromiumSortsTheJobsByColumn(t *testing.T) {
	t.Parallel()
	ctx := browserTab(t)
	e := sentineltest.Start(t, nil)
	e.Plugin("nobody")
	fv := e.File("in/a.txt", "a\n")
	var ids []int64
	for i := range 27 {
		ids = append(ids, e.Enqueue(fv, "nobody", int64(i%9)))
	}
	p := &page{t: t, ctx: ctx, dir: artifacts(t)}
	p.do("open the console", chromedp.Navigate(e.URL+"/"))
	p.do("jobs", chromedp.Click(chromedp.CSS(`#nav button[data-view="jobs"]`)))
	firstRow := `document.querySelector("#jobs-body tr.job")?.dataset.job`
	p.wait(20*time.Second, "the newest job first", fmt.Sprintf(`%s === "%d" &&
		document.querySelector("#jobs-head th[data-sort='id']").getAttribute("aria-sort") === "descending" &&
		document.getElementById("page-info").textContent === "1–25 of 27"`, firstRow, ids[26]))
	p.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.loadedOnce = "yes"`))

	// Priority, highest first: of the three jobs of priority 8, the newest.
	p.do("sort by priority", chromedp.Click(chromedp.CSS(`#jobs-head th[data-sort='priority'] button`)))
	p.wait(20*time.Second, "the highest priority first", fmt.Sprintf(`document.getElementById("jobs-body").dataset.query === "sort=priority&limit=25" &&
		%s === "%d" && document.querySelector("#jobs-head th[data-sort='priority']").getAttribute("aria-sort") === "descending" &&
		!document.querySelector("#jobs-head th[data-sort='id']").hasAttribute("aria-sort")`, firstRow, ids[26]))
	// Again: lowest first, the oldest of priority 0 on top; the next page
	// holds the last two, highest priority (8) last.
	p.do("sort by priority, ascending", chromedp.Click(chromedp.CSS(`#jobs-head th[data-sort='priority'] button`)))
	p.wait(20*time.Second, "the lowest priority first", fmt.Sprintf(`document.getElementById("jobs-body").dataset.query === "sort=priority&order=asc&limit=25" &&
		%s === "%d" && document.querySelector("#jobs-head th[data-sort='priority']").getAttribute("aria-sort") === "ascending" &&
		document.querySelector("#jobs-head th[data-sort='priority'] .arrow").textContent === "▲"`, firstRow, ids[0]))
	p.shot("1-by-priority-ascending")
	p.do("next page", chromedp.Click(chromedp.ID("page-next")))
	p.wait(20*time.Second, "the last two", fmt.Sprintf(`document.getElementById("jobs-body").dataset.query.startsWith("sort=priority&order=asc&limit=25&after=priority.a.8.") &&
		document.getElementById("page-info").textContent === "26–27 of 27" &&
		Array.from(document.querySelectorAll("#jobs-body tr.job")).map(r => r.dataset.job).join(",") === "%d,%d" &&
		document.getElementById("page-next").disabled && !document.getElementById("page-prev").disabled`, ids[17], ids[26]))
	p.shot("2-second-page")
	p.do("previous page", chromedp.Click(chromedp.ID("page-prev")))
	p.wait(20*time.Second, "the first page again", fmt.Sprintf(`document.getElementById("page-info").textContent === "1–25 of 27" && %s === "%d"`,
		firstRow, ids[0]))
	// Ended: none has ended, so by id, newest first, and the column says so.
	p.do("sort by end time", chromedp.Click(chromedp.CSS(`#jobs-head th[data-sort='ended'] button`)))
	p.wait(20*time.Second, "by end time", fmt.Sprintf(`document.getElementById("jobs-body").dataset.query === "sort=ended&limit=25" && %s === "%d"`,
		firstRow, ids[26]))
	p.wait(time.Second, "the same page (no navigation)", loadedOnce)
}

// The Workers view drains a worker (confirmed), which then gets no new job
// while another does, and disconnects it (confirmed): its RUNNING job is
// requeued and completed by the other worker, and the drained worker comes
// back, still draining, until undrained. All live, without a reload.
func TestConsole_InChromiumDrainsAndDisconnectsAWorker(t *testing.T) {
	t.Parallel()
	ctx := browserTab(t)
	e := sentineltest.Start(t, withTokens(t))
	e.Plugin("slow")
	fv := e.File("in/a.txt", "a\n")
	stuck := e.Worker(testworker.Options{Identity: "tw-stuck", Capabilities: []string{"slow"}, Slots: 2, Run: blockUntilAborted})
	e.WaitWorkers(1)
	held := e.Enqueue(fv, "slow", 0)
	e.WaitJob(held, job.StatusRunning)
	p := &page{t: t, ctx: ctx, dir: artifacts(t)}

	const row = `#workers-body tr[data-worker='tw-stuck']`
	p.do("open the console", chromedp.Navigate(e.URL+"/?token="+adminToken))
	p.do("workers", chromedp.Click(chromedp.CSS(`#nav button[data-view="workers"]`)))
	p.wait(20*time.Second, "tw-stuck active with its job", fmt.Sprintf(`document.querySelector("%s [data-field='state']")?.textContent === "active" &&
		document.querySelector("%s").textContent.includes("%d") && document.querySelector("%s").textContent.includes("1/2")`, row, row, held, row))
	p.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.loadedOnce = "yes"`))

	p.do("drain", chromedp.Click(chromedp.CSS(row+` button[data-action='drain']`)))
	p.wait(20*time.Second, "the confirmation", `document.getElementById("confirm").open`)
	if q := p.text(`document.getElementById("confirm-text").textContent`); q != "Drain worker tw-stuck? It gets no new jobs and finishes the 1 running job it has. It stays drained until undrained." {
		t.Errorf("drain confirmation asks %q", q)
	}
	p.shot("1-drain-confirm")
	p.do("confirm", chromedp.Click(chromedp.ID("confirm-yes")))
	p.wait(20*time.Second, "tw-stuck draining", `document.querySelector("`+row+`")?.dataset.draining === "true" &&
		document.querySelector("`+row+` [data-field='state']").textContent === "draining" &&
		document.querySelector("`+row+` button[data-action='undrain']") !== null &&
		document.getElementById("message").textContent.startsWith("Worker tw-stuck is draining")`)
	// With a free slot, tw-stuck gets no new job: the other worker does.
	e.Worker(testworker.Options{Identity: "tw-rescuer", Capabilities: []string{"slow"}})
	other := e.Enqueue(fv, "slow", 0)
	if j := e.WaitJob(other, job.StatusCompleted); j.ClaimedBy != "tw-rescuer" {
		t.Errorf("job %d ran on %s while tw-stuck was draining", other, j.ClaimedBy)
	}
	p.shot("2-draining")

	n := stuck.Identifies()
	p.do("disconnect", chromedp.Click(chromedp.CSS(row+` button[data-action='disconnect']`)))
	p.wait(20*time.Second, "the confirmation", `document.getElementById("confirm").open`)
	if q := p.text(`document.getElementById("confirm-text").textContent`); q != "Disconnect worker tw-stuck? The Sentinel forgets it now: the 1 running job it has goes back to the queue. A live worker identifies again." {
		t.Errorf("disconnect confirmation asks %q", q)
	}
	p.shot("3-disconnect-confirm")
	p.do("confirm", chromedp.Click(chromedp.ID("confirm-yes")))
	if j := e.WaitJob(held, job.StatusCompleted); j.ClaimedBy != "tw-rescuer" {
		t.Errorf("job %d after the disconnect ran on %s", held, j.ClaimedBy)
	}
	testwait.Eventually(t, sentineltest.Within, "tw-stuck identified again", func() bool { return stuck.Identifies() > n })
	p.wait(20*time.Second, "tw-stuck back, draining, with no job", `document.getElementById("message").textContent.startsWith("Worker tw-stuck is disconnected") &&
		document.querySelector("`+row+`")?.dataset.draining === "true" && document.querySelector("`+row+`").textContent.includes("0/2") &&
		document.getElementById("workers-summary").textContent.startsWith("(2 connected")`)
	p.shot("4-disconnected")

	p.do("undrain", chromedp.Click(chromedp.CSS(row+` button[data-action='undrain']`)))
	p.wait(20*time.Second, "tw-stuck active", `document.querySelector("`+row+`")?.dataset.draining === "false" &&
		document.getElementById("message").textContent === "Worker tw-stuck gets jobs again."`)
	p.wait(time.Second, "the same page (no navigation)", loadedOnce)
}

// The Environments view lists each environment with the plugin versions
// that use it, the newest deploy first.
func TestConsole_InChromiumListsTheEnvironments(t *testing.T) {
	t.Parallel()
	ctx := browserTab(t)
	e := sentineltest.Start(t, nil)
	e.Plugin("builtin")
	for _, m := range [][3]string{{"wasm", "1.0", "0123456789abcdef0123456789abcdef"}, {"wasm", "2.0", "env-b"}} {
		if _, err := e.DB.PluginManifestActivate(context.Background(), m[0], m[1], "src-"+m[1], m[2], "art-"+m[1]); err != nil {
			t.Fatal(err)
		}
	}
	p := &page{t: t, ctx: ctx, dir: artifacts(t)}
	p.do("open the console", chromedp.Navigate(e.URL+"/"))
	p.do("environments", chromedp.Click(chromedp.CSS(`#nav button[data-view="environments"]`)))
	p.wait(20*time.Second, "both environments", `document.querySelectorAll("#environments-body tr[data-env]").length === 2 &&
		document.getElementById("environments-summary").textContent === "(2, 1 used by an active plugin)" &&
		document.querySelector("#environments-body tr[data-env='env-b'] [data-field='plugins']").textContent === "wasm 2.0" &&
		document.querySelector("#environments-body tr[data-env='0123456789abcdef0123456789abcdef']").textContent.includes("0123456789abcdef…") &&
		document.querySelector("#environments-body tr[data-env='0123456789abcdef0123456789abcdef'] [data-field='plugins']").textContent === "wasm 1.0 (superseded)"`)
	p.shot("1-environments")
}

// The overview re-reads the oldest QUEUED job's age by itself, not only
// when the counts change: here another process moves the job's enqueue
// time two hours back, and no count moves.
func TestConsole_InChromiumRereadsTheQueueAgeByItself(t *testing.T) {
	t.Parallel()
	ctx := browserTab(t)
	e := sentineltest.Start(t, nil)
	e.Plugin("nobody")
	id := e.Enqueue(e.File("in/a.txt", "a\n"), "nobody", 0)
	p := &page{t: t, ctx: ctx, dir: artifacts(t)}
	p.do("open the console", chromedp.Navigate(e.URL+"/"))
	p.wait(20*time.Second, "the job's wait in seconds", `document.querySelector("#count-queued .n")?.textContent === "1" &&
		/^[0-9]+s$/.test(document.getElementById("queue-age").textContent)`)
	p.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.loadedOnce = "yes"`))

	conn, err := sql.Open("sqlite", e.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Exec(`PRAGMA busy_timeout = 5000`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(`UPDATE cf_processing_queue SET enqueued_at = enqueued_at - 7200000 WHERE id = ?`, id); err != nil {
		t.Fatal(err)
	}
	p.wait(20*time.Second, "the wait two hours longer", `document.getElementById("queue-age").textContent.startsWith("2h ") &&
		document.querySelector("#count-queued .n").textContent === "1"`)
	p.wait(time.Second, "the same page (no navigation)", loadedOnce)
	p.shot("1-queue-age-reread")
}

// TestConsole_InChromiumShowsAJobsOutputs: with --lineage, a completed job's
// detail lists the outputs its worker reported (topic, sink, rows).
func TestConsole_InChromiumShowsAJobsOutputs(t *testing.T) {
	t.Parallel()
	ctx := browserTab(t)
	tokens := withTokens(t)
	e := sentineltest.Start(t, func(c *config.Config) { tokens(c); c.Lineage = true })
	e.Plugin("report")
	fv := e.File("in/report.csv", "a\nb\nc\n")
	e.Worker(testworker.Options{Capabilities: []string{"report"},
		Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
			return transport.Conclude{Status: transport.StatusSuccess,
				Artifacts: []map[string]string{{"topic": "output", "uri": "parquet://out/report.parquet", "rows": "3"}}}
		}})
	id := e.Enqueue(fv, "report", 0)
	e.WaitJob(id, job.StatusCompleted)
	p := &page{t: t, ctx: ctx, dir: artifacts(t)}
	p.do("open the console", chromedp.Navigate(e.URL+"/?token="+adminToken))
	p.do("list the jobs", chromedp.Click(chromedp.CSS(`#nav button[data-view="jobs"]`)))
	p.wait(20*time.Second, "the job", fmt.Sprintf(`document.querySelector("#jobs-body tr.job[data-job='%d']") !== null`, id))
	p.do("open the job", chromedp.Click(chromedp.CSS(fmt.Sprintf("#jobs-body tr.job[data-job='%d']", id))))
	p.wait(20*time.Second, "its output", `(() => {
		const rows = document.querySelectorAll("#detail-outputs tr.output");
		return rows.length === 1 && rows[0].dataset.uri === "parquet://out/report.parquet" &&
			rows[0].textContent.includes("output") && rows[0].textContent.includes("3");
	})()`)
	p.shot("job-outputs")
}
