package db

import (
	"reflect"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

func TestWithoutPaused(t *testing.T) {
	paused := map[string]bool{"p": true}
	for _, tc := range []struct {
		name string
		in   job.ClaimRequest
		want job.ClaimRequest
	}{
		{"OnlyPaused", job.ClaimRequest{Worker: "w", Plugins: []string{"p"}, Limit: 2},
			job.ClaimRequest{Worker: "w", Limit: 2}},
		{"Mixed", job.ClaimRequest{Worker: "w", Plugins: []string{"p", "q"}, Prefer: []string{"p"}, Limit: 2},
			job.ClaimRequest{Worker: "w", Plugins: []string{"q"}, Limit: 2}},
		{"AnyPluginLeftToTheStatement", job.ClaimRequest{Worker: "w", Plugins: []string{"*"}, Exclude: []string{"x"}, Limit: 2},
			job.ClaimRequest{Worker: "w", Plugins: []string{"*"}, Exclude: []string{"x"}, Limit: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := WithoutPaused([]job.ClaimRequest{tc.in}, paused)
			if !reflect.DeepEqual(got[0], tc.want) {
				t.Errorf("got %+v, want %+v", got[0], tc.want)
			}
		})
	}
	reqs := []job.ClaimRequest{{Worker: "w", Plugins: []string{"p"}, Limit: 1}}
	if got := WithoutPaused(reqs, nil); &got[0] != &reqs[0] {
		t.Error("nothing paused: the requests should come back as they are")
	}
}

func TestRerunPick(t *testing.T) {
	deployed := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	before, after := deployed.Add(-time.Hour), deployed.Add(time.Hour)
	for _, tc := range []struct {
		name string
		jobs []PastJob
		want map[int64]int64
	}{
		{"CompletedBefore", []PastJob{{1, "COMPLETED", 5, before}}, map[int64]int64{1: 5}},
		{"CompletedAfter", []PastJob{{1, "COMPLETED", 5, after}}, map[int64]int64{}},
		{"FailedBefore", []PastJob{{1, "FAILED", 5, before}}, map[int64]int64{}},
		{"RerunQueued", []PastJob{{1, "COMPLETED", 5, before}, {1, "QUEUED", 5, time.Time{}}}, map[int64]int64{}},
		{"RerunDone", []PastJob{{1, "COMPLETED", 5, before}, {1, "COMPLETED", 5, after}}, map[int64]int64{}},
		{"Latest", []PastJob{{1, "COMPLETED", 5, before}, {1, "COMPLETED", 9, before}, {2, "COMPLETED", 1, before}},
			map[int64]int64{1: 9, 2: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RerunPick(tc.jobs, deployed); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
