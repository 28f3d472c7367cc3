package actors_test

import (
	"context"
	"testing"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/transport"
)

// harness is the one test Sentinel (internal/sentineltest); the scanner's
// tests add a few methods of their own.
type harness struct{ *sentineltest.Env }

func newHarness(t testing.TB, tweak func(*config.Config)) *harness {
	t.Helper()
	return &harness{sentineltest.Start(t, tweak)}
}

// rawPeer connects a bare DEALER as identity, for tests that play a worker
// frame by frame; with hello it identifies first. It is closed with the test.
func (h *harness) rawPeer(t testing.TB, identity string, hello *transport.Identify) *transport.Dealer {
	t.Helper()
	d, err := transport.DialDealer(context.Background(), h.Endpoint, transport.DealerOptions{Identity: []byte(identity)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if hello != nil {
		if err := d.Send(transport.OpIdentify, 0, hello); err != nil {
			t.Fatal(err)
		}
	}
	return d
}
