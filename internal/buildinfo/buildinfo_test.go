package buildinfo

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestInfo_VersionPrefersTheInjectedString(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	cases := []struct {
		name string
		info Info
		want string
	}{
		{"Injected", Info{Injected: "v1.2.3-4-gabc", Module: "v1.2.0", Revision: rev}, "v1.2.3-4-gabc"},
		{"ModuleVersion", Info{Module: "v1.2.0", Revision: rev}, "v1.2.0"},
		{"DevelUsesTheRevision", Info{Module: "(devel)", Revision: rev}, "0123456789ab"},
		{"DirtyRevision", Info{Module: "(devel)", Revision: rev, Modified: true}, "0123456789ab-dirty"},
		{"ShortRevision", Info{Revision: "abc"}, "abc"},
		{"Nothing", Info{Module: "(devel)"}, "devel"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.info.Version(); got != c.want {
				t.Errorf("Version() = %q, want %q", got, c.want)
			}
		})
	}
}

func TestFromBuildInfo_ReadsTheVCSSettings(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.99.1",
		Main:      debug.Module{Path: "github.com/casparian/sentinel", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "GOOS", Value: "plan9"},
			{Key: "GOARCH", Value: "arm"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "feedfacefeedfacefeedfacefeedfacefeedface"},
			{Key: "vcs.time", Value: "2026-12-07T01:18:38Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	info := fromBuildInfo("casparian-worker", " v2.0.0 ", bi)
	want := Info{
		Name: "casparian-worker", Injected: "v2.0.0", Path: "github.com/casparian/sentinel", Module: "(devel)",
		Revision: "feedfacefeedfacefeedfacefeedfacefeedface", Time: "2026-12-07T01:18:38Z", Modified: true,
		GoVersion: "go1.99.1", Platform: "plan9/arm",
	}
	if info != want {
		t.Fatalf("fromBuildInfo =\n%+v\nwant\n%+v", info, want)
	}
	got := info.String()
	wantText := "casparian-worker v2.0.0\n" +
		"  module    github.com/casparian/sentinel (devel)\n" +
		"  revision  feedfacefeedfacefeedfacefeedfacefeedface 2026-12-07T01:18:38Z (modified)\n" +
		"  go        go1.99.1 plan9/arm\n"
	if got != wantText {
		t.Errorf("String() =\n%s\nwant\n%s", got, wantText)
	}
}

func TestFromBuildInfo_WithoutBuildInfo(t *testing.T) {
	info := fromBuildInfo("casparian", "", nil)
	want := "casparian devel\n  go        " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if got := info.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestBinaries_VersionFlag builds every binary under cmd/ the way
// docker/build.sh does (-ldflags "-X main.version=..."), runs each with
// --version, and checks that it exits 0 and prints the injected version and
// the build's details.
func TestBinaries_VersionFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the binaries with")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	if len(names) < 6 {
		t.Fatalf("found only %v under cmd/", names)
	}

	const injected = "v0.0.0-test.1-gdeadbee"
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The flags are docker/build.sh's: -s -w also spare the linker the
	// symbol table and DWARF, a good part of each link; --version reads
	// the build information, which neither strips.
	build := exec.CommandContext(ctx, gobin, "build", "-ldflags", "-s -w -X main.version="+injected, "-o", bin+string(filepath.Separator), "./cmd/...")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}

	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(runCtx, filepath.Join(bin, name), "--version")
			cmd.Dir = t.TempDir() // nothing may be written where it runs
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s --version: %v\n%s", name, err, out)
			}
			text := string(out)
			first, _, _ := strings.Cut(text, "\n")
			if want := name + " " + injected; first != want {
				t.Errorf("first line %q, want %q\n%s", first, want, text)
			}
			for _, want := range []string{"  module    github.com/casparian/sentinel", "  go        go1."} {
				if !strings.Contains(text, want) {
					t.Errorf("output lacks %q:\n%s", want, text)
				}
			}
			if files, _ := os.ReadDir(cmd.Dir); len(files) != 0 {
				t.Errorf("--version left files behind: %v", files)
			}
		})
	}
}
