package plugin

import (
	"slices"
	"testing"

	"github.com/casparian/sentinel/job"
)

// The Sentinel registers built-ins by the names job.BuiltinPlugins lists
// (casparian plugins add-builtin); they must be this worker's.
func TestBuiltins_AreTheOnesTheSentinelRegisters(t *testing.T) {
	if got := Names(Builtins()); !slices.Equal(got, job.BuiltinPlugins) {
		t.Errorf("the worker's built-ins are %v, job.BuiltinPlugins says %v", got, job.BuiltinPlugins)
	}
}
