package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/testwait"
)

// httpAddr reads the HTTP server's address from the start log line.
func httpAddr(t *testing.T, s *sentinel) string {
	t.Helper()
	for _, entry := range logEntries(t, s.logs.String()) {
		if entry["message"] == "sentinel started" {
			addr, _ := entry["http"].(string)
			if addr == "" {
				t.Fatalf("start log has no http address: %v", entry)
			}
			return addr
		}
	}
	t.Fatalf("no start log line:\n%s", s.logs)
	return ""
}

// request makes one HTTP call and returns the status and body.
func request(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw)
}

func TestRun_HTTPAndScannerServeFromTheBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := filepath.Join(dir, "inbox")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	s := startSentinel(t, []string{
		"--bind", "tcp://127.0.0.1:0", "--database", filepath.Join(dir, "sentinel.db"), "--log-format", "json",
		"--http", "127.0.0.1:0", "--scan-interval", "50ms", "--shutdown-timeout", "5s", "--allowed-roots", dir,
	}, nil)
	base := "http://" + httpAddr(t, s)

	if code, body := request(t, "GET", base+"/healthz", ""); code != 200 {
		t.Fatalf("healthz: %d %s", code, body)
	}
	if code, body := request(t, "GET", base+"/metrics", ""); code != 200 || !strings.Contains(body, "casparian_up 1") {
		t.Errorf("metrics: %d, up line missing", code)
	}
	// Configure the scout through the API, drop a file, see its job appear.
	for _, c := range []struct{ path, body string }{
		{"/api/v1/sources", fmt.Sprintf(`{"path": %q}`, root)},
		{"/api/v1/routes", `{"pattern": "*.csv", "tag": "csv"}`},
		{"/api/v1/plugins/reader/subscriptions", `{"tags": ["csv"]}`},
	} {
		if code, body := request(t, "POST", base+c.path, c.body); code >= 300 {
			t.Fatalf("POST %s: %d %s", c.path, code, body)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "orders.csv"), []byte("id\n1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, "the scanned file's job", func() (bool, string) {
		_, body := request(t, "GET", base+"/api/v1/jobs?plugin=reader", "")
		var list struct {
			Jobs []struct {
				Status   string `json:"status"`
				FilePath string `json:"file_path"`
				Priority int64  `json:"priority"`
			} `json:"jobs"`
		}
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			return false, body
		}
		return len(list.Jobs) == 1 && list.Jobs[0].FilePath == filepath.Join(root, "orders.csv") &&
			list.Jobs[0].Status == "QUEUED" && list.Jobs[0].Priority == 100, body
	})
	if code, body := request(t, "GET", base+"/", ""); code != 200 || !strings.Contains(body, "Casparian Sentinel") {
		t.Errorf("web console: %d", code)
	}

	s.stopClean(t)
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
		t.Error("the HTTP port still accepts connections after the stop")
	}
}

func TestRun_HTTPPortInUseFailsTheStart(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	err = run(t.Context(), []string{"--bind", "tcp://127.0.0.1:0", "--database", filepath.Join(dir, "s.db"),
		"--http", ln.Addr().String()}, envFrom(nil), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--http") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("run with a busy --http port = %v", err)
	}
}

// Tokens of the tests' --api-tokens files.
const (
	readToken  = "read-token-0123456789abcdefghijk"
	adminToken = "admin-token-0123456789abcdefghij"
)

// writeTokens writes an --api-tokens file and returns its path.
func writeTokens(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// requestAs makes one HTTP call with a Bearer token ("" for none) and
// returns the status and body.
func requestAs(t *testing.T, token, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw)
}

func TestRun_APITokensGuardTheHTTPServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokens := writeTokens(t, filepath.Join(dir, "tokens"), "read "+readToken+"\nadmin "+adminToken+" ops\n")
	s := startSentinel(t, []string{
		"--bind", "tcp://127.0.0.1:0", "--database", filepath.Join(dir, "sentinel.db"), "--log-format", "json",
		"--http", "127.0.0.1:0", "--api-tokens", tokens, "--pprof", "--shutdown-timeout", "5s",
	}, nil)
	base := "http://" + httpAddr(t, s)

	// The container health check has no token.
	var out bytes.Buffer
	if err := healthcheck(t.Context(), []string{"--http", httpAddr(t, s)}, envFrom(nil), &out); err != nil {
		t.Errorf("healthcheck: %v", err)
	}
	for _, c := range []struct {
		token, method, path, body string
		code                      int
	}{
		{"", "GET", "/healthz", "", 200},
		{"", "GET", "/api/v1/status", "", 401},
		{"", "GET", "/metrics", "", 401},
		{readToken, "GET", "/api/v1/status", "", 200},
		{readToken, "GET", "/metrics", "", 200},
		{readToken, "GET", "/", "", 200},
		{readToken, "POST", "/api/v1/routes", `{"pattern": "*.csv", "tag": "csv"}`, 403},
		{adminToken, "POST", "/api/v1/routes", `{"pattern": "*.csv", "tag": "csv"}`, 201},
		{readToken, "GET", "/debug/pprof/cmdline", "", 403},
		{adminToken, "GET", "/debug/pprof/cmdline", "", 200},
	} {
		if code, body := requestAs(t, c.token, c.method, base+c.path, c.body); code != c.code {
			t.Errorf("%s %s with token %q: %d %s, want %d", c.method, c.path, c.token, code, body, c.code)
		}
	}
	if strings.Contains(s.logs.String(), "runs without tokens") {
		t.Error("the no-token warning was logged with tokens")
	}
	if strings.Contains(s.logs.String(), readToken) || strings.Contains(s.logs.String(), adminToken) {
		t.Errorf("the log shows a token:\n%s", s.logs)
	}
	s.stopClean(t)
}

