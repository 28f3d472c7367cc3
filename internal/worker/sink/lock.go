package sink

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// targetLocks serializes commits to one target within this process. Files are
// also locked across processes (lockDir); SQLite does its own locking between
// processes, but waiting here is cheaper than its busy loop.
var targetLocks = struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}{locks: map[string]*keyedLock{}}

type keyedLock struct {
	mu   sync.Mutex
	refs int
}

// lockTarget locks path for a commit and returns the function that unlocks
// it. With crossProcess it also takes an exclusive flock on path's directory
// (on Unix), so that worker processes sharing an output folder serialize
// their read-merge-rename of the same file.
func lockTarget(path string, crossProcess bool) (unlock func(), err error) {
	targetLocks.mu.Lock()
	l := targetLocks.locks[path]
	if l == nil {
		l = &keyedLock{}
		targetLocks.locks[path] = l
	}
	l.refs++
	targetLocks.mu.Unlock()
	l.mu.Lock()

	release := func() {
		l.mu.Unlock()
		targetLocks.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(targetLocks.locks, path)
		}
		targetLocks.mu.Unlock()
	}
	if !crossProcess {
		return release, nil
	}
	dirUnlock, err := lockDir(filepath.Dir(path))
	if err != nil {
		release()
		return nil, err
	}
	return func() { dirUnlock(); release() }, nil
}

// syncDir makes a rename in dir durable. Best effort: some file systems do
// not support fsync on a directory, and the rename itself already happened.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}

// commitFile promotes a staged file sink under the target's lock, the same
// way for every file format. otherRows reports whether the target holds rows
// of other jobs (or rows it cannot attribute); rows of this same job, left by
// an earlier attempt, do not count. Error mode refuses a target with other
// rows; append merges into it, dropping this job's earlier rows; otherwise
// (replace, or a target that is empty or holds only this job's rows) the
// staged file replaces it by rename.
//
// The lock is what keeps two jobs appending to one file from losing each
// other's rows: each merge reads the target and renames over it, so it must
// see the previous merge's result.
func commitFile(spec Spec, stage, uri string, otherRows func() (bool, error), merge func() error) error {
	unlock, err := lockTarget(spec.Target.Path, true)
	if err != nil {
		return err
	}
	defer unlock()
	if err := spec.Target.confined(); err != nil {
		return err
	}
	others, err := otherRows()
	if err != nil {
		return err
	}
	switch {
	case others && spec.Mode == ModeError:
		return ErrTargetNotEmpty
	case others && spec.Mode == ModeAppend:
		err = merge()
	default:
		err = os.Rename(stage, spec.Target.Path)
	}
	if err != nil {
		return fmt.Errorf("commit %s: %w", uri, err)
	}
	syncDir(filepath.Dir(spec.Target.Path))
	return nil
}

// span is a byte range [start, end) of a file.
type span struct{ start, end int64 }

// dropSpan adds [start, end) to drop, joining it to the last span when they
// touch: a job's rows are usually one run.
func dropSpan(drop []span, start, end int64) []span {
	if n := len(drop); n > 0 && drop[n-1].end == start {
		drop[n-1].end = end
		return drop
	}
	return append(drop, span{start, end})
}

// copyExcept copies f (size bytes) to out without the drop spans (sorted,
// not overlapping), and ends what it wrote with a newline if it wrote
// anything: a target written by another tool may lack its final one.
func copyExcept(out io.Writer, f *os.File, size int64, drop []span) error {
	var (
		at   int64
		last = byte('\n')
	)
	keep := func(end int64) error {
		if end <= at {
			return nil
		}
		if _, err := io.Copy(out, io.NewSectionReader(f, at, end-at)); err != nil {
			return err
		}
		var b [1]byte
		if _, err := f.ReadAt(b[:], end-1); err != nil {
			return err
		}
		last = b[0]
		return nil
	}
	for _, d := range drop {
		if err := keep(d.start); err != nil {
			return err
		}
		at = d.end
	}
	if err := keep(size); err != nil {
		return err
	}
	if last != '\n' {
		_, err := out.Write([]byte{'\n'})
		return err
	}
	return nil
}
