package worker_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests. The one
// exception is not the worker's: the in-process Sentinel's protoactor starts
// a timer goroutine after a burst of dead letters, and it may still be
// waiting out its period after the Sentinel stopped.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}
