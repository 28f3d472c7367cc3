package main

import (
	"os"
	"testing"

	"github.com/casparian/sentinel/internal/sentineltest"
)

// TestMain fails the package if a Sentinel, HTTP server or worker started by
// a test outlives it.
func TestMain(m *testing.M) { os.Exit(sentineltest.RunCheckingLeaks(m)) }
