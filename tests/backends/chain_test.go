package backends

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// Chaining by topic (issue #20 part 4), end to end on both backends.

// chainEnv is a Sentinel with lineage, plugins up and down, a second
// source root out (where up writes its artifacts) and a folder outside
// every root.
type chainEnv struct {
	*sentineltest.Env
	out, outside string
}

func startChain(t *testing.T, start start) *chainEnv {
	t.Helper()
	e := start(t, func(c *config.Config) { c.Lineage = true })
	e.Plugin("up", "down")
	c := &chainEnv{Env: e, out: filepath.Join(e.Dir, "out"), outside: filepath.Join(e.Dir, "elsewhere")}
	for _, d := range []string{c.out, c.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.DB.SourceRootAdd(context.Background(), c.out); err != nil {
		t.Fatal(err)
	}
	return c
}

// run is the test worker: up writes an artifact file (in out, or outside
// every root for files named b*) and reports it on "output" with a second
// one on "errors"; down reports an output of its own.
func (c *chainEnv) run(_ context.Context, j testworker.Job) transport.Conclude {
	if j.Dispatch.PluginName != "up" {
		return transport.Conclude{Status: transport.StatusSuccess,
			Artifacts: []map[string]string{{"topic": "output", "uri": fmt.Sprintf("parquet://%s/down-%d.parquet", c.outside, j.ID)}}}
	}
	dir := c.out
	if strings.HasPrefix(filepath.Base(j.Dispatch.FilePath), "b") {
		dir = c.outside
	}
	p := filepath.Join(dir, fmt.Sprintf("up-%d.parquet", j.ID))
	if err := os.WriteFile(p, []byte(fmt.Sprintf("rows of job %d", j.ID)), 0o644); err != nil {
		return transport.Conclude{Status: transport.StatusFailed, ErrorMessage: err.Error()}
	}
	return transport.Conclude{Status: transport.StatusSuccess, Artifacts: []map[string]string{
		{"topic": "output", "uri": "parquet://" + p}, {"topic": "errors", "uri": "parquet://" + p + ".errors"}}}
}

// jobsOf returns plugin's jobs.
func jobsOf(t *testing.T, e *sentineltest.Env, plugin string) []job.Info {
	t.Helper()
	page, err := e.DB.JobsList(context.Background(), job.Filter{Plugin: plugin, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return page.Jobs
}

// A plugin subscribed to another's topic gets a job for the artifact inside
// a source root, with the upstream job's priority, and the original file's
// lineage lists both outputs; an artifact outside every root is not chained
// and is counted; an unsubscribed topic is not chained.
func TestBackends_ChainRunsSubscriberOnUpstreamArtifact(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start start) {
		ctx := context.Background()
		c := startChain(t, start)
		res, err := c.Sentinel.SubscribeTopic(ctx, "down", "up:output")
		if err != nil || !res.Changed || !res.Lineage || len(res.Subscriptions) != 1 || res.Subscriptions[0].Producer != "up" {
			t.Fatalf("subscribe: %+v, %v", res, err)
		}
		if again, err := c.Sentinel.SubscribeTopic(ctx, "down", " up:output "); err != nil || again.Changed {
			t.Fatalf("subscribe again: %+v, %v", again, err)
		}
		w := c.Worker(testworker.Options{Slots: 2, Run: c.run})
		c.WaitWorkers(1)
		a := c.File("in/a.txt", "a\n")
		b := c.File("in/b.txt", "b\n")
		ja := c.Enqueue(a, "up", 7)
		jb := c.Enqueue(b, "up", 0)
		c.WaitJob(ja, job.StatusCompleted)
		c.WaitJob(jb, job.StatusCompleted)

		var down job.Info
		testwait.Eventually(t, sentineltest.Within, "the chained job completes", func() bool {
			jobs := jobsOf(t, c.Env, "down")
			if len(jobs) == 1 && jobs[0].Status == job.StatusCompleted {
				down = jobs[0]
				return true
			}
			return len(jobs) > 1
		})
		testwait.Eventually(t, sentineltest.Within, "the artifact outside the roots counted", func() bool {
			return c.Sentinel.Stats().ChainRefused.Snapshot()[job.ChainOutsideRoots] == 1
		})
		if jobs := jobsOf(t, c.Env, "down"); len(jobs) != 1 {
			t.Fatalf("%d jobs of down, want 1 (the artifact outside every root is not chained)", len(jobs))
		}
		want := filepath.Join(c.out, fmt.Sprintf("up-%d.parquet", ja))
		if down.Priority != 7 || down.FilePath != want {
			t.Errorf("chained job: priority %d, file %q; want 7, %q", down.Priority, down.FilePath, want)
		}
		for _, j := range w.Received() {
			if j.ID == down.ID && j.Dispatch.FilePath != want {
				t.Errorf("chained job dispatched with %q, want %q", j.Dispatch.FilePath, want)
			}
		}

		lin, err := c.Sentinel.FileLineage(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		var chained *job.Output
		for i, o := range lin {
			switch {
			case o.JobID == ja && o.Chain != nil:
				t.Errorf("upstream output with a chain: %+v", o)
			case o.JobID == down.ID:
				chained = &lin[i]
			}
		}
		if len(lin) != 3 || chained == nil {
			t.Fatalf("lineage of the original file: %+v; want up's two outputs and down's", lin)
		}
		if ch := chained.Chain; ch == nil || ch.OriginalVersionID != a || ch.UpstreamJobID != ja || ch.Producer != "up" ||
			ch.Topic != "output" || ch.UpstreamVersionID != a || ch.ArtifactIndex != 0 || ch.OriginalPath != filepath.Join(c.Root, "in", "a.txt") {
			t.Errorf("chained output's origin: %+v", chained.Chain)
		}
		prov, err := c.Sentinel.OutputProvenance(ctx, chained.URI)
		if err != nil || len(prov) != 1 || prov[0].Chain == nil || prov[0].Chain.OriginalVersionID != a {
			t.Errorf("provenance of %s: %+v, %v", chained.URI, prov, err)
		}
		if lb, err := c.Sentinel.FileLineage(ctx, b); err != nil || len(lb) != 2 {
			t.Errorf("lineage of the file whose artifact lies outside: %+v, %v", lb, err)
		}
	})
}

// Subscriptions that would close a loop are refused with the loop named,
// and nothing is written; so are unknown plugins and malformed topics.
func TestBackends_ChainCycleRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start start) {
		ctx := context.Background()
		c := startChain(t, start)
		c.Plugin("third")
		if _, err := c.Sentinel.SubscribeTopic(ctx, "down", "up:output"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Sentinel.SubscribeTopic(ctx, "third", "down:errors"); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			plugin, topic string
			want          error
			says          string
		}{
			{"up", "down:output", job.ErrInvalid, "down → up → down"},
			{"up", "third:output", job.ErrInvalid, "third → up → down → third"},
			{"down", "down:output", job.ErrInvalid, "down → down"},
			{"up", "nope:output", job.ErrNotFound, "nope"},
			{"up", "output", job.ErrInvalid, "PLUGIN:TOPIC"},
			{"up", "down:out put", job.ErrInvalid, "white space"},
		} {
			_, err := c.Sentinel.SubscribeTopic(ctx, tc.plugin, tc.topic)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("subscribe %s to %s: %v; want %v saying %q", tc.plugin, tc.topic, err, tc.want, tc.says)
			}
		}
		for plugin, n := range map[string]int{"up": 0, "down": 1, "third": 1} {
			if res, err := c.Sentinel.TopicSubscriptions(ctx, plugin); err != nil || len(res.Subscriptions) != n {
				t.Errorf("%s's subscriptions after the refusals: %+v, %v; want %d", plugin, res, err, n)
			}
		}
		// Once the loop's other half is gone, the same subscription is fine.
		if res, err := c.Sentinel.UnsubscribeTopic(ctx, "down", "up:output"); err != nil || !res.Changed || len(res.Subscriptions) != 0 {
			t.Fatalf("unsubscribe: %+v, %v", res, err)
		}
		if _, err := c.Sentinel.SubscribeTopic(ctx, "up", "down:output"); err != nil {
			t.Errorf("subscribe without the loop: %v", err)
		}
	})
}

