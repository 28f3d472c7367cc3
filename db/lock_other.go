//go:build !unix

package db

import "os"

// tryLock does nothing where flock does not exist: there the owner row
// alone tells a second Sentinel about the first, which is advice, not
// exclusion.
func tryLock(*os.File) error { return nil }

// unlock does nothing, like tryLock.
func unlock(*os.File) error { return nil }
