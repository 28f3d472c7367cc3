package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// TestAPI_ShadowCompareAndPromote runs a plugin's shadow run through the
// routes: the runs, the comparison (the row counts differ: the test
// worker's FileStats reports lines, the shadow version's worker function
// one row more), promote as admin only; and refuses bad input.
func TestAPI_ShadowCompareAndPromote(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, withTokens(t))
	e.Plugin("p")
	e.Worker(testworker.Options{Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
		c := testworker.FileStats(ctx, j)
		if j.Dispatch.SourceCode == "v2" {
			c.Metrics["rows"]++
		}
		return c
	}})
	fv := e.File("in/a.csv", "a\nb\n")
	e.WaitJob(e.Enqueue(fv, "p", 0), job.StatusCompleted)
	admin, read := bearerOf(adminToken), bearerOf(readToken)

	base := e.URL + "/api/v1/plugins/p"
	for _, c := range []struct {
		method, path, body, token string
		code                      int
		want                      string
	}{
		{"GET", "/compare?base=1.0.0", "", read, http.StatusBadRequest, "give both versions"},
		{"GET", "/compare?base=1.0.0&version=2.0.0&x=1", "", read, http.StatusBadRequest, "x"},
		{"GET", "/compare?base=1.0.0&version=2.0.0", "", read, http.StatusNotFound, `no version \"2.0.0\"`},
		{"POST", "/promote", `{"version": "2.0.0"}`, read, http.StatusForbidden, ""},
		{"POST", "/promote", `{}`, admin, http.StatusBadRequest, "give the shadow version"},
		{"POST", "/discard", `{"version": "2.0.0"}`, admin, http.StatusNotFound, `no version \"2.0.0\"`},
	} {
		a := send(t, c.method, base+c.path, c.body, c.token, "Content-Type: application/json")
		if a.code != c.code || !strings.Contains(a.body, c.want) {
			t.Errorf("%s %s: %d %s, want %d with %q", c.method, c.path, a.code, a.body, c.code, c.want)
		}
	}

	if _, err := e.DB.PluginDeploy(context.Background(), time.Now(), db.Deployment{Plugin: "p", Version: "2.0.0",
		SourceCode: "v2", EnvHash: "system", ArtifactHash: "art-p-2", PublisherName: "t", Shadow: true}); err != nil {
		t.Fatal(err)
	}
	var runs struct {
		Runs []job.ShadowRun `json:"runs"`
	}
	if a := send(t, "GET", base+"/shadow", "", read); a.code != http.StatusOK || json.Unmarshal([]byte(a.body), &runs) != nil ||
		len(runs.Runs) != 1 || runs.Runs[0].State != job.ShadowRunning || runs.Runs[0].Jobs != 1 {
		t.Fatalf("shadow runs: %d %s", a.code, a.body)
	}
	var c job.ShadowComparison
	testwait.Eventually(t, sentineltest.Within, "the shadow job compared", func() bool {
		a := send(t, "GET", base+"/compare?base=1.0.0&version=2.0.0", "", read)
		return a.code == http.StatusOK && json.Unmarshal([]byte(a.body), &c) == nil && c.Summary.Compared == 1
	})
	if c.Summary.Differing != 1 || len(c.Files) != 1 || len(c.Files[0].Topics) != 1 ||
		!strings.Contains(strings.Join(c.Files[0].Topics[0].Differences, ";"), "rows 2 → 3") {
		t.Errorf("comparison: %+v", c)
	}
	var end job.ShadowEnd
	if a := send(t, "POST", base+"/promote", `{"version": "2.0.0"}`, admin, "Content-Type: application/json"); a.code != http.StatusOK ||
		json.Unmarshal([]byte(a.body), &end) != nil || end.Run.State != job.ShadowPromoted || end.Superseded != 1 {
		t.Fatalf("promote: %d %s", a.code, a.body)
	}
	if a := send(t, "POST", base+"/discard", `{"version": "2.0.0"}`, admin, "Content-Type: application/json"); a.code != http.StatusConflict ||
		!strings.Contains(a.body, "has ended") {
		t.Errorf("discard after promote: %d %s", a.code, a.body)
	}
}