// An artifact completed while no Sentinel runs the chain step (a crash
// after the completion's commit) is chained by the next Sentinel.
func TestBackends_ChainPendingSurvivesRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start start) {
		ctx := context.Background()
		c := startChain(t, start)
		if _, err := c.Sentinel.SubscribeTopic(ctx, "down", "up:output"); err != nil {
			t.Fatal(err)
		}
		a := c.File("in/a.txt", "a\n")
		var up int64
		c.Restart(func() {
			// The completion path as the queue actor takes it, with no
			// queue actor to run the chain step after the commit.
			up = c.Enqueue(a, "up", 0)
			res, err := c.DB.JobsBatch(ctx, time.Now(), nil, []job.ClaimRequest{{Worker: "w-gone", Plugins: []string{"up"}, Limit: 1}})
			if err != nil || len(res.Claims) != 1 {
				t.Fatalf("claim: %+v, %v", res, err)
			}
			concl := c.run(ctx, testworker.Job{ID: up, Dispatch: transport.Dispatch{PluginName: "up", FilePath: filepath.Join(c.Root, "in", "a.txt")}})
			res, err = c.DB.JobsBatch(ctx, time.Now(), []job.Conclusion{{Ref: res.Claims[0].Ref, Kind: job.ConcludeComplete,
				Artifacts: concl.Artifacts}}, nil)
			if err != nil || res.Outcomes[0] != job.OutcomeCompleted || !res.Chained {
				t.Fatalf("complete: %+v, %v", res, err)
			}
			if jobs := jobsOf(t, c.Env, "down"); len(jobs) != 0 {
				t.Fatalf("chained before the restart: %+v", jobs)
			}
		})
		testwait.Eventually(t, sentineltest.Within, "the restarted Sentinel chains the artifact", func() bool {
			return len(jobsOf(t, c.Env, "down")) == 1
		})
		if got := jobsOf(t, c.Env, "down")[0].FilePath; got != filepath.Join(c.out, fmt.Sprintf("up-%d.parquet", up)) {
			t.Errorf("chained job's file: %s", got)
		}
	})
}
