//go:build unix

package sink

import (
	"fmt"
	"os"
	"syscall"
)

// lockDir takes an exclusive flock on dir. flock locks belong to the open
// file, so two goroutines of one process exclude each other too, and the
// kernel drops the lock if the process dies mid-commit.
func lockDir(dir string) (unlock func(), err error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	for {
		err = syscall.Flock(int(d.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() {
		_ = syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
		_ = d.Close()
	}, nil
}
