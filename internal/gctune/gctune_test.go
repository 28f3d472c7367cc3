package gctune

import (
	"context"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent_FollowsTheLiveHeap(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, target uint64
		want         int
	}{
		{0, 64 * mib, MaxPercent},
		{1 * mib, 64 * mib, MaxPercent},   // would be 6300: capped
		{16 * mib, 64 * mib, 300},         // grows to the target: 4× live
		{21 * mib, 64 * mib, 204},         // 64/21 = 3.04×
		{32 * mib, 64 * mib, MinPercent},  // exactly Go's default
		{200 * mib, 64 * mib, MinPercent}, // a large heap: never below the default
		{1 << 40, 1 << 62, MaxPercent},    // no overflow
	} {
		if got := Percent(c.live, c.target); got != c.want {
			t.Errorf("Percent(%d MiB, %d MiB) = %d, want %d", c.live/mib, c.target/mib, got, c.want)
		}
	}
}

func gogc() int64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// Run raises GOGC for this test's small heap, follows a heap that grows
// past the target back down to the default, and restores GOGC when done.
func TestRun_SetsAndRestoresGOGC(t *testing.T) {
	before := gogc()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	const target = 64 << 20
	go func() {
		defer close(done)
		Run(ctx, target, 10*time.Millisecond, nil)
	}()
	waitFor(t, "GOGC raised for a small heap", func() bool { return gogc() > 250 })
	ballast := make([]byte, 2*target) // live: the heap is past the target
	runtime.GC()
	waitFor(t, "GOGC back to the default for a large heap", func() bool { return gogc() == MinPercent })
	runtime.KeepAlive(ballast)
	cancel()
	<-done
	if got := gogc(); got != before {
		t.Errorf("GOGC after Run = %d, want %d as before", got, before)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s (GOGC %d)", what, gogc())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
