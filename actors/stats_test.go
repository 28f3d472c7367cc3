package actors

import (
	"fmt"
	"testing"
)

// TestPluginStats_BoundsLabels: the first MaxPluginLabels plugins get their
// own label, later ones share "other", and a job without a plugin counts
// under "unknown" whatever the count: at most MaxPluginLabels+2 labels.
func TestPluginStats_BoundsLabels(t *testing.T) {
	var p PluginStats
	for i := range MaxPluginLabels + 20 {
		p.For(fmt.Sprintf("plugin-%03d", i)).Completed.Add(1)
	}
	p.For("").Failed.Add(1)
	got := p.Snapshot()
	if len(got) != MaxPluginLabels+2 {
		t.Fatalf("%d labels, want %d (the cap's plugins, other and unknown)", len(got), MaxPluginLabels+2)
	}
	if n := got[OtherPlugin].Completed.Load(); n != 20 {
		t.Errorf("other counted %d, want the 20 plugins past the cap", n)
	}
	if got["plugin-000"].Completed.Load() != 1 || got[UnknownPlugin].Failed.Load() != 1 {
		t.Errorf("plugin-000 %d, unknown %d; want 1 and 1", got["plugin-000"].Completed.Load(), got[UnknownPlugin].Failed.Load())
	}
	if p.For("plugin-000") != got["plugin-000"] {
		t.Error("a labelled plugin got new counters")
	}
}
