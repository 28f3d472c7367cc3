package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/internal/httpapi"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/job"
)

// Tokens of the test token files: 32 characters each.
const (
	readToken  = "read-token-0123456789abcdefghijk"
	adminToken = "admin-token-0123456789abcdefghij"
	// wrongToken has the length of the others and matches neither.
	wrongToken = "wrong-token-0123456789abcdefghij"
)

// writeTokens writes an --api-tokens file (mode 0600) and returns its path.
func writeTokens(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// withTokens configures the read and admin tokens above.
func withTokens(t *testing.T) func(*config.Config) {
	path := writeTokens(t, "# operators\nread "+readToken+" grafana\n\nadmin "+adminToken+" alice\n")
	return func(c *config.Config) { c.APITokens = path }
}

// answer is what a test reads of a response.
type answer struct {
	code   int
	header http.Header
	body   string
}

// send makes one request; headers are "Name: value" strings, and a "Host:"
// header sets the request's Host.
func send(t *testing.T, method, url, body string, headers ...string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ": ")
		if name == "Host" {
			req.Host = value
			continue
		}
		req.Header.Set(name, value)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		// An event stream does not end: read up to its first event.
		var first strings.Builder
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if sc.Text() == "" && strings.Contains(first.String(), "event:") {
				break
			}
			first.WriteString(sc.Text() + "\n")
		}
		return answer{code: res.StatusCode, header: res.Header, body: first.String()}
	}
	raw, _ := io.ReadAll(res.Body)
	return answer{code: res.StatusCode, header: res.Header, body: string(raw)}
}

func bearerOf(token string) string { return "Authorization: Bearer " + token }

// reasonOf decodes the reason of a refusal.
func reasonOf(t *testing.T, a answer) string {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal([]byte(a.body), &e); err != nil || e.Error == "" {
		t.Fatalf("refusal body %q is not {\"error\": ..., \"reason\": ...}: %v", a.body, err)
	}
	return e.Reason
}

// requestFor turns a route pattern into a method and a path that reaches it.
func requestFor(pattern string) (method, path string) {
	method, path, found := strings.Cut(pattern, " ")
	if !found {
		method, path = "GET", pattern
	}
	path = strings.NewReplacer("{id}", "1", "{name}", "p", "{$}", "").Replace(path)
	if strings.HasSuffix(path, "/") && !strings.HasSuffix(pattern, "{$}") {
		path += "zz-not-routed" // a subtree pattern: any path under it
	}
	switch path {
	case "/debug/pprof/profile": // 30 s by default
		path += "?seconds=1"
	case "/debug/pprof/trace":
		path += "?seconds=0.05"
	}
	return method, path
}

// accessExpected says who may call a route, from its method and path alone:
// the table must agree.
func accessExpected(pattern string) httpapi.Access {
	switch {
	case pattern == "GET /healthz":
		return httpapi.Public
	case strings.HasPrefix(pattern, "POST "), strings.Contains(pattern, "/debug/pprof"):
		return httpapi.Admin
	}
	return httpapi.Read
}

