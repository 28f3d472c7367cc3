package worker

import "time"

// SetReplayWindow shortens replayWindow for a test and returns the function
// that restores it. Tests that call it must not run in parallel.
func SetReplayWindow(d time.Duration) (restore func()) {
	old := replayWindow
	replayWindow = d
	return func() { replayWindow = old }
}
