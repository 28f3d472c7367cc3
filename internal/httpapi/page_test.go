package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/httpapi"
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
		t.Fatal("chromium is not installed (apt-get install chromium); CI must run the status page test")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// dumpDOM loads url in headless Chromium and returns the DOM after load
// (with more flags, e.g. --virtual-time-budget, after the page's timers).
// CASPARIAN_SCREENSHOT_DIR, when set, also gets a screenshot of the page.
func dumpDOM(t *testing.T, browser, url string, flags ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,900"}, flags...)
	out, err := exec.CommandContext(ctx, browser, append(args, "--dump-dom", url)...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chromium --dump-dom %s: %v\n%s", url, err, stderr)
	}
	if dir := os.Getenv("CASPARIAN_SCREENSHOT_DIR"); dir != "" {
		shot := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(t.Name())+".png")
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
	t.Parallel()
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
	testwait.Eventually(t, 10*time.Second, "queue settled", func() bool {
		c, _ := e.Store.JobsCountByStatus(context.Background())
		return c[job.StatusCompleted] == 3 && c[job.StatusFailed] == 1 && c[job.StatusRunning] == 1
	})
	// RUNNING in the database comes a moment before the worker actor holds
	// the claim; the page shows what the worker actors hold.
	testwait.Eventually(t, 5*time.Second, "both workers connected, the held job on one", func() bool {
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

// seen is a request the recording handler saw.
type seen struct {
	path, query, auth string
}

// recorder serves h and remembers every request.
type recorder struct {
	h    http.Handler
	mu   sync.Mutex
	seen []seen
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.seen = append(rec.seen, seen{path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization")})
	rec.mu.Unlock()
	rec.h.ServeHTTP(w, r)
}

func (rec *recorder) requests() []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seen(nil), rec.seen...)
}

// serveRecorded serves the routes of a new httpapi.Server over e's Sentinel
// through a recorder, on 127.0.0.1, until the test ends.
func serveRecorded(t *testing.T, e *sentineltest.Env, opts httpapi.Options) (string, *recorder) {
	t.Helper()
	opts.Sentinel = e.Sentinel
	rec := &recorder{h: httpapi.New(opts).Handler()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: rec, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), rec
}

func TestStatusPage_WithTokensAsksForOneAndSetsNoCookie(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, withTokens(t))
	page := send(t, "GET", e.URL+"/", "", bearerOf(readToken))
	if page.code != 200 || !strings.Contains(page.body, `data-page="status"`) {
		t.Fatalf("page with a read token: %d %s", page.code, page.body)
	}
	csp := page.header.Get("Content-Security-Policy")
	nonce := regexp.MustCompile(`script-src 'nonce-([^']+)'`).FindStringSubmatch(csp)
	if nonce == nil || !strings.Contains(page.body, `<script nonce="`+nonce[1]+`">`) || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q does not allow the page's script alone", csp)
	}
	if strings.Contains(page.body, `http-equiv="refresh"`) {
		t.Error("with tokens the page has a meta refresh, which would reload it without the token")
	}
	if page.header.Get("Referrer-Policy") != "no-referrer" || page.header.Get("Set-Cookie") != "" {
		t.Errorf("headers: %v", page.header)
	}
	again := send(t, "GET", e.URL+"/", "", bearerOf(readToken))
	if again.header.Get("Content-Security-Policy") == csp {
		t.Error("two answers have the same script nonce")
	}

	// A browser without a token gets a page asking for one; other clients
	// get JSON.
	asked := send(t, "GET", e.URL+"/", "", "Accept: text/html,application/xhtml+xml")
	if asked.code != http.StatusUnauthorized || !strings.HasPrefix(asked.header.Get("WWW-Authenticate"), "Bearer") ||
		!strings.Contains(asked.body, `id="token-form"`) || strings.Contains(asked.body, "Recent jobs") {
		t.Errorf("page without a token, for a browser: %d %v\n%s", asked.code, asked.header, asked.body)
	}
	if a := send(t, "GET", e.URL+"/", ""); a.code != http.StatusUnauthorized || reasonOf(t, a) != "no_token" {
		t.Errorf("page without a token, for curl: %d %s", a.code, a.body)
	}
	if a := send(t, "GET", e.URL+"/api/v1/status", "", "Accept: text/html"); a.code != http.StatusUnauthorized || reasonOf(t, a) != "no_token" {
		t.Errorf("API without a token, Accept: text/html: %d %s", a.code, a.body)
	}
}

func TestStatusPage_InChromiumWithAReadToken(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	path := writeTokens(t, "read "+readToken+"\n")
	e := sentineltest.Start(t, func(c *config.Config) { c.APITokens = path })
	e.Plugin("nobody")
	fv := e.File("in/report.csv", "a\n")
	for i := 0; i < 2; i++ {
		e.Enqueue(fv, "nobody", 0)
	}
	tokens, err := httpapi.LoadTokens(path, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	url, rec := serveRecorded(t, e, httpapi.Options{Logger: zerolog.Nop(), Tokens: tokens})

	// Opened once with ?token=, the page refreshes itself (the virtual
	// time budget runs its timers) with the token in a header, not in the
	// address.
	dom := dumpDOM(t, browser, url+"/?token="+readToken, "--virtual-time-budget=12000")
	if got := countShown(t, dom, "QUEUED"); got != "2" {
		t.Errorf("page shows QUEUED = %s, want 2", got)
	}
	if !strings.Contains(dom, `data-page="status"`) || !strings.Contains(dom, `id="refresh-error" hidden`) {
		t.Errorf("the refreshed page is not the status page:\n%s", dom)
	}
	reqs := rec.requests()
	if len(reqs) < 2 || reqs[0].path != "/" || reqs[0].query != "token="+readToken {
		t.Fatalf("requests = %+v, want the page with ?token= then its refreshes", reqs)
	}
	refreshes := 0
	for _, r := range reqs[1:] {
		if r.auth == "" && r.query == "token="+readToken {
			continue // the load of a screenshot (CASPARIAN_SCREENSHOT_DIR)
		}
		if r.path != "/" || r.query != "" || r.auth != "Bearer "+readToken {
			t.Errorf("refresh request %+v, want GET / with the token in Authorization only", r)
			continue
		}
		refreshes++
	}
	if refreshes < 1 {
		t.Errorf("the page did not refresh itself: %+v", reqs)
	}

	// Opened without a token in a fresh tab: the token form.
	dom = dumpDOM(t, browser, url+"/")
	if !strings.Contains(dom, `id="token-form"`) || strings.Contains(dom, "Recent jobs") {
		t.Errorf("page without a token:\n%s", dom)
	}
}