func TestGuard_EveryRouteWantsItsToken(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, func(c *config.Config) {
		withTokens(t)(c)
		c.Pprof = true
	})
	e.Plugin("p")
	endpoints := e.API.Endpoints()
	if len(endpoints) < 20 {
		t.Fatalf("only %d endpoints: the table is not the one served", len(endpoints))
	}
	for _, ep := range endpoints {
		t.Run(ep.Pattern, func(t *testing.T) {
			want := accessExpected(ep.Pattern)
			if ep.Access != want {
				t.Fatalf("access %s, want %s", ep.Access, want)
			}
			method, path := requestFor(ep.Pattern)
			body := ""
			headers := []string{}
			if method == "POST" {
				body = "{}"
				headers = append(headers, "Content-Type: application/json")
			}
			url := e.URL + path

			a := send(t, method, url, body, headers...)
			if want == httpapi.Public {
				if a.code != http.StatusOK {
					t.Fatalf("no token: %d %s, want 200", a.code, a.body)
				}
				return
			}
			if a.code != http.StatusUnauthorized || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") ||
				reasonOf(t, a) != "no_token" {
				t.Errorf("no token: %d %v %s, want 401 with WWW-Authenticate: Bearer", a.code, a.header, a.body)
			}
			a = send(t, method, url, body, append(headers, bearerOf(wrongToken))...)
			if a.code != http.StatusUnauthorized || reasonOf(t, a) != "bad_token" {
				t.Errorf("wrong token: %d %s, want 401 bad_token", a.code, a.body)
			}
			a = send(t, method, url, body, append(headers, "Authorization: Basic "+adminToken)...)
			if a.code != http.StatusUnauthorized {
				t.Errorf("admin token as Basic: %d %s, want 401", a.code, a.body)
			}

			a = send(t, method, url, body, append(headers, bearerOf(readToken))...)
			switch {
			case want == httpapi.Admin && (a.code != http.StatusForbidden || reasonOf(t, a) != "forbidden"):
				t.Errorf("read token on an admin route: %d %s, want 403 forbidden", a.code, a.body)
			case want == httpapi.Read && (a.code == http.StatusUnauthorized || a.code == http.StatusForbidden):
				t.Errorf("read token on a read route: %d %s", a.code, a.body)
			}

			a = send(t, method, url, body, append(headers, "Authorization: bearer "+adminToken)...)
			if a.code == http.StatusUnauthorized || a.code == http.StatusForbidden || a.code == http.StatusUnsupportedMediaType {
				t.Errorf("admin token: %d %s", a.code, a.body)
			}
		})
	}
	// Every refusal was counted by reason.
	metrics := send(t, "GET", e.URL+"/metrics", "", bearerOf(readToken)).body
	for _, reason := range []string{"no_token", "bad_token", "forbidden"} {
		if !regexp.MustCompile(`casparian_http_refused_total\{reason="` + reason + `"\} [1-9]`).MatchString(metrics) {
			t.Errorf("refusals for %s not counted:\n%s", reason, grepLines(metrics, "refused"))
		}
	}
}

func grepLines(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestGuard_TokenInTheQueryOnlyOfTheConsoleAndTheEventStream(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, withTokens(t))
	if a := send(t, "GET", e.URL+"/?token="+readToken, ""); a.code != http.StatusOK ||
		!strings.Contains(a.body, "Casparian Sentinel") {
		t.Errorf("console with ?token=: %d %s", a.code, a.body)
	}
	if a := send(t, "GET", e.URL+"/api/v1/events?token="+readToken, ""); a.code != http.StatusOK ||
		!strings.Contains(a.body, "event: status") {
		t.Errorf("event stream with ?token=: %d %s", a.code, a.body)
	}
	if a := send(t, "GET", e.URL+"/api/v1/status?token="+readToken, ""); a.code != http.StatusUnauthorized {
		t.Errorf("API with ?token=: %d, want 401", a.code)
	}
	if a := send(t, "GET", e.URL+"/?token="+wrongToken, ""); a.code != http.StatusUnauthorized {
		t.Errorf("console with a wrong ?token=: %d, want 401", a.code)
	}
	if a := send(t, "GET", e.URL+"/api/v1/events?token="+wrongToken, ""); a.code != http.StatusUnauthorized {
		t.Errorf("event stream with a wrong ?token=: %d, want 401", a.code)
	}
}

// jobCount reads the number of jobs from the database.
func jobCount(t *testing.T, e *sentineltest.Env) int64 {
	t.Helper()
	counts, err := e.Store.JobsCountByStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, c := range counts {
		n += c
	}
	return n
}

