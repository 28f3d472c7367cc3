package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	eventually(t, 10*time.Second, "the scanned file's job", func() (bool, string) {
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
		t.Errorf("status page: %d", code)
	}

	s.stopClean(t)
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
		t.Error("the HTTP port still accepts connections after the stop")
	}
}

func TestRun_HTTPPortInUseFailsTheStart(t *testing.T) {
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
