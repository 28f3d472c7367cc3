package wasm

import (
	"fmt"

	"github.com/tetratelabs/wazero/experimental"
)

// limitedMemory backs one instance's linear memory and refuses to grow it
// past limit, remembering the largest size refused. A refused memory.grow
// returns -1 to the guest, which then fails in its own way (a Go module
// prints "out of memory" and exits 2); refused tells the worker that the
// limit was the cause.
//
// wazero calls it from the instance's goroutine only, and reads refused
// after the run: no locking.
type limitedMemory struct {
	limit   uint64
	buf     []byte
	refused uint64
}

// Allocate implements experimental.MemoryAllocator: one instance, one
// memory.
func (m *limitedMemory) Allocate(_, _ uint64) experimental.LinearMemory { return m }

// Reallocate implements experimental.LinearMemory. The first call is the
// memory's declared minimum: wazero cannot handle a refusal there, so a
// minimum over the limit panics with startMemoryError, which the run
// recovers into the job's error.
func (m *limitedMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		if m.buf == nil {
			panic(startMemoryError{need: size, limit: m.limit})
		}
		m.refused = max(m.refused, size)
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	// Grow geometrically, as append would, within the limit: guests grow
	// memory in small steps and each step would otherwise copy it all.
	newCap := max(size, min(2*uint64(cap(m.buf)), m.limit))
	buf := make([]byte, size, newCap)
	copy(buf, m.buf)
	m.buf = buf
	return buf
}

// Free implements experimental.LinearMemory.
func (m *limitedMemory) Free() { m.buf = nil }

// startMemoryError is a module whose memory's declared minimum is over the
// limit.
type startMemoryError struct{ need, limit uint64 }

func (e startMemoryError) Error() string {
	return fmt.Sprintf("the module needs %s of memory at start, over the %s limit", mib(e.need), mib(e.limit))
}