func TestGuard_CrossSiteAndNonJSONPostsWriteNothing(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name  string
		tweak func(*config.Config)
		extra []string // headers every request carries
	}{
		{name: "WithoutTokens"},
		{name: "WithTokens", tweak: withTokens(t), extra: []string{bearerOf(adminToken)}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			e := sentineltest.Start(t, mode.tweak)
			e.Plugin("p")
			e.Plugin("nobody")
			fv := e.File("a.csv", "a\n")
			queued := e.Enqueue(fv, "nobody", 0)
			// A second source root, under the allowed root.
			other := filepath.Join(e.Dir, "other")
			if err := os.MkdirAll(other, 0o755); err != nil {
				t.Fatal(err)
			}
			posts := []struct{ path, body string }{
				{"/api/v1/jobs", fmt.Sprintf(`{"file_version_id": %d, "plugin": "p"}`, fv)},
				{fmt.Sprintf("/api/v1/jobs/%d/cancel", queued), ""},
				{"/api/v1/sources", fmt.Sprintf(`{"path": %q}`, other)},
				{"/api/v1/routes", `{"pattern": "*.csv", "tag": "csv"}`},
				{"/api/v1/plugins/p/subscriptions", `{"tags": ["csv"]}`},
			}
			host := strings.TrimPrefix(e.URL, "http://")
			refusals := []struct {
				name    string
				headers []string
				code    int
				reason  string
			}{
				{"FormFromEvilOrigin", []string{"Content-Type: application/x-www-form-urlencoded", "Origin: http://evil.example"}, 403, "cross_origin"},
				{"TextPlainFromEvilOrigin", []string{"Content-Type: text/plain", "Origin: http://evil.example"}, 403, "cross_origin"},
				{"JSONFromEvilOrigin", []string{"Content-Type: application/json", "Origin: http://evil.example"}, 403, "cross_origin"},
				{"NullOrigin", []string{"Content-Type: application/json", "Origin: null"}, 403, "cross_origin"},
				{"SameHostOtherPort", []string{"Content-Type: application/json", "Origin: http://127.0.0.1:1"}, 403, "cross_origin"},
				{"SecFetchSiteCrossSite", []string{"Content-Type: text/plain", "Sec-Fetch-Site: cross-site"}, 403, "cross_origin"},
				{"NoContentType", nil, 415, "bad_content_type"},
				{"FormWithoutOrigin", []string{"Content-Type: application/x-www-form-urlencoded"}, 415, "bad_content_type"},
				{"JSONLookalike", []string{"Content-Type: application/jsonp"}, 415, "bad_content_type"},
			}
			for _, p := range posts {
				for _, r := range refusals {
					a := send(t, "POST", e.URL+p.path, p.body, append(r.headers, mode.extra...)...)
					if a.code != r.code || reasonOf(t, a) != r.reason {
						t.Errorf("%s %s: %d %s, want %d %s", r.name, p.path, a.code, a.body, r.code, r.reason)
					}
				}
			}
			// Nothing was written.
			if n := jobCount(t, e); n != 1 {
				t.Errorf("%d jobs after the refused POSTs, want 1", n)
			}
			if j := e.Job(queued); j.Status != job.StatusQueued {
				t.Errorf("job %d is %s after a refused cancel, want QUEUED", queued, j.Status)
			}
			roots, _ := e.Sentinel.Sources(context.Background())
			rules, _ := e.Sentinel.Routes(context.Background())
			if len(roots) != 1 || len(rules) != 0 {
				t.Errorf("%d source roots and %d routes after refused POSTs, want 1 and 0", len(roots), len(rules))
			}

			// The same requests from the page's own origin, or from a
			// client that sends no Origin, go through.
			json := "Content-Type: application/json; charset=utf-8"
			for i, p := range posts {
				headers := append([]string{json, "Sec-Fetch-Site: same-origin"}, mode.extra...)
				if i%2 == 0 {
					headers = append(headers, "Origin: http://"+host)
				}
				if a := send(t, "POST", e.URL+p.path, p.body, headers...); a.code >= 300 {
					t.Errorf("POST %s from the same origin: %d %s", p.path, a.code, a.body)
				}
			}
			if n := jobCount(t, e); n != 2 {
				t.Errorf("%d jobs after the accepted POSTs, want 2", n)
			}
		})
	}
}

func TestAPI_PostsWithoutParametersTakeAnEmptyBodyOrAnEmptyObject(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("nobody")
	fv := e.File("a.csv", "a\n")
	for _, body := range []string{"", "{}", " { }\n"} {
		id := e.Enqueue(fv, "nobody", 0)
		if a := send(t, "POST", fmt.Sprintf("%s/api/v1/jobs/%d/cancel", e.URL, id), body, "Content-Type: application/json"); a.code != 200 {
			t.Errorf("cancel with body %q: %d %s", body, a.code, a.body)
		}
	}
	id := e.Enqueue(fv, "nobody", 0)
	for _, body := range []string{`{"force": true}`, `[]`, `{} {}`, "cancel"} {
		if a := send(t, "POST", fmt.Sprintf("%s/api/v1/jobs/%d/cancel", e.URL, id), body, "Content-Type: application/json"); a.code != 400 ||
			!strings.Contains(a.body, "takes no parameters") {
			t.Errorf("cancel with body %q: %d %s, want 400", body, a.code, a.body)
		}
	}
	if j := e.Job(id); j.Status != job.StatusQueued {
		t.Errorf("job cancelled by a refused request: %s", j.Status)
	}
}

