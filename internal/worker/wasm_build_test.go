package worker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
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

func buildWasm(pkg, out string) ([]byte, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("find the go command: %w", err)
	}
	cmd := exec.Command(gobin, "build", "-o", out, pkg)
	// GOFLAGS is cleared: a -race in it would not build for wasip1.
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, &buildError{pkg: pkg, err: err, output: string(b)}
	}
	return os.ReadFile(out)
}

type buildError struct {
	pkg, output string
	err         error
}

func (e *buildError) Error() string {
	return "go build " + e.pkg + ": " + e.err.Error() + "\n" + e.output
}
