package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/internal/sentineltest"
)

// Topic subscriptions over the API: list, add, a cycle and a
// self-subscription refused with the cycle named and nothing written,
// remove; without --lineage the answer warns.
func TestAPI_TopicSubscriptions(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, func(c *config.Config) { c.Lineage = false }) // --lineage=false: the answer warns
	e.Plugin("csv", "checksum")
	base := e.URL + "/api/v1/plugins/"

	var res api.TopicSubscriptions
	if code, body := call(t, "GET", base+"checksum/subscriptions", "", &res); code != http.StatusOK || len(res.Subscriptions) != 0 {
		t.Fatalf("list: %d %s", code, body)
	}
	code, body := call(t, "POST", base+"checksum/subscriptions", `{"topic": "csv:output"}`, &res)
	if code != http.StatusOK || !res.Changed || res.Lineage || !strings.Contains(res.Warning, "--lineage") || len(res.Subscriptions) != 1 ||
		res.Subscriptions[0] != (api.TopicSubscription{Topic: "csv:output", Producer: "csv", ProducerTopic: "output", Active: true}) {
		t.Fatalf("subscribe: %d %s", code, body)
	}

	for _, tc := range []struct {
		name, path, body string
		code             int
		says             string
	}{
		{"Cycle", "csv/subscriptions", `{"topic": "checksum:output"}`, http.StatusBadRequest, "cycle: checksum → csv → checksum"},
		{"Self", "csv/subscriptions", `{"topic": "csv:output"}`, http.StatusBadRequest, "cycle: csv → csv"},
		{"NoProducer", "csv/subscriptions", `{"topic": "output"}`, http.StatusBadRequest, "PLUGIN:TOPIC"},
		{"UnknownProducer", "csv/subscriptions", `{"topic": "nope:output"}`, http.StatusNotFound, "plugin nope"},
		{"UnknownPlugin", "nope/subscriptions", `{"topic": "csv:output"}`, http.StatusNotFound, "plugin nope"},
		{"TagsAndTopic", "csv/subscriptions", `{"tags": ["a"], "topic": "checksum:output"}`, http.StatusBadRequest, "not both"},
		{"RemoveTags", "csv/subscriptions/remove", `{"tags": ["a"]}`, http.StatusBadRequest, "not tags"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(t, "POST", base+tc.path, tc.body, nil)
			if code != tc.code || !strings.Contains(errorOf(t, body), tc.says) {
				t.Errorf("%s %s: %d %s; want %d saying %q", tc.path, tc.body, code, body, tc.code, tc.says)
			}
		})
	}
	if code, body := call(t, "GET", base+"csv/subscriptions", "", &res); code != http.StatusOK || len(res.Subscriptions) != 0 {
		t.Errorf("csv's subscriptions after the refusals: %d %s", code, body)
	}
	if len(e.Logs.With("topic subscription refused")) == 0 {
		t.Errorf("no log line for the refusals")
	}

	if code, body := call(t, "POST", base+"checksum/subscriptions/remove", `{"topic": "csv:output"}`, &res); code != http.StatusOK ||
		!res.Changed || len(res.Subscriptions) != 0 {
		t.Fatalf("remove: %d %s", code, body)
	}
	if code, body := call(t, "POST", base+"checksum/subscriptions/remove", `{"topic": "csv:output"}`, &res); code != http.StatusOK || res.Changed {
		t.Errorf("remove again: %d %s", code, body)
	}
}
