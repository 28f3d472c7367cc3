package worker

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/casparian/sentinel/internal/testbin"
)

// TestModules are the WebAssembly modules the tests run, built from source
// once per test binary: the example plugin plugins/wordcount and the
// misbehaving test plugin testdata/misbehave.
type TestModules struct {
	Wordcount []byte
	Misbehave []byte
}

var (
	modulesOnce sync.Once
	modules     TestModules
	modulesErr  error
)

// BuildTestModules builds the test modules with the Go toolchain
// (GOOS=wasip1 GOARCH=wasm) into a temporary folder, once, and returns
// their bytes.
func BuildTestModules(tb testing.TB) TestModules {
	tb.Helper()
	modulesOnce.Do(func() {
		dir, err := os.MkdirTemp("", "casparian-wasm-")
		if err != nil {
			modulesErr = err
			return
		}
		defer func() { _ = os.RemoveAll(dir) }()
		out := [2][]byte{}
		for i, pkg := range []string{"../../plugins/wordcount", "./testdata/misbehave"} {
			path := filepath.Join(dir, filepath.Base(pkg)+".wasm")
			if out[i], modulesErr = buildWasm(pkg, path); modulesErr != nil {
				return
			}
		}
		modules = TestModules{Wordcount: out[0], Misbehave: out[1]}
	})
	if modulesErr != nil {
		tb.Fatalf("build test modules: %v", modulesErr)
	}
	return modules
}

// buildWasm builds pkg for wasip1 with internal/testbin, which keeps the
// module in the build cache (shared with tests/process, which runs
// wordcount too, and with the next run), and reads it.
func buildWasm(pkg, out string) ([]byte, error) {
	path, err := testbin.Build(filepath.Dir(out), filepath.Base(out), pkg, "GOOS=wasip1", "GOARCH=wasm")
	if err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}
