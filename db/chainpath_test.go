package db

import (
	"errors"
	"slices"
	"testing"

	"github.com/casparian/sentinel/job"
)

func TestChainCycle_FindsTheLoopANewEdgeWouldClose(t *testing.T) {
	t.Parallel()
	sub := func(plugin, ref string) job.TopicSubscription { return SubscriptionOf(plugin, ref, nil) }
	off := false
	subs := []job.TopicSubscription{
		sub("b", "a:output"),              // a → b
		sub("c", "b:errors"),              // b → c
		sub("d", "c:output"),              // c → d
		SubscriptionOf("a", "d:x", &off),  // inactive: no edge d → a
		sub("e", "not a topic reference"), // another tool's row: no edge
	}
	for _, tc := range []struct {
		plugin, producer string
		want             []string
	}{
		{"a", "a", []string{"a", "a"}},
		{"a", "b", []string{"b", "a", "b"}},
		{"a", "d", []string{"d", "a", "b", "c", "d"}},
		{"b", "d", []string{"d", "b", "c", "d"}},
		{"d", "a", nil},
		{"e", "d", nil},
		{"x", "y", nil},
	} {
		if got := ChainCycle(subs, tc.plugin, tc.producer); !slices.Equal(got, tc.want) {
			t.Errorf("%s subscribing to %s: loop %v, want %v", tc.plugin, tc.producer, got, tc.want)
		}
	}
}

func TestParseTopicRef(t *testing.T) {
	t.Parallel()
	if p, tp, err := ParseTopicRef(" csv : output "); err != nil || p != "csv" || tp != "output" {
		t.Errorf("csv:output = %q %q %v", p, tp, err)
	}
	for _, bad := range []string{"", "output", ":output", "csv:", "a:b:c", "a b:c", "a,b:c", string(make([]byte, 101)) + ":x"} {
		if _, _, err := ParseTopicRef(bad); !errors.Is(err, job.ErrInvalid) {
			t.Errorf("%q: %v, want job.ErrInvalid", bad, err)
		}
	}
}

func TestChainMarks_OnlyCompletedArtifactsOfSubscribedTopics(t *testing.T) {
	t.Parallel()
	cs := []job.Conclusion{
		{Ref: job.Ref{JobID: 1, Attempt: 2}, Kind: job.ConcludeComplete, Artifacts: []map[string]string{
			{"topic": "errors", "uri": "parquet:///o/e.parquet"}, {"topic": "output", "uri": "parquet:///o/a.parquet"}, {"topic": "output"}}},
		{Ref: job.Ref{JobID: 2, Attempt: 1}, Kind: job.ConcludeComplete, Artifacts: []map[string]string{{"topic": "output", "uri": "parquet:///o/b.parquet"}}},
		{Ref: job.Ref{JobID: 3, Attempt: 1}, Kind: job.ConcludeFail, Artifacts: []map[string]string{{"topic": "output", "uri": "parquet:///o/c.parquet"}}},
	}
	out := []job.Outcome{job.OutcomeCompleted, job.OutcomeStale, job.OutcomeFailed}
	if m := ChainMarks(cs, out, nil); m != nil {
		t.Errorf("no subscribed topic: %v", m)
	}
	got := ChainMarks(cs, out, map[string]bool{"output": true})
	want := []ChainMark{{JobID: 1, Attempt: 2, Index: 1, Topic: "output", URI: "parquet:///o/a.parquet"}}
	if !slices.Equal(got, want) {
		t.Errorf("marks %v, want %v", got, want)
	}
}