func TestRun_WithoutTokensWarnsAndHasNoPprof(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startSentinel(t, []string{
		"--bind", "tcp://127.0.0.1:0", "--database", filepath.Join(dir, "sentinel.db"), "--log-format", "json",
		"--http", "127.0.0.1:0", "--shutdown-timeout", "5s",
	}, nil)
	base := "http://" + httpAddr(t, s)
	// The HTTP server logs it as it starts serving, which may come just
	// after the Sentinel said it was ready.
	warned := func() int {
		n := 0
		for _, entry := range logEntries(t, s.logs.String()) {
			if entry["level"] == "warn" && strings.Contains(fmt.Sprint(entry["message"]), "without tokens") {
				n++
			}
		}
		return n
	}
	testwait.Eventually(t, 5*time.Second, "the warning about running without tokens", func() (bool, string) {
		return warned() > 0, s.logs.String()
	})
	if n := warned(); n != 1 {
		t.Errorf("%d warnings about running without tokens, want 1:\n%s", n, s.logs)
	}
	if code, _ := request(t, "GET", base+"/debug/pprof/", ""); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --pprof: %d, want 404", code)
	}
	if code, _ := request(t, "GET", base+"/api/v1/status", ""); code != 200 {
		t.Errorf("status without tokens, on loopback: %d, want 200", code)
	}
	s.stopClean(t)
}

func TestRun_BadTokenFileFailsTheStartNamingTheLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		name, content string
		want          []string
	}{
		{"unknown role", "read " + readToken + "\n\nwriter " + adminToken + "\n", []string{"--api-tokens", "line 3", "read or admin"}},
		{"short token", "# ops\nadmin 0123456789\n", []string{"--api-tokens", "line 2", "at least 16"}},
		{"no tokens", "# nothing yet\n", []string{"--api-tokens", "no tokens"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeTokens(t, filepath.Join(t.TempDir(), "tokens"), c.content)
			err := run(t.Context(), []string{"--bind", "tcp://127.0.0.1:0", "--database", filepath.Join(dir, "s.db"),
				"--http", "127.0.0.1:0", "--api-tokens", path}, envFrom(nil), io.Discard, io.Discard)
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("run with a bad token file = %v, want it to say %q", err, w)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "s.db")); !os.IsNotExist(err) {
		t.Errorf("a database was created before the token file was checked: %v", err)
	}
	err := run(t.Context(), []string{"--bind", "tcp://127.0.0.1:0", "--database", filepath.Join(dir, "s.db"),
		"--http", "127.0.0.1:0", "--api-tokens", filepath.Join(dir, "missing")}, envFrom(nil), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--api-tokens") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("run with a missing token file = %v", err)
	}
}

// TestRun_SIGHUPReloadsTheTokens is not parallel: the SIGHUP goes to the
// whole test process (see TestRun_SIGHUPReloadsTheAuthorizedWorkers).
func TestRun_SIGHUPReloadsTheTokens(t *testing.T) {
	dir := t.TempDir()
	path := writeTokens(t, filepath.Join(dir, "tokens"), "admin "+adminToken+"\n")
	s := startSentinel(t, []string{
		"--bind", "tcp://127.0.0.1:0", "--database", filepath.Join(dir, "sentinel.db"), "--log-format", "json",
		"--http", "127.0.0.1:0", "--api-tokens", path, "--shutdown-timeout", "5s",
	}, nil)
	base := "http://" + httpAddr(t, s)
	status := func(token string) int {
		code, _ := requestAs(t, token, "GET", base+"/api/v1/status", "")
		return code
	}
	if code := status(adminToken); code != 200 {
		t.Fatalf("admin token before the reload: %d", code)
	}

	// The handler is installed before runWithReady reports ready, so the
	// test binary, which is the Sentinel's process, survives the signal.
	writeTokens(t, path, "read "+readToken+"\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 5*time.Second, "the new token in force", func() (bool, string) {
		old, fresh := status(adminToken), status(readToken)
		return old == http.StatusUnauthorized && fresh == 200, fmt.Sprintf("old token %d, new token %d", old, fresh)
	})

	// A bad file is logged and changes nothing.
	writeTokens(t, path, "read "+readToken+"\nadmin short\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 5*time.Second, "the failed reload logged", func() (bool, string) {
		for _, entry := range logEntries(t, s.logs.String()) {
			if entry["level"] == "error" && entry["reload"] == "api-tokens" && strings.Contains(fmt.Sprint(entry["error"]), "line 2") {
				return true, ""
			}
		}
		return false, s.logs.String()
	})
	if code := status(readToken); code != 200 {
		t.Errorf("read token after a failed reload: %d, want 200", code)
	}
	s.stopClean(t)
}
