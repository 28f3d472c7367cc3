package actors

// Go maps keep the memory of their largest size after their entries are
// deleted. The maps keyed by worker grow with every worker that connects at
// once, so after a storm of connections they would hold its peak for the
// process's life. highWater notices when such a map has shrunk to a quarter
// of its peak, and the owner then copies it into one of its current size.

// compactFrom is the peak below which a map is never copied: small maps
// cost little, and copying them would only churn.
const compactFrom = 1024

// highWater is the peak size of one or more maps that grow and shrink
// together.
type highWater struct{ peak int }

// grew records a size after an insert.
func (h *highWater) grew(n int) { h.peak = max(h.peak, n) }

// shrunk reports whether a map now of size n should be copied; if so the
// peak starts again from n.
func (h *highWater) shrunk(n int) bool {
	if h.peak < compactFrom || n > h.peak/4 {
		return false
	}
	h.peak = n
	return true
}

// resized returns a copy of m allocated for its current size.
func resized[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
