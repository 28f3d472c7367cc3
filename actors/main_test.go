package actors_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a goroutine outlives the tests: every
// Sentinel, router, HTTP server and test worker a test starts must end.
// Two kinds of goroutine are not ours to stop:
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// protoactor starts a throttle timer after a burst of dead letters
		// (a stopped Sentinel's late messages); it ends after its period,
		// which may fall after the last test.
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"),
		// zmq4 v0.17.0: a DEALER's reader goroutine (qreader.listen) sends
		// each inbound message on a 10-slot queue without watching the
		// socket's context, so a DEALER closed while its queue is full
		// leaves it blocked for ever. The tests' raw DEALERs that never read
		// on purpose (a stuck worker, a malformed-frame sender, a lost
		// worker) close that way; the worker runtime reads until it closes.
		goleak.IgnoreTopFunction("github.com/go-zeromq/zmq4.(*qreader).listen"),
	)
}
