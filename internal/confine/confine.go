// Package confine decides whether a path lies inside the folders it is
// confined to: source roots under the Sentinel's --allowed-roots, a job's
// input under the worker's --input-root, its sinks under --output-dir. It also
// says which file a sink URI names, so that the Sentinel (which refuses sinks
// naming its own database) and the worker (which writes them) can never read
// one URI as two different files.
//
// Paths are compared as the operating system will use them: made absolute,
// with every symbolic link and ".." resolved (filepath.EvalSymlinks); a path
// whose tail does not exist yet is resolved through its longest existing
// prefix. Comparison is by whole path elements, so /data2 is not under /data.
package confine

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Resolve returns path as the operating system would reach it: absolute
// (relative to the working directory), every symbolic link and ".."
// resolved. Only the longest existing prefix can be resolved; the rest,
// which does not exist yet, is appended cleaned, which is where creating it
// would put it.
//
// The path is deliberately not cleaned first: filepath.Clean removes
// "link/.." lexically, while the system follows link before going up, so
// /data/link/../x is /etc/x when link points to /etc/sub.
func Resolve(path string) (string, error) {
	if path == "" {
		return "", errors.New("resolve: empty path")
	}
	if !filepath.IsAbs(path) {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", path, err)
		}
		path = wd + string(filepath.Separator) + path
	}
	var tail []string // missing elements, last first
	p := path
	for links := 0; ; {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			if len(tail) == 0 {
				return r, nil
			}
			parts := []string{r}
			climbs := false
			for i := len(tail) - 1; i >= 0; i-- {
				parts = append(parts, tail[i])
				climbs = climbs || tail[i] == ".."
			}
			out := filepath.Join(parts...)
			if climbs {
				// "missing/../x": once missing is created as a folder the
				// ".." cancels it, and x may be an existing link: resolve
				// again, now without "..".
				return Resolve(out)
			}
			return out, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("resolve %s: %w", path, err)
		}
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			// A link to something that does not exist (yet): creating a
			// file through it creates its target, so follow it by hand.
			if links++; links > maxLinks {
				return "", fmt.Errorf("resolve %s: too many levels of symbolic links", path)
			}
			target, err := os.Readlink(p)
			if err != nil {
				return "", fmt.Errorf("resolve %s: %w", path, err)
			}
			if !filepath.IsAbs(target) {
				dir, _ := split(p)
				target = dir + string(filepath.Separator) + target
			}
			for i := len(tail) - 1; i >= 0; i-- {
				target += string(filepath.Separator) + tail[i]
			}
			p, tail = target, nil
			continue
		}
		dir, base := split(p)
		if dir == p { // the root itself does not exist
			return "", fmt.Errorf("resolve %s: %w", path, err)
		}
		if base != "" && base != "." {
			tail = append(tail, base)
		}
		p = dir
	}
}

// maxLinks bounds the dangling links Resolve follows by hand, as the
// system bounds link chains (ELOOP).
const maxLinks = 255

// split cuts the last element off an absolute path without cleaning the
// rest: "/a/b/../c/" → "/a/b/..", "c".
func split(p string) (dir, base string) {
	trimmed := strings.TrimRight(p, string(filepath.Separator))
	vol := filepath.VolumeName(trimmed)
	if len(trimmed) <= len(vol) {
		return p, "" // only the root is left
	}
	i := strings.LastIndexByte(trimmed, filepath.Separator)
	if i < len(vol) {
		return p, ""
	}
	dir = trimmed[:i]
	if len(dir) <= len(vol) {
		dir = vol + string(filepath.Separator)
	}
	return dir, trimmed[i+1:]
}

// Under reports whether path is root or lies inside it. Both must be
// resolved (Resolve); the test is by whole elements, so /data2 is not under
// /data.
func Under(path, root string) bool {
	if path == root {
		return true
	}
	if !strings.HasSuffix(root, string(filepath.Separator)) {
		root += string(filepath.Separator)
	}
	return strings.HasPrefix(path, root)
}

// OutsideError is a path that resolved outside every folder it is confined
// to.
type OutsideError struct {
	Path     string   // as given
	Resolved string   // where it leads
	Label    string   // what the roots are called: "--allowed-roots", "--input-root", "--output-dir"
	Roots    []string // as given
}

func (e *OutsideError) Error() string {
	where := e.Path
	if e.Resolved != e.Path {
		where += " (resolves to " + e.Resolved + ")"
	}
	return fmt.Sprintf("%s is outside %s (%s)", where, e.Label, strings.Join(e.Roots, ", "))
}

// Check resolves path and returns where it leads if that is at or under
// one of roots (each resolved as well). A path outside all of them is an
// *OutsideError whose message names the path, label and roots; a path or
// root that cannot be resolved (no permission, a loop of links) is refused
// with that error.
func Check(path string, roots []string, label string) (string, error) {
	resolved, err := Resolve(path)
	if err != nil {
		return "", err
	}
	for _, root := range roots {
		r, err := Resolve(root)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", label, root, err)
		}
		if Under(resolved, r) {
			return resolved, nil
		}
	}
	return "", &OutsideError{Path: path, Resolved: resolved, Label: label, Roots: roots}
}

// Same reports whether two paths name the same file: the same resolved
// path, or, when both exist, the same file on disk (a hard link, another
// spelling on a case-insensitive file system).
func Same(a, b string) bool {
	ra, errA := Resolve(a)
	rb, errB := Resolve(b)
	if errA == nil && errB == nil && ra == rb {
		return true
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// SinkFile returns the file path a sink URI names, as written (relative
// paths are relative to the worker's --output-dir), percent-escapes
// decoded, and for sqlite:// the table after the last '/':
//
//	sqlite://<path to database file>/<table>
//	parquet://<path>
//	file://<path>
//
// The scheme is returned in lower case. It checks nothing else about the
// URI: the worker's sink package does.
func SinkFile(uri string) (scheme, path, table string, err error) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return "", "", "", fmt.Errorf("sink uri %q: want scheme://path", uri)
	}
	scheme = strings.ToLower(scheme)
	if p, err := url.PathUnescape(rest); err == nil {
		rest = p
	}
	if scheme == "sqlite" {
		i := strings.LastIndexByte(rest, '/')
		if i <= 0 {
			return "", "", "", fmt.Errorf("sink uri %q: want sqlite://<path to .db file>/<table>", uri)
		}
		rest, table = rest[:i], rest[i+1:]
	}
	if rest == "" {
		return "", "", "", fmt.Errorf("sink uri %q: empty path", uri)
	}
	return scheme, rest, table, nil
}
