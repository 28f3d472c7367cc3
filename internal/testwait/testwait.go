// Package testwait is the tests' one way to wait for something to happen:
// poll a condition until it holds or a deadline passes, never sleep a fixed
// time and hope. It imports nothing of ours, so every package's tests can
// use it, internal ones (package transport, package actors) included.
package testwait

import (
	"testing"
	"time"
)

// Poll is the longest pause between two checks of Eventually's condition.
// The first checks come sooner: the pause starts at firstPoll and doubles
// up to Poll. Most conditions hold within milliseconds and are seen at
// once, while a wait of seconds checks some 40 times a second rather than
// a hundred: under the race detector a check that reads the database
// costs a millisecond or more of CPU, and the tests' polling was a tenth
// of the CPU of a package like actors.
const Poll = 25 * time.Millisecond

// firstPoll is the first pause.
const firstPoll = time.Millisecond

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
	pause := firstPoll
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
		time.Sleep(pause)
		pause = min(2*pause, Poll)
	}
}
