package logformat

import (
	"bytes"
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestSet_MillisecondTimesAndDurationsWithUnits(t *testing.T) {
	Set()
	var buf bytes.Buffer
	log := zerolog.New(&buf).With().Timestamp().Logger()
	log.Info().Dur("took", 1500*time.Millisecond).Dur("wait", 250*time.Millisecond).Msg("x")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	if line["took"] != "1.5s" || line["wait"] != "250ms" {
		t.Errorf("durations %v and %v, want \"1.5s\" and \"250ms\"", line["took"], line["wait"])
	}
	if ts, _ := line["time"].(string); !regexp.MustCompile(`T\d\d:\d\d:\d\d\.\d{3}`).MatchString(ts) {
		t.Errorf("timestamp %q has no milliseconds", ts)
	}
}
