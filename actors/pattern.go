package actors

import (
	"path"
	"strings"
)

// globPattern is a gitignore-style pattern as cf_routing_rule and
// cf_ignore_rule hold them, matched against slash-separated paths relative
// to a source root:
//
//   - a pattern without a slash (except a trailing one) matches a file or
//     folder name at any depth: "*.csv", "tmp";
//   - a pattern with a slash is anchored at the root ("/" in front is
//     optional): "exports/*.json", "/raw";
//   - "**" as a whole segment matches any number of folders:
//     "data/**/*.csv", "**/cache";
//   - a trailing slash matches folders only: "build/";
//   - *, ? and [...] work within one segment, as path.Match.
//
// A file inside a matched folder matches too. Negation ("!pattern") is not
// supported: such a pattern matches nothing.
type globPattern struct {
	segs     []string
	anchored bool
	dirOnly  bool
}

// compileGlob parses a pattern; ok is false for an empty, negated or
// malformed one.
func compileGlob(p string) (globPattern, bool) {
	p = strings.TrimSpace(p)
	if p == "" || strings.HasPrefix(p, "!") || strings.HasPrefix(p, "#") {
		return globPattern{}, false
	}
	var g globPattern
	if strings.HasSuffix(p, "/") {
		g.dirOnly = true
		p = strings.TrimRight(p, "/")
	}
	if strings.Contains(p, "/") {
		g.anchored = true
		p = strings.TrimLeft(p, "/")
	}
	if p == "" {
		return globPattern{}, false
	}
	g.segs = strings.Split(p, "/")
	for _, s := range g.segs {
		if _, err := path.Match(s, ""); err != nil {
			return globPattern{}, false
		}
	}
	return g, true
}

// matchEntry reports whether the entry at rel (a file, or a folder when
// isDir) matches by itself, not through a parent folder.
func (g globPattern) matchEntry(rel string, isDir bool) bool {
	if g.dirOnly && !isDir {
		return false
	}
	if !g.anchored {
		ok, _ := path.Match(g.segs[0], path.Base(rel))
		return ok
	}
	return matchSegments(g.segs, strings.Split(rel, "/"))
}

// matchFile reports whether the file at rel, or any folder above it, matches.
func (g globPattern) matchFile(rel string) bool {
	if g.matchEntry(rel, false) {
		return true
	}
	for dir := path.Dir(rel); dir != "." && dir != "/"; dir = path.Dir(dir) {
		if g.matchEntry(dir, true) {
			return true
		}
	}
	return false
}

// matchSegments matches pattern segments against path segments, "**"
// standing for zero or more of them.
func matchSegments(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			if len(rest) == 0 {
				return true
			}
			for i := 0; i <= len(segs); i++ {
				if matchSegments(rest, segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], segs[0]); !ok {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}
