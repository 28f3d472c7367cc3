package db

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/casparian/sentinel/internal/confine"
	"github.com/casparian/sentinel/job"
)

// sinkGuard knows the files no sink may name: the database and the -wal,
// -shm and -journal files SQLite keeps beside it. A sink that named one of
// them would let a job overwrite the catalogue (cf_plugin_config included).
type sinkGuard struct {
	files []string // absolute paths, as given and as resolved
	names []string // their base names, in lower case: the cheap first test
	wd    string   // the working directory, where relative sinks are judged
}

// newSinkGuard describes the database at path. It is called once the file
// exists, so its symbolic links resolve.
func newSinkGuard(path string) sinkGuard {
	var g sinkGuard
	g.wd, _ = os.Getwd()
	abs, err := filepath.Abs(path)
	if err != nil {
		return g
	}
	spellings := []string{abs}
	if r, err := confine.Resolve(abs); err == nil && r != abs {
		spellings = append(spellings, r)
	}
	for _, p := range spellings {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			g.files = append(g.files, p+suffix)
			g.names = append(g.names, strings.ToLower(filepath.Base(p+suffix)))
		}
	}
	return g
}

// sinkNamesDatabase returns a reason when a sink URI names the database or
// one of its companion files, and "" otherwise. URIs are read as the worker
// reads them (confine.SinkFile).
//
// An absolute path is resolved (".." and symbolic links, such as
// /proc/self/cwd) and compared with the database's files, by path and by
// identity on disk. A relative path resolves against the worker's
// --output-dir, which the Sentinel cannot see; it is judged from the
// Sentinel's working directory, where a worker started beside it writes by
// default, and only when its file name is one of the database's (so the
// default sinks cost no file system call). The worker refuses anything that
// leaves its --output-dir.
func (g sinkGuard) sinkNamesDatabase(uri string) string {
	if len(g.files) == 0 {
		return ""
	}
	_, p, _, err := confine.SinkFile(uri)
	if err != nil {
		return "" // not a sink any worker writes; it fails there
	}
	if !filepath.IsAbs(p) {
		name := strings.ToLower(filepath.Base(p))
		found := false
		for _, n := range g.names {
			found = found || n == name
		}
		if !found || g.wd == "" {
			return ""
		}
		p = g.wd + string(filepath.Separator) + p
	}
	for _, f := range g.files {
		if confine.Same(p, f) {
			return fmt.Sprintf("sink %s names the Sentinel's database (%s); refused", uri, f)
		}
	}
	return ""
}

// checkSinks returns job.ErrInvalid, with the reason, for the first sink that
// names the database.
func (db *DB) checkSinks(sinks []Sink) error {
	for _, s := range sinks {
		if reason := db.guard.sinkNamesDatabase(s.URI); reason != "" {
			return fmt.Errorf("topic %q: %s: %w", s.Topic, reason, job.ErrInvalid)
		}
	}
	return nil
}
