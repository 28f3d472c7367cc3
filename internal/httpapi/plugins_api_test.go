package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/job"
)

func TestAPI_PluginPauseResumeAndSettings(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	base := e.URL + "/api/v1/plugins/"

	var res api.PluginSettingsResult
	if code, body := call(t, "POST", base+"p/pause", "", &res); code != http.StatusOK || !res.Settings.Paused || res.Settings.PausedAt == nil {
		t.Fatalf("pause: %d %s", code, body)
	}
	var list api.PluginList
	call(t, "GET", base[:len(base)-1], "", &list)
	if len(list.Plugins) != 1 || !list.Plugins[0].Settings.Paused {
		t.Errorf("GET /api/v1/plugins after pause: %+v", list.Plugins)
	}
	if code, body := call(t, "POST", base+"p/resume", "{}", &res); code != http.StatusOK || res.Settings.Paused {
		t.Fatalf("resume: %d %s", code, body)
	}

	for _, tc := range []struct {
		name, method, body string
		wantTimeout        string
		wantRetries        *int
	}{
		{"Both", "POST", `{"job_timeout": "5m", "max_retries": 3}`, "5m0s", intPtr(3)},
		{"NoTimeout", "POST", `{"job_timeout": "0"}`, "0s", intPtr(3)},
		{"Defaults", "POST", `{"job_timeout": "default", "max_retries": -1}`, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res api.PluginSettingsResult
			code, body := call(t, tc.method, base+"p/settings", tc.body, &res)
			if code != http.StatusOK || res.Settings.JobTimeout != tc.wantTimeout ||
				(res.Settings.MaxRetries == nil) != (tc.wantRetries == nil) ||
				(tc.wantRetries != nil && *res.Settings.MaxRetries != *tc.wantRetries) {
				t.Errorf("%s settings %s: %d %s", tc.method, tc.body, code, body)
			}
		})
	}

	for _, tc := range []struct {
		name, path, body string
		want             int
	}{
		{"UnknownPlugin", "nobody/pause", "", http.StatusNotFound},
		{"BadTimeout", "p/settings", `{"job_timeout": "soon"}`, http.StatusBadRequest},
		{"NegativeRetries", "p/settings", `{"max_retries": -5}`, http.StatusBadRequest},
		{"NothingToChange", "p/settings", `{}`, http.StatusBadRequest},
		{"RerunVersion", "p/rerun", `{"version": "1.0"}`, http.StatusBadRequest},
		{"PauseWithParams", "p/pause", `{"now": true}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := call(t, "POST", base+tc.path, tc.body, nil); code != tc.want {
				t.Errorf("POST %s %s: %d %s, want %d", tc.path, tc.body, code, body, tc.want)
			} else {
				errorOf(t, body)
			}
		})
	}
}

func intPtr(n int) *int { return &n }

func TestAPI_BackfillRerunAndRescan(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	e.File("in/a.csv", "a\n")
	e.File("in/b.txt", "b\n")
	call(t, "POST", e.URL+"/api/v1/routes", `{"pattern": "*.csv", "tag": "csv"}`, nil)
	call(t, "POST", e.URL+"/api/v1/plugins/p/subscriptions", `{"tags": ["csv"]}`, nil)

	for _, tc := range []struct {
		name, path, body    string
		wantMatched, wantQd int64
	}{
		{"BackfillDryRun", "backfill", `{"dry_run": true}`, 1, 0},
		{"Backfill", "backfill", `{}`, 1, 1},
		{"BackfillAgain", "backfill", `{}`, 0, 0},
		{"RerunDryRun", "rerun", `{"dry_run": true}`, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res api.BackfillResult
			code, body := call(t, "POST", e.URL+"/api/v1/plugins/p/"+tc.path, tc.body, &res)
			if code != http.StatusOK || res.Matched != tc.wantMatched || res.Queued != tc.wantQd || res.Plugin != "p" {
				t.Errorf("POST %s %s: %d %s; want matched %d, queued %d", tc.path, tc.body, code, body, tc.wantMatched, tc.wantQd)
			}
		})
	}
	testwait.Eventually(t, sentineltest.Within, "one job queued", func() (bool, string) {
		c := e.Counts()
		return c[job.StatusQueued] == 1, ""
	})

	code, body := call(t, "POST", e.URL+"/api/v1/plugins/nobody/backfill", `{}`, nil)
	if code != http.StatusNotFound || !strings.Contains(errorOf(t, body), "nobody") {
		t.Errorf("backfill of an unknown plugin: %d %s", code, body)
	}
	if code, body := call(t, "POST", e.URL+"/api/v1/sources/rescan", "", nil); code != http.StatusConflict ||
		!strings.Contains(errorOf(t, body), "scanner is off") {
		t.Errorf("rescan with the scanner off: %d %s, want 409", code, body)
	}
}

// A rescan runs a pass at once, long before the next --scan-interval: a
// file written after the first pass gets its job.
func TestAPI_RescanRunsAPassNow(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, func(c *config.Config) { c.ScanInterval = time.Hour })
	e.Plugin("p")
	call(t, "POST", e.URL+"/api/v1/routes", `{"pattern": "*.csv", "tag": "csv"}`, nil)
	call(t, "POST", e.URL+"/api/v1/plugins/p/subscriptions", `{"tags": ["csv"]}`, nil)
	testwait.Eventually(t, sentineltest.Within, "first pass done", func() bool { return e.Sentinel.Stats().ScanPasses.Load() >= 1 })

	path := filepath.Join(e.Root, "late.csv")
	if err := os.WriteFile(path, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour) // settled: hashed at first sight
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	var rescan api.RescanResult
	if code, body := call(t, "POST", e.URL+"/api/v1/sources/rescan", "", &rescan); code != http.StatusAccepted || !rescan.Started {
		t.Fatalf("rescan: %d %s", code, body)
	}
	testwait.Eventually(t, sentineltest.Within, "the late file's job queued", func() (bool, string) {
		c := e.Counts()
		return c[job.StatusQueued] == 1, fmt.Sprint(c)
	})
}

func TestAPI_QueueAges(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, withTokens(t))
	e.Plugin("a", "b")
	url := e.URL + "/api/v1/queue/ages"
	var ages api.QueueAges
	if a := send(t, "GET", url, "", bearerOf(readToken)); a.code != http.StatusOK || strings.Join(strings.Fields(a.body), "") != `{"plugins":[]}` {
		t.Fatalf("queue ages of an empty queue: %d %s", a.code, a.body)
	}
	fv := e.File("a.txt", "a\n")
	e.Enqueue(fv, "a", 0)
	e.Enqueue(fv, "b", 0)
	e.Enqueue(fv, "b", 0)
	testwait.Eventually(t, 10*time.Second, "both plugins' oldest job a second old", func() (bool, string) {
		a := send(t, "GET", url, "", bearerOf(readToken))
		ages = api.QueueAges{}
		if a.code != http.StatusOK || json.Unmarshal([]byte(a.body), &ages) != nil {
			return false, fmt.Sprint(a.code, " ", a.body)
		}
		return len(ages.Plugins) == 2 && ages.Plugins[1].OldestAgeSeconds >= 1, a.body
	})
	if ages.Plugins[0].Plugin != "a" || ages.Plugins[1].Plugin != "b" ||
		ages.Plugins[0].OldestAgeSeconds < ages.Plugins[1].OldestAgeSeconds || ages.Plugins[0].OldestAgeSeconds > 60 {
		t.Errorf("queue ages %+v: want a then b, oldest first, under a minute", ages.Plugins)
	}
}
