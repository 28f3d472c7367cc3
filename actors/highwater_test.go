package actors

import "testing"

func TestHighWater_CopiesOnlyMapsThatShrankFromALargePeak(t *testing.T) {
	t.Parallel()
	var h highWater
	h.grew(100)
	if h.shrunk(0) {
		t.Error("a small map was copied")
	}
	h.grew(4000)
	if h.shrunk(1001) {
		t.Error("copied at more than a quarter of its peak")
	}
	if !h.shrunk(1000) {
		t.Error("not copied at a quarter of its peak")
	}
	if h.shrunk(900) {
		t.Error("the peak did not start again from the copy's size")
	}
	m := map[int]string{1: "a", 2: "b"}
	if c := resized(m); len(c) != 2 || c[1] != "a" || c[2] != "b" {
		t.Errorf("resized lost entries: %v", c)
	}
}
