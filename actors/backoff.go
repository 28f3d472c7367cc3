package actors

import (
	"math/rand/v2"
	"time"
)

// Backoff is the delay before retry number retries+1: base doubled per retry,
// capped at max, then jittered into [d/2, d] so that jobs failed together do
// not come back together.
func Backoff(base, max time.Duration, retries int64) time.Duration {
	d := base
	for i := int64(0); i < retries && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return Jitter(d)
}

// Jitter is a random delay in [d/2, d]: a fixed retry delay that several
// actors failing at the same moment do not all take at the same moment.
func Jitter(d time.Duration) time.Duration {
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}
