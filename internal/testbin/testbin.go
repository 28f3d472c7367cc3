// Package testbin builds the module's commands for the tests that run them
// as processes (the benchmark's Sentinel, the process tests' binaries, the
// sample worker, the WebAssembly plugins). It imports nothing of ours.
//
// It builds with `go run -exec cp`, not `go build -o`: go run keeps the
// linked executable in the build cache (Go 1.24 and later), keyed by every
// input of the build, and hands its path to the -exec program, here cp,
// which copies it to where the test wants it. A link is seconds of CPU (the
// Sentinel's, with modernc's SQLite, about 3 s), and `go build -o` links
// afresh every time: the same Sentinel was linked by three test binaries in
// every `go test ./...`, and again on every run with nothing changed. Now
// a binary whose sources are unchanged is linked once, whichever test binary
// asks first. What runs is still exactly what the source builds.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build builds the main package pkg (an import path, or a directory
// relative to the test's package) into dir under the name name, and returns
// the binary's path.
//
// It builds as docker/build.sh does, CGO_ENABLED=0 with -ldflags "-s -w":
// the binaries under test are the ones shipped, the link skips the symbol
// table and DWARF (a good part of its CPU; stack traces and pprof use the
// runtime's own tables, which stay), and every test that builds a command
// asks for the same build, so they share one cached executable. env is
// added to the go command's environment ("GOOS=wasip1 GOARCH=wasm").
// GOFLAGS is cleared, so that a -race in it reaches only the test binaries,
// never the processes they run (the race detector would slow those several
// times over), and a cross build does not inherit a flag its target
// refuses.
func Build(dir, name, pkg string, env ...string) (string, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build %s: find the go command: %w", pkg, err)
	}
	cp, err := exec.LookPath("cp")
	if err != nil {
		return "", fmt.Errorf("build %s: find cp: %w", pkg, err)
	}
	bin := filepath.Join(dir, name)
	// go run runs `cp <cached executable> bin`, whatever GOOS the build
	// is for, and exits with cp's status.
	cmd := exec.Command(gobin, "run", "-ldflags", "-s -w", "-exec", cp, pkg, bin)
	cmd.Env = append(append(os.Environ(), "GOFLAGS=", "CGO_ENABLED=0"), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	// go run reports a program's failure, cp's included, but a missing
	// file is the clearer message.
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("go build %s: %w", pkg, err)
	}
	return bin, nil
}
