package backends

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// Shadow runs (issue #20 part 5) on both backends, with a test worker whose
// plugin "counter" writes as many rows as its source code says ("rows N"):
// v1 writes 2 per file, v2 3.

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// counterWorker runs "counter" jobs: the rows are the number in the
// DISPATCH's source code; it records every DISPATCH's sinks and source.
type counterWorker struct {
	mu    sync.Mutex
	sinks map[int64][]string // job → sink URIs
	code  map[int64]string   // job → source code
}

func (c *counterWorker) run(_ context.Context, j testworker.Job) transport.Conclude {
	n, _ := strconv.Atoi(strings.TrimPrefix(j.Dispatch.SourceCode, "rows "))
	c.mu.Lock()
	for _, s := range j.Dispatch.Sinks {
		c.sinks[j.ID] = append(c.sinks[j.ID], s.URI)
	}
	c.code[j.ID] = j.Dispatch.SourceCode
	c.mu.Unlock()
	var arts []map[string]string
	for _, s := range j.Dispatch.Sinks {
		arts = append(arts, map[string]string{"topic": s.Topic, "uri": s.URI, "rows": strconv.Itoa(n),
			"schema": "n:int64", "content_hash": sha(strconv.Itoa(n))})
	}
	return transport.Conclude{Status: transport.StatusSuccess, Artifacts: arts, Metrics: map[string]int64{"rows": int64(n)}}
}

func (c *counterWorker) of(id int64) (string, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code[id], c.sinks[id]
}

func shadowDeploy(t *testing.T, e *sentineltest.Env, version, code string) (db.DeployResult, error) {
	t.Helper()
	return e.DB.PluginDeploy(context.Background(), time.Now(), db.Deployment{Plugin: "counter", Version: version,
		SourceCode: code, EnvHash: "system", ArtifactHash: sha(code), PublisherName: "test", Shadow: true})
}

