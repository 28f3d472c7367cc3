package worker_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// wasmCacheDir is wazero's compilation cache, shared by every worker the
// tests start, so each module is compiled once per run of the package.
var wasmCacheDir string

// TestMain fails the package if any goroutine outlives the tests. The one
// exception is not the worker's: the in-process Sentinel's protoactor starts
// a timer goroutine after a burst of dead letters, and it may still be
// waiting out its period after the Sentinel stopped.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "casparian-wazero-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	wasmCacheDir = dir
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"),
		goleak.Cleanup(func(int) { _ = os.RemoveAll(dir) }))
}
