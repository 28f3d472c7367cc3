package main

import (
	"strings"
	"testing"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/sentineltest"
)

func TestCLI_TopicSubscribeCycleAndUnsubscribe(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, func(c *config.Config) { c.Lineage = false }) // --lineage=false: the answers warn
	e.Plugin("csv", "checksum")

	code, out, errOut := casparian(t, nil, "--server", e.URL, "plugins", "subscribe", "checksum", "csv:output")
	if code != 0 || !strings.Contains(out, "plugin checksum subscribed") || !strings.Contains(out, "csv:output") ||
		!strings.Contains(errOut, "warning:") || !strings.Contains(errOut, "--lineage") {
		t.Fatalf("subscribe: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out := ok(t, e.URL, "plugins", "subscriptions", "checksum"); !strings.Contains(out, "TOPIC") || !strings.Contains(out, "csv:output") {
		t.Errorf("subscriptions:\n%s", out)
	}
	// Tags still go the old way.
	if out := ok(t, e.URL, "plugins", "subscribe", "checksum", "parquet"); !strings.Contains(out, "plugin checksum subscribes to: parquet") {
		t.Errorf("subscribe to a tag said %q", out)
	}
	for _, args := range [][]string{
		{"plugins", "subscribe", "csv", "checksum:output"},
		{"plugins", "subscribe", "csv", "csv:output"},
	} {
		code, _, errOut := casparian(t, nil, append([]string{"--server", e.URL}, args...)...)
		if code != exitError || !strings.Contains(errOut, "cycle") {
			t.Errorf("casparian %s: exit %d, stderr %q; want the cycle named", strings.Join(args, " "), code, errOut)
		}
	}
	if out := ok(t, e.URL, "plugins", "subscriptions", "csv"); !strings.Contains(out, "plugin csv subscribes to no topic") {
		t.Errorf("csv's subscriptions after the refusals: %q", out)
	}
	if code, _, errOut := casparian(t, nil, "--server", e.URL, "plugins", "subscribe", "csv", "tag", "checksum:output"); code == 0 || errOut == "" {
		t.Errorf("tags and a topic together: exit %d, stderr %q", code, errOut)
	}
	if out := ok(t, e.URL, "plugins", "unsubscribe", "checksum", "csv:output"); !strings.Contains(out, "plugin checksum unsubscribed") ||
		!strings.Contains(out, "subscribes to no topic") {
		t.Errorf("unsubscribe said %q", out)
	}
}