func TestShadow_RunComparesPromotesAndDiscards(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start start) {
		ctx := context.Background()
		// With lineage on: shadow jobs must record none.
		e := start(t, func(c *config.Config) { c.Lineage = true })
		if _, err := e.DB.PluginManifestActivate(ctx, "counter", "1.0.0", "rows 2", "", sha("rows 2")); err != nil {
			t.Fatal(err)
		}
		w := &counterWorker{sinks: map[int64][]string{}, code: map[int64]string{}}
		e.Worker(testworker.Options{Capabilities: []string{"counter"}, Slots: 2, Run: w.run})
		e.WaitWorkers(1)

		// A shadow deploy needs an ACTIVE version that processed files.
		var base []int64
		for _, f := range files(e, 3) {
			base = append(base, e.Enqueue(f, "counter", 0))
		}
		for _, id := range base {
			e.WaitJob(id, job.StatusCompleted)
		}
		// Bad input: compare before any shadow run, unknown versions.
		if _, err := e.Sentinel.ShadowCompare(ctx, "counter", "1.0.0", "2.0.0"); !errors.Is(err, job.ErrNotFound) ||
			!strings.Contains(err.Error(), `no version "2.0.0"`) {
			t.Errorf("compare with an unknown version: %v", err)
		}
		if _, err := e.Sentinel.ShadowEnd(ctx, "counter", "9.9.9", true); !errors.Is(err, job.ErrNotFound) {
			t.Errorf("promote an unknown version: %v", err)
		}

		res, err := shadowDeploy(t, e, "2.0.0", "rows 3")
		if err != nil {
			t.Fatal(err)
		}
		if res.Outcome != db.DeployShadowed || res.Shadow == nil || res.Shadow.Jobs != 3 || res.Shadow.BaseVersion != "1.0.0" {
			t.Fatalf("shadow deploy: %+v %+v", res, res.Shadow)
		}
		if _, err := shadowDeploy(t, e, "2.0.1", "rows 4"); !errors.Is(err, job.ErrConflict) ||
			!strings.Contains(err.Error(), "is RUNNING") {
			t.Errorf("second shadow run: %v", err)
		}
		// v1 stays ACTIVE: an ordinary job queued now runs v1.
		normal := e.Enqueue(files(e, 1)[0], "counter", 0)
		e.WaitJob(normal, job.StatusCompleted)
		if code, _ := w.of(normal); code != "rows 2" {
			t.Errorf("ordinary job during the shadow run ran %q, want v1", code)
		}

		var c job.ShadowComparison
		testwait.Eventually(t, sentineltest.Within, "shadow jobs compared", func() bool {
			c, err = e.Sentinel.ShadowCompare(ctx, "counter", "1.0.0", "2.0.0")
			return err == nil && c.Summary.Compared == 3
		})
		if s := c.Summary; s.Files != 3 || s.Differing != 3 || s.Identical != 0 || s.Pending != 0 {
			t.Errorf("summary %+v, want 3 differing", s)
		}
		for _, f := range c.Files {
			if len(f.Topics) != 1 || f.Topics[0].BaseRows == nil || *f.Topics[0].BaseRows != 2 ||
				*f.Topics[0].ShadowRows != 3 || !strings.Contains(strings.Join(f.Topics[0].Differences, ";"), "rows 2 → 3") ||
				!strings.Contains(strings.Join(f.Topics[0].Differences, ";"), "content differs") {
				t.Errorf("file %d: %+v", f.FileVersionID, f.Topics)
			}
			code, sinks := w.of(f.ShadowJobID)
			if code != "rows 3" || len(sinks) != 1 || !strings.Contains(sinks[0], "/_shadow/run-") {
				t.Errorf("shadow job %d ran %q into %v; want v2 into a shadow sink", f.ShadowJobID, code, sinks)
			}
			if j := e.Job(f.ShadowJobID); j.Priority != db.ShadowPriority {
				t.Errorf("shadow job priority %d", j.Priority)
			}
			// The job's detail shows the DISPATCH it got: v2, shadow sink.
			info, err := e.Sentinel.Job(ctx, f.ShadowJobID)
			if err != nil || info.Dispatch == nil || info.Dispatch.ArtifactHash != sha("rows 3") ||
				len(info.Dispatch.Sinks) != 1 || !strings.Contains(info.Dispatch.Sinks[0].URI, "/_shadow/run-") {
				t.Errorf("shadow job %d detail: %+v, %v", f.ShadowJobID, info.Dispatch, err)
			}
			outs, err := e.DB.OutputsOfVersion(ctx, f.FileVersionID)
			if err != nil || len(outs) != 1 || outs[0].JobID != f.BaseJobID {
				t.Errorf("lineage of file %d: %+v, %v; want v1's job's output only", f.FileVersionID, outs, err)
			}
		}
		// v1's outputs are untouched: its jobs ran once, into the real sink.
		for _, id := range base {
			if _, sinks := w.of(id); len(sinks) != 1 || strings.Contains(sinks[0], "_shadow") || runs()[id] > 1 {
				t.Errorf("base job %d: sinks %v", id, sinks)
			}
		}

		end, err := e.Sentinel.ShadowEnd(ctx, "counter", "2.0.0", true)
		if err != nil || end.Run.State != job.ShadowPromoted || end.Superseded != 1 {
			t.Fatalf("promote: %+v, %v", end, err)
		}
		if _, err := e.Sentinel.ShadowEnd(ctx, "counter", "2.0.0", false); !errors.Is(err, job.ErrConflict) {
			t.Errorf("discard an ended run: %v", err)
		}
		after := e.Enqueue(files(e, 1)[0], "counter", 0)
		e.WaitJob(after, job.StatusCompleted)
		if code, _ := w.of(after); code != "rows 3" {
			t.Errorf("job after promote ran %q, want v2", code)
		}
		// A rerun for v2 queues the files v1 ran (3 + the ordinary one),
		// at their jobs' priority: shadow jobs are not among them.
		rerun, err := e.Sentinel.Rerun(ctx, "counter", false)
		if err != nil || rerun.Queued != 4 {
			t.Fatalf("rerun after promote: %+v, %v", rerun, err)
		}
		page, err := e.Sentinel.Jobs(ctx, job.Filter{Plugin: "counter", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		shadows := 0
		for _, j := range page.Jobs {
			if j.Priority == db.ShadowPriority {
				shadows++
			}
		}
		if shadows != 3 {
			t.Errorf("%d jobs at the shadow priority, want the run's 3", shadows)
		}

		// A run discarded before its jobs are due: they are cancelled, v2
		// stays ACTIVE, and compare says there are no results.
		if res, err = shadowDeploy(t, e, "3.0.0", "rows 5"); err != nil || res.Shadow.Jobs == 0 {
			t.Fatalf("shadow deploy v3: %+v, %v", res, err)
		}
		end, err = e.Sentinel.ShadowEnd(ctx, "counter", "3.0.0", false)
		if err != nil || end.Run.State != job.ShadowDiscarded || end.Cancelled == 0 {
			t.Fatalf("discard: %+v, %v", end, err)
		}
		if _, err := e.Sentinel.ShadowCompare(ctx, "counter", "2.0.0", "3.0.0"); !errors.Is(err, job.ErrConflict) ||
			!strings.Contains(err.Error(), "no results yet") {
			t.Errorf("compare without results: %v", err)
		}
		plugins, err := e.Sentinel.Plugins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range plugins {
			if p.Name == "counter" && (p.Active == nil || p.Active.Version != "2.0.0") {
				t.Errorf("ACTIVE version after discard: %+v", p)
			}
		}
	})
}