func TestGuard_HostMustBeLoopbackWithoutTokens(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	_, port, _ := strings.Cut(strings.TrimPrefix(e.URL, "http://"), ":")
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "127.0.0.2:" + port, "[::1]:" + port, "[::1]"} {
		if a := send(t, "GET", e.URL+"/api/v1/status", "", "Host: "+host); a.code != 200 {
			t.Errorf("Host %s: %d %s", host, a.code, a.body)
		}
	}
	for _, host := range []string{"evil.example:" + port, "evil.example", "localhost.evil.example", "127.0.0.1.evil.example", "10.0.0.1:" + port, "0.0.0.0:" + port} {
		for _, path := range []string{"/", "/api/v1/status", "/metrics"} {
			if a := send(t, "GET", e.URL+path, "", "Host: "+host); a.code != http.StatusForbidden || reasonOf(t, a) != "bad_host" {
				t.Errorf("Host %q %s: %d %s, want 403 bad_host", host, path, a.code, a.body)
			}
		}
	}
	// The health check answers whatever the Host: it reveals nothing.
	if a := send(t, "GET", e.URL+"/healthz", "", "Host: evil.example"); a.code != 200 {
		t.Errorf("healthz with a foreign Host: %d", a.code)
	}

	// With tokens, any Host name is fine: the token is the check.
	et := sentineltest.Start(t, withTokens(t))
	if a := send(t, "GET", et.URL+"/api/v1/status", "", "Host: sentinel.example.com", bearerOf(readToken)); a.code != 200 {
		t.Errorf("foreign Host with a token: %d %s", a.code, a.body)
	}
	// --insecure serves a network address without tokens on purpose: its
	// clients' Host is that address. Cross-site POSTs stay refused.
	ei := sentineltest.Start(t, func(c *config.Config) { c.Insecure = true })
	if a := send(t, "GET", ei.URL+"/api/v1/status", "", "Host: 10.0.0.1:"+port); a.code != 200 {
		t.Errorf("--insecure, network Host: %d %s", a.code, a.body)
	}
	if a := send(t, "POST", ei.URL+"/api/v1/routes", `{"pattern": "*.x", "tag": "x"}`, "Host: 10.0.0.1:"+port,
		"Content-Type: application/json", "Origin: http://evil.example"); a.code != http.StatusForbidden {
		t.Errorf("--insecure, cross-origin POST: %d %s", a.code, a.body)
	}
}

func TestPprof_OffByDefaultAdminOnlyWhenOn(t *testing.T) {
	t.Parallel()
	t.Run("Off", func(t *testing.T) {
		e := sentineltest.Start(t, withTokens(t))
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
			if a := send(t, "GET", e.URL+path, "", bearerOf(adminToken)); a.code != http.StatusNotFound {
				t.Errorf("%s with an admin token, pprof off: %d, want 404", path, a.code)
			}
		}
		open := sentineltest.Start(t, nil)
		if a := send(t, "GET", open.URL+"/debug/pprof/", ""); a.code != http.StatusNotFound {
			t.Errorf("/debug/pprof/ without tokens, pprof off: %d, want 404", a.code)
		}
	})
	t.Run("OnWithTokens", func(t *testing.T) {
		e := sentineltest.Start(t, func(c *config.Config) {
			withTokens(t)(c)
			c.Pprof = true
		})
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
			if a := send(t, "GET", e.URL+path, ""); a.code != http.StatusUnauthorized {
				t.Errorf("%s without a token: %d, want 401", path, a.code)
			}
			if a := send(t, "GET", e.URL+path, "", bearerOf(readToken)); a.code != http.StatusForbidden {
				t.Errorf("%s with a read token: %d, want 403", path, a.code)
			}
			if a := send(t, "GET", e.URL+path, "", bearerOf(adminToken)); a.code != http.StatusOK {
				t.Errorf("%s with an admin token: %d, want 200", path, a.code)
			}
		}
	})
	t.Run("OnWithoutTokens", func(t *testing.T) {
		e := sentineltest.Start(t, func(c *config.Config) { c.Pprof = true })
		if a := send(t, "GET", e.URL+"/debug/pprof/cmdline", ""); a.code != http.StatusOK {
			t.Errorf("pprof on loopback without tokens: %d, want 200", a.code)
		}
		if a := send(t, "GET", e.URL+"/debug/pprof/cmdline", "", "Host: evil.example"); a.code != http.StatusForbidden {
			t.Errorf("pprof with a foreign Host: %d, want 403", a.code)
		}
	})
}

