// Package testwait is the tests' one way to wait for something to happen:
// poll a condition until it holds or a deadline passes, never sleep a fixed
// time and hope. It imports nothing of ours, so every package's tests can
// use it, internal ones (package transport, package actors) included.
package testwait

import (
	"testing"
	"time"
)

// Poll is how often Eventually checks its condition.
const Poll = 10 * time.Millisecond

// Cond is a condition Eventually polls: a bare one, or one that also says
// what it saw, which the failure message quotes from its last call.
type Cond interface {
	func() bool | func() (bool, string)
}

// Eventually polls cond every Poll until it holds, and fails the test with
// what if it still does not after within. It must be called from the test's
// own goroutine, as t.Fatal must.
func Eventually[C Cond](t testing.TB, within time.Duration, what string, cond C) {
	t.Helper()
	check := func() (bool, string) { return false, "" }
	switch c := any(cond).(type) {
	case func() bool:
		check = func() (bool, string) { return c(), "" }
	case func() (bool, string):
		check = c
	}
	deadline := time.Now().Add(within)
	for {
		ok, seen := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if seen != "" {
				t.Fatalf("not within %s: %s; last seen: %s", within, what, seen)
			}
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(Poll)
	}
}
