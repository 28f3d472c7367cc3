//go:build race

package worker_test

// raceEnabled: wazero's compiler takes some 40 s per Go module under the
// race detector, so these tests run modules with its interpreter then.
const raceEnabled = true