func TestTokens_ReloadReplacesTheTokensAndKeepsThemWhenTheFileIsBad(t *testing.T) {
	t.Parallel()
	first := "first-admin-token-0123456789"
	second := "second-admin-token-0123456789"
	path := writeTokens(t, "admin "+first+"\n")
	e := sentineltest.Start(t, func(c *config.Config) { c.APITokens = path })
	status := func(token string) int {
		return send(t, "GET", e.URL+"/api/v1/status", "", bearerOf(token)).code
	}
	if code := status(first); code != 200 {
		t.Fatalf("first token: %d", code)
	}

	if err := os.WriteFile(path, []byte("admin "+second+" new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.API.ReloadTokens(); err != nil {
		t.Fatal(err)
	}
	if code := status(first); code != http.StatusUnauthorized {
		t.Errorf("first token after the reload: %d, want 401", code)
	}
	if code := status(second); code != 200 {
		t.Errorf("second token after the reload: %d, want 200", code)
	}

	// A bad file is refused and the tokens in force stay.
	if err := os.WriteFile(path, []byte("admin "+second+"\nwrite "+first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := e.API.ReloadTokens()
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("reload of a bad file = %v, want an error naming line 2", err)
	}
	if code := status(second); code != 200 {
		t.Errorf("second token after a failed reload: %d, want 200", code)
	}
	if code := status(first); code != http.StatusUnauthorized {
		t.Errorf("first token after a failed reload: %d, want 401", code)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := e.API.ReloadTokens(); err == nil {
		t.Error("reload of a missing file succeeded")
	}
	if code := status(second); code != 200 {
		t.Errorf("second token after the file was removed: %d, want 200", code)
	}
}

func TestParseTokens_ErrorsNameTheLineAndNeverTheToken(t *testing.T) {
	t.Parallel()
	good := "# comment\n\n  read  " + readToken + "  grafana\nadmin " + adminToken + "\n   # indented comment\n"
	tokens, err := httpapi.ParseTokens([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 2 || tokens[0].Role != httpapi.RoleRead || tokens[0].Name != "grafana" || tokens[0].Line != 3 ||
		tokens[1].Role != httpapi.RoleAdmin || tokens[1].Name != "line 4" {
		t.Errorf("tokens = %+v", tokens)
	}
	for _, bad := range []struct{ file, want string }{
		{"read " + readToken + "\n" + adminToken + "\n", "line 2: want \"read TOKEN [name]\""},
		{"\n\nwrite " + readToken + "\n", "line 3: the role must be read or admin"},
		{"Admin " + readToken + "\n", "line 1: the role must be read or admin"},
		{"read short-token\n", "line 1: the token has 11 characters, want at least 16"},
		{"read " + readToken + " a b\n", "line 1: want"},
		{"read " + readToken + "\nadmin " + readToken + "\n", "line 2: the same token as line 1"},
		{"# nothing\n\n", "no tokens"},
		{"", "no tokens"},
	} {
		_, err := httpapi.ParseTokens([]byte(bad.file))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseTokens(%q) = %v, want %q", bad.file, err, bad.want)
			continue
		}
		if strings.Contains(err.Error(), readToken) || strings.Contains(err.Error(), adminToken) {
			t.Errorf("the error shows a token: %v", err)
		}
	}
}

func TestLoadTokens_WarnsWhenOthersMayReadTheFile(t *testing.T) {
	t.Parallel()
	path := writeTokens(t, "admin "+adminToken+"\n")
	for _, c := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o644, true}} {
		if err := os.Chmod(path, c.mode); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		if _, err := httpapi.LoadTokens(path, zerolog.New(&logs)); err != nil {
			t.Fatal(err)
		}
		warned := strings.Contains(logs.String(), `"level":"warn"`) && strings.Contains(logs.String(), "readable by other users")
		if warned != c.warn {
			t.Errorf("mode %s: warned %v, want %v\n%s", c.mode, warned, c.warn, logs.String())
		}
		if strings.Contains(logs.String(), adminToken) {
			t.Errorf("the log shows the token:\n%s", logs.String())
		}
	}
}
