package db

import (
	"context"
	"testing"

	"github.com/casparian/sentinel/job"
)

// pendingChains counts sentinel_chain_pending rows.
func pendingChains(t *testing.T, db *DB) int {
	t.Helper()
	var n int
	if err := db.reader.QueryRow(`SELECT COUNT(*) FROM sentinel_chain_pending`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// completeOne claims plugin's one QUEUED job and completes it with the
// artifacts, returning whether the batch marked any for chaining.
func completeOne(t *testing.T, db *DB, plugin string, artifacts []map[string]string) bool {
	t.Helper()
	cs := claim(t, db, "w1", 1, plugin)
	if len(cs) != 1 {
		t.Fatalf("claimed %d jobs of %s", len(cs), plugin)
	}
	res, err := db.JobsBatch(context.Background(), testNow, []job.Conclusion{{Ref: cs[0].Ref, Kind: job.ConcludeComplete, Artifacts: artifacts}}, nil)
	if err != nil || res.Outcomes[0] != job.OutcomeCompleted {
		t.Fatalf("complete: %+v, %v", res, err)
	}
	return res.Chained
}

// A completion marks only the artifacts whose producer and topic some
// plugin subscribes to; without subscriptions it marks nothing.
func TestChain_CompletionMarksSubscribedArtifactsOnly(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	s := seedBasics(t, db, "up", "other", "down")
	art := []map[string]string{{"topic": "output", "uri": "parquet:///data/out/x.parquet"}, {"topic": "errors", "uri": "parquet:///data/out/e.parquet"}}

	enqueue(t, db, s.fv, "up", 0)
	if completeOne(t, db, "up", art) || pendingChains(t, db) != 0 {
		t.Fatal("marked without any subscription")
	}
	if _, err := db.PluginTopicSubscribe(ctx, "down", "up:output"); err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, s.fv, "other", 0) // same topic name, another producer
	if completeOne(t, db, "other", art) || pendingChains(t, db) != 0 {
		t.Fatal("marked another producer's artifact")
	}
	enqueue(t, db, s.fv, "up", 0)
	if !completeOne(t, db, "up", art) || pendingChains(t, db) != 1 {
		t.Fatalf("%d pending, want 1 (the output topic only)", pendingChains(t, db))
	}
	w, err := db.ChainsPending(ctx, ChainBatch)
	if err != nil || len(w.Pending) != 1 || w.Pending[0].Producer != "up" || w.Pending[0].Index != 0 || w.Pending[0].FileVersionID != s.fv ||
		len(w.Roots) != 1 {
		t.Fatalf("pending: %+v, %v", w, err)
	}
	// Refused: settled, nothing chained.
	res, err := db.ChainsRecord(ctx, testNow, []job.ChainInput{{Pending: w.Pending[0], Refused: job.ChainOutsideRoots}})
	if err != nil || res.Done != 1 || len(res.Jobs) != 0 || pendingChains(t, db) != 0 {
		t.Fatalf("record a refusal: %+v, %v", res, err)
	}
	// Settled twice (another Sentinel got there first): nothing happens.
	in := job.ChainInput{Pending: w.Pending[0], RootID: s.root, RelPath: "out/x.parquet", Hash: "hash-x", Size: 3, ModTime: testNow}
	if res, err := db.ChainsRecord(ctx, testNow, []job.ChainInput{in}); err != nil || res.Done != 0 || len(res.Jobs) != 0 {
		t.Fatalf("record a settled artifact: %+v, %v", res, err)
	}
}
