package sentineltest

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// RunCheckingLeaks runs the package's tests and turns a pass into a failure
// when a goroutine outlives them: every Sentinel, HTTP server and worker a
// test starts must end. Idle keep-alive connections of the default client
// are closed first; the goroutine protoactor keeps briefly after a dead
// letter (its log throttle) is not ours to stop. Use it as
// os.Exit(sentineltest.RunCheckingLeaks(m)) in TestMain.
func RunCheckingLeaks(m *testing.M) int {
	code := m.Run()
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction(
			"github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}
