//go:build unix

package db

import (
	"errors"
	"os"
	"syscall"
)

// tryLock takes an exclusive flock on f without waiting. It reports
// errLocked when another open file description holds it. flock, not fcntl:
// SQLite uses fcntl locks on the database file, and a process's fcntl locks
// on a file all vanish when any of its descriptors of that file closes,
// while a flock belongs to its own descriptor and the kernel drops it when
// the process dies.
func tryLock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return errLocked
		default:
			return err
		}
	}
}

// unlock releases the flock taken by tryLock.
func unlock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
