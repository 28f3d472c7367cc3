package transport_test

import (
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/transport"
)

// TestRouter_TrackedIdentityKeepsItsLastWordAfterHangingUp: on a guarded
// endpoint the liveness record lives with the connection; for an identity
// given to Track it outlives the connection, so the worker actor still judges
// the silence of a worker that hung up from when it last spoke, until Forget.
func TestRouter_TrackedIdentityKeepsItsLastWordAfterHangingUp(t *testing.T) {
	r, got := startEchoRouter(t, transport.RouterOptions{})
	tracked, untracked := dialDealer(t, r.Endpoint(), "tracked"), dialDealer(t, r.Endpoint(), "untracked")
	r.Track([]byte("tracked"))
	roundTrip(t, tracked, 1, nil)
	roundTrip(t, untracked, 2, nil)
	waitFrom(t, got, "untracked")
	spoke := r.LastSeen([]byte("tracked"))
	if spoke.IsZero() || r.LastSeen([]byte("untracked")).IsZero() {
		t.Fatalf("no record while connected: tracked %v, untracked %v", spoke, r.LastSeen([]byte("untracked")))
	}

	_ = tracked.Close()
	_ = untracked.Close()
	testwait.Eventually(t, 5*time.Second, "both connections closed", func() bool { return r.Connections() == 0 })
	if got := r.LastSeen([]byte("tracked")); !got.Equal(spoke) {
		t.Errorf("tracked identity after hanging up: LastSeen %v, want %v (its last word)", got, spoke)
	}
	if got := r.LastSeen([]byte("untracked")); !got.IsZero() {
		t.Errorf("untracked identity after hanging up: LastSeen %v, want zero", got)
	}

	r.Forget([]byte("tracked"))
	if got := r.LastSeen([]byte("tracked")); !got.IsZero() {
		t.Errorf("after Forget: LastSeen %v, want zero", got)
	}
}

// TestRouter_TrackBeforeAnyWordIsNoRecord: tracking an identity that has not
// spoken yet records no time, on either kind of endpoint.
func TestRouter_TrackBeforeAnyWordIsNoRecord(t *testing.T) {
	for _, opts := range []transport.RouterOptions{{}, {Unguarded: true}} {
		r, got := startEchoRouter(t, opts)
		r.Track([]byte("quiet"))
		if seen := r.LastSeen([]byte("quiet")); !seen.IsZero() {
			t.Errorf("unguarded=%v: LastSeen %v before any message, want zero", opts.Unguarded, seen)
		}
		d := dialDealer(t, r.Endpoint(), "quiet")
		roundTrip(t, d, 1, nil)
		waitFrom(t, got, "quiet")
		if r.LastSeen([]byte("quiet")).IsZero() {
			t.Errorf("unguarded=%v: no record after a message", opts.Unguarded)
		}
		r.Forget([]byte("quiet"))
		_ = d.Close()
	}
}
