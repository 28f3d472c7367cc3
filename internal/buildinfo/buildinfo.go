// Package buildinfo says which build of a binary is running, for the
// --version flag every command under cmd/ has. It combines two sources: the
// string a release build injects with -ldflags "-X main.version=..."
// (docker/build.sh does, from git describe) and what the Go toolchain
// records in every binary (runtime/debug.ReadBuildInfo: the module version,
// the VCS revision, its time and whether the work tree was modified, and the
// Go version). A plain "go build" in a work tree still says which commit it
// came from, and a release build says both.
//
// The package is named buildinfo, not version, because each main package
// already declares the variable main.version that the linker sets.
package buildinfo

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// Info describes one build of one binary. Fields the build did not record
// are empty.
type Info struct {
	Name      string // the binary, e.g. "casparian-sentinel"
	Injected  string // main.version as set by -ldflags -X; "" when not set
	Path      string // the main module's path
	Module    string // the main module's version; "(devel)" for a work tree build
	Revision  string // vcs.revision: the commit built
	Time      string // vcs.time: the commit's time, RFC 3339
	Modified  bool   // vcs.modified: the work tree had uncommitted changes
	GoVersion string // the toolchain that built it
	Platform  string // GOOS/GOARCH
}

// Read returns the running binary's Info. name is the binary's name and
// injected its main.version variable (empty when the build did not set it).
func Read(name, injected string) Info {
	bi, _ := debug.ReadBuildInfo()
	return fromBuildInfo(name, injected, bi)
}

// Print writes the running binary's version and build information to w, as
// --version shows it.
func Print(w io.Writer, name, injected string) {
	fmt.Fprint(w, Read(name, injected).String())
}

// fromBuildInfo fills an Info from bi, which may be nil (a binary built
// without module support).
func fromBuildInfo(name, injected string, bi *debug.BuildInfo) Info {
	info := Info{Name: name, Injected: strings.TrimSpace(injected), GoVersion: runtime.Version()}
	goos, goarch := runtime.GOOS, runtime.GOARCH
	if bi == nil {
		info.Platform = goos + "/" + goarch
		return info
	}
	info.Path, info.Module = bi.Main.Path, bi.Main.Version
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	info.Platform = goos + "/" + goarch
	return info
}

// Version is the one-word version: the injected string when the build set
// one; else the module version when it is a real one (go install
// module@version); else the commit, shortened to 12 characters, with
// "-dirty" when the work tree was modified; else "devel".
func (i Info) Version() string {
	switch {
	case i.Injected != "":
		return i.Injected
	case i.Module != "" && i.Module != "(devel)":
		return i.Module
	case i.Revision != "":
		rev := i.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if i.Modified {
			rev += "-dirty"
		}
		return rev
	}
	return "devel"
}

// String is the --version text: "<name> <version>" on the first line (the
// line scripts read), then the build's details, one per line, leaving out
// what the build did not record.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", i.Name, i.Version())
	if i.Path != "" {
		mod := i.Path
		if i.Module != "" {
			mod += " " + i.Module
		}
		fmt.Fprintf(&b, "  module    %s\n", mod)
	}
	if i.Revision != "" {
		rev := i.Revision
		if i.Time != "" {
			rev += " " + i.Time
		}
		if i.Modified {
			rev += " (modified)"
		}
		fmt.Fprintf(&b, "  revision  %s\n", rev)
	}
	fmt.Fprintf(&b, "  go        %s %s\n", i.GoVersion, i.Platform)
	return b.String()
}
