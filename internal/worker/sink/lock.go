package sink

import (
	"fmt"
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
// way for every file format: error mode refuses a non-empty target, append
// merges into it, and otherwise the staged file replaces it by rename.
func commitFile(spec Spec, stage, uri string, hasRows func() (bool, error), merge func() error) error {
	unlock, err := lockTarget(spec.Target.Path, true)
	if err != nil {
		return err
	}
	defer unlock()
	if err := spec.Target.confined(); err != nil {
		return err
	}
	full, err := hasRows()
	if err != nil {
		return err
	}
	switch {
	case full && spec.Mode == ModeError:
		return ErrTargetNotEmpty
	case full && spec.Mode == ModeAppend:
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
