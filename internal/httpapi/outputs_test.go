package httpapi_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
)

// TestAPI_LineageProvenanceStaleAndReuse runs a job through a worker, reads
// its lineage and provenance, links a copy without a DISPATCH, makes the
// output stale by editing the file and reruns it; and refuses bad input.
func TestAPI_LineageProvenanceStaleAndReuse(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, func(c *config.Config) { c.Lineage = true })
	e.Plugin("p")
	w := e.Worker(testworker.Options{})
	fv := e.File("in/a.csv", "a,b\n1,2\n")
	id := e.Enqueue(fv, "p", 0)
	e.WaitJob(id, job.StatusCompleted)

	var lin api.Outputs
	if code, body := call(t, "GET", e.URL+"/api/v1/files/"+itoa(fv)+"/lineage", "", &lin); code != http.StatusOK ||
		len(lin.Outputs) != 1 || lin.Outputs[0].JobID != id || lin.Outputs[0].ArtifactHash != "art-p" || lin.Outputs[0].URI == "" {
		t.Fatalf("lineage: %d %s", code, body)
	}
	uri := lin.Outputs[0].URI
	var prov api.Outputs
	if code, body := call(t, "GET", e.URL+"/api/v1/artifacts/provenance?uri="+url.QueryEscape(uri), "", &prov); code != http.StatusOK ||
		len(prov.Outputs) != 1 || prov.Outputs[0].FileVersionID != fv {
		t.Fatalf("provenance: %d %s", code, body)
	}

	// A copy of the content elsewhere: linked, never dispatched.
	var hash string
	j := e.Job(id)
	if hash = lin.Outputs[0].ContentHash; hash == "" {
		t.Fatalf("no content hash in %+v (job %+v)", lin.Outputs[0], j)
	}
	cp, err := e.DB.FileVersionAdd(context.Background(), e.RootID, "copy/a.csv", hash, 8, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := len(w.Received())
	reused := e.Enqueue(cp, "p", 0)
	if got := e.Job(reused); got.Status != job.StatusCompleted || got.ResultSummary != "reused from job "+itoa(id) {
		t.Fatalf("copy's job: %+v", got)
	}
	if n := len(w.Received()); n != before {
		t.Errorf("the worker received %d DISPATCHes for the copy", n-before)
	}
	var metrics string
	testwait.Eventually(t, 5*time.Second, "the reused job counted", func() bool {
		_, metrics = call(t, "GET", e.URL+"/metrics", "", nil)
		return strings.Contains(metrics, `casparian_jobs_reused_total{plugin="p"} 1`)
	})

	// Edited: stale, rerun, superseded.
	e.File("in/a.csv", "a,b\n3,4\n")
	var stale api.Outputs
	if code, body := call(t, "GET", e.URL+"/api/v1/outputs/stale", "", &stale); code != http.StatusOK ||
		len(stale.Outputs) != 1 || stale.Outputs[0].StaleReason != job.StaleNewerFile {
		t.Fatalf("stale: %d %s", code, body)
	}
	var rr api.RerunStaleResult
	if code, body := call(t, "POST", e.URL+"/api/v1/outputs/stale/rerun", `{"dry_run": true}`, &rr); code != http.StatusOK || rr.Matched != 1 || rr.Queued != 0 {
		t.Fatalf("rerun dry run: %d %s", code, body)
	}
	if code, body := call(t, "POST", e.URL+"/api/v1/outputs/stale/rerun", `{"plugin": "p"}`, &rr); code != http.StatusOK || rr.Queued != 1 {
		t.Fatalf("rerun: %d %s", code, body)
	}
	testwait.Eventually(t, 10*time.Second, "the rerun to supersede the stale output", func() bool {
		var s api.Outputs
		call(t, "GET", e.URL+"/api/v1/outputs/stale?plugin=p", "", &s)
		return len(s.Outputs) == 0
	})

	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"BadVersion", "GET", "/api/v1/files/x/lineage", "", http.StatusBadRequest},
		{"ZeroVersion", "GET", "/api/v1/files/0/lineage", "", http.StatusBadRequest},
		{"UnknownVersion", "GET", "/api/v1/files/99999/lineage", "", http.StatusNotFound},
		{"UnknownParam", "GET", "/api/v1/files/1/lineage?x=1", "", http.StatusBadRequest},
		{"NoURI", "GET", "/api/v1/artifacts/provenance", "", http.StatusBadRequest},
		{"BadURI", "GET", "/api/v1/artifacts/provenance?uri=nocolon", "", http.StatusBadRequest},
		{"UnknownURI", "GET", "/api/v1/artifacts/provenance?uri=parquet://none", "", http.StatusNotFound},
		{"StaleUnknownParam", "GET", "/api/v1/outputs/stale?plugins=p", "", http.StatusBadRequest},
		{"RerunUnknownField", "POST", "/api/v1/outputs/stale/rerun", `{"plugins": "p"}`, http.StatusBadRequest},
		{"BadReuse", "POST", "/api/v1/plugins/p/settings", `{"reuse": "maybe"}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := call(t, tc.method, e.URL+tc.path, tc.body, nil); code != tc.want {
				t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.want)
			}
		})
	}
	var set api.PluginSettingsResult
	if code, body := call(t, "POST", e.URL+"/api/v1/plugins/p/settings", `{"reuse": "off"}`, &set); code != http.StatusOK ||
		set.Settings.Reuse == nil || *set.Settings.Reuse {
		t.Errorf("reuse off: %d %s", code, body)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
