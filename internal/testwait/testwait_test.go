package testwait_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/testwait"
)

func TestEventually_ReturnsOnceTheConditionHolds(t *testing.T) {
	t.Parallel()
	calls := 0
	testwait.Eventually(t, time.Second, "third call", func() bool { calls++; return calls == 3 })
	if calls != 3 {
		t.Fatalf("cond called %d times, want 3", calls)
	}
	testwait.Eventually(t, time.Second, "at once", func() (bool, string) { return true, "" })
}

// fatalRecorder stands in for a test: Fatalf records the message and ends
// the goroutine, as testing.T's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// failure runs Eventually as a test would and returns its failure message.
func failure(wait func(testing.TB)) string {
	r := &fatalRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait(r)
	}()
	<-done
	return r.msg
}

func TestEventually_FailsNamingWhatAndTheLastSeen(t *testing.T) {
	t.Parallel()
	msg := failure(func(tb testing.TB) {
		testwait.Eventually(tb, 30*time.Millisecond, "the moon", func() bool { return false })
	})
	if msg != "not within 30ms: the moon" {
		t.Errorf("bare condition: %q", msg)
	}
	n := 0
	msg = failure(func(tb testing.TB) {
		testwait.Eventually(tb, 30*time.Millisecond, "the moon", func() (bool, string) {
			n++
			return false, fmt.Sprintf("call %d", n)
		})
	})
	if !strings.HasPrefix(msg, "not within 30ms: the moon; last seen: call ") || !strings.HasSuffix(msg, fmt.Sprint(n)) {
		t.Errorf("condition with what it saw: %q (%d calls)", msg, n)
	}
}

// A long wait checks less often than a short one: the pause doubles from a
// millisecond up to Poll, so 300 ms of waiting take a handful of checks
// after the first quick ones, not one every few milliseconds.
func TestEventually_PausesGrowUpToPoll(t *testing.T) {
	t.Parallel()
	start := time.Now()
	calls := 0
	testwait.Eventually(t, 5*time.Second, "300 ms passed", func() bool {
		calls++
		return time.Since(start) >= 300*time.Millisecond
	})
	// 1+2+4+8+16 ms, then 25 ms pauses: about 17 checks; a sleep that
	// overshoots on a loaded machine only makes fewer.
	if limit := 5 + int(300*time.Millisecond/testwait.Poll) + 2; calls > limit {
		t.Errorf("%d checks in 300 ms, want at most %d", calls, limit)
	}
	if calls < 3 {
		t.Errorf("%d checks in 300 ms: it did not poll", calls)
	}
}
