package db

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/casparian/sentinel/job"
)

func TestShadowURI_KeepsTheFileBelowItsFolder(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"parquet://output/p.parquet", "parquet://output/_shadow/run-7/p.parquet"},
		{"parquet://p.parquet", "parquet://_shadow/run-7/p.parquet"},
		{"sqlite:///abs/out/c.db/{file_stem}", "sqlite:///abs/out/_shadow/run-7/c.db/{file_stem}"},
		{"SQLITE://c.db/t", "SQLITE://_shadow/run-7/c.db/t"},
		{"file:///o/x.csv", "file:///o/_shadow/run-7/x.csv"},
		{"no scheme", "no scheme"},
	} {
		if got := ShadowURI(c.in, 7); got != c.want {
			t.Errorf("ShadowURI(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestShadowOverrides_RedirectsEveryTopic(t *testing.T) {
	t.Parallel()
	configured := []Sink{{Topic: "output", URI: "parquet://out/p.parquet", Mode: "replace"}, {Topic: "errors", URI: "file://out/e.jsonl"}}
	got, err := ShadowOverrides("p", configured, `{"extra": {"uri": "sqlite://out/x.db/t"}}`, 3)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := parseOverrides(got)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Sink{
		"output": {Topic: "output", URI: "parquet://out/_shadow/run-3/p.parquet", Mode: "replace"},
		"errors": {Topic: "errors", URI: "file://out/_shadow/run-3/e.jsonl", Mode: "append"},
		"extra":  {Topic: "extra", URI: "sqlite://out/_shadow/run-3/x.db/t", Mode: "append"},
	}
	if len(parsed) != len(want) {
		t.Fatalf("overrides %s", got)
	}
	for topic, w := range want {
		if s := parsed[topic]; len(s) != 1 || s[0] != w {
			t.Errorf("topic %s: %+v, want %+v", topic, s, w)
		}
	}
	// No configured topic: the default output sink is redirected.
	got, _ = ShadowOverrides("p", nil, "", 3)
	if !strings.Contains(got, `"uri":"parquet://output/_shadow/run-3/p.parquet"`) {
		t.Errorf("default output: %s", got)
	}
}

func TestCompareShadow_Verdicts(t *testing.T) {
	t.Parallel()
	art := func(rows, schema, content string) string {
		b, _ := json.Marshal([]map[string]string{{"topic": "output", "uri": "u", "rows": rows, "schema": schema, "content_hash": content}})
		return string(b)
	}
	run := job.ShadowRun{Plugin: "p", Version: "2", BaseVersion: "1"}
	pairs := []ShadowPair{
		{FileVersionID: 1, ShadowFound: true, ShadowStatus: job.StatusCompleted, BaseArtifacts: art("2", "a:int64", "h"), ShadowArtifacts: art("2", "a:int64", "h")},
		{FileVersionID: 2, ShadowFound: true, ShadowStatus: job.StatusCompleted, BaseArtifacts: art("2", "a:int64", "h"), ShadowArtifacts: art("3", "a:string", "g")},
		{FileVersionID: 3, ShadowFound: true, ShadowStatus: job.StatusQueued},
		{FileVersionID: 4, ShadowFound: true, ShadowStatus: job.StatusFailed},
		{FileVersionID: 5, ShadowFound: true, ShadowStatus: job.StatusCompleted, ShadowArtifacts: art("1", "", "")},
		{FileVersionID: 6, ShadowFound: true, ShadowStatus: job.StatusCompleted, BaseMetrics: `{"rows": 4}`, ShadowMetrics: `{"rows": 4}`},
	}
	c := CompareShadow(run, pairs)
	want := job.ShadowSummary{Files: 6, Compared: 3, Identical: 2, Differing: 1, MissingBase: 1, MissingShadow: 1, Pending: 1}
	if c.Summary != want {
		t.Errorf("summary %+v, want %+v", c.Summary, want)
	}
	d := strings.Join(c.Files[1].Topics[0].Differences, "; ")
	if d != "rows 2 → 3; schema a:int64 → a:string; content differs" {
		t.Errorf("differences %q", d)
	}
	if _, err := ShadowComparisonOf(run, pairs[2:4]); err == nil || !strings.Contains(err.Error(), "no results yet (2 file versions: 1 pending, 1 failed or skipped)") {
		t.Errorf("no results: %v", err)
	}
}
