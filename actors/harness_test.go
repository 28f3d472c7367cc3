package actors_test

import (
	"testing"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/sentineltest"
)

// harness is the one test Sentinel (internal/sentineltest); the scanner's
// tests add a few methods of their own.
type harness struct{ *sentineltest.Env }

func newHarness(t testing.TB, tweak func(*config.Config)) *harness {
	t.Helper()
	return &harness{sentineltest.Start(t, tweak)}
}
