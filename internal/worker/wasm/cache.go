package wasm

import (
	"container/list"
	"context"
	"sync"

	"github.com/tetratelabs/wazero"
)

// moduleCache keeps up to max compiled modules, least recently used out
// first. It is keyed by the module's content hash, not by artifact_hash:
// wazero's engine shares one compilation among identical modules, so two
// artifacts with the same code (same module, other lockfile) must share
// one entry, or closing one would break the other.
//
// An evicted module is closed once the last run using it has released it.
// Concurrent misses for one key compile once; the others wait.
type moduleCache struct {
	max     int
	mu      sync.Mutex
	entries map[string]*cacheEntry
	lru     *list.List // of *cacheEntry, most recent first
}

type cacheEntry struct {
	key     string
	ready   chan struct{} // closed when cm or err is set
	cm      wazero.CompiledModule
	err     error
	users   int
	evicted bool
	elem    *list.Element
}

func newModuleCache(max int) *moduleCache {
	return &moduleCache{max: max, entries: map[string]*cacheEntry{}, lru: list.New()}
}

// acquire returns the compiled module for key, compiling it with compile on
// a miss, and a release function to call when the run is over. hit is true
// when the module was already there (or being compiled by another run).
// A failed compilation is not cached.
func (c *moduleCache) acquire(ctx context.Context, key string,
	compile func(context.Context) (wazero.CompiledModule, error)) (cm wazero.CompiledModule, release func(), hit bool, err error) {
	c.mu.Lock()
	e := c.entries[key]
	if e != nil {
		e.users++
		c.lru.MoveToFront(e.elem)
		c.mu.Unlock()
		release = func() { c.release(e) }
		select {
		case <-e.ready: // preferred when both are ready
		default:
			select {
			case <-e.ready:
			case <-ctx.Done():
				release()
				return nil, nil, false, context.Cause(ctx)
			}
		}
		if e.err != nil {
			release()
			return nil, nil, false, e.err
		}
		return e.cm, release, true, nil
	}
	e = &cacheEntry{key: key, ready: make(chan struct{}), users: 1}
	e.elem = c.lru.PushFront(e)
	c.entries[key] = e
	var closing []wazero.CompiledModule
	for c.lru.Len() > max(c.max, 1) {
		old := c.lru.Remove(c.lru.Back()).(*cacheEntry)
		delete(c.entries, old.key)
		old.evicted = true
		if old.users == 0 && old.cm != nil {
			closing = append(closing, old.cm)
		}
	}
	c.mu.Unlock()
	closeAll(closing)

	e.cm, e.err = compile(ctx)
	close(e.ready)
	release = func() { c.release(e) }
	if e.err != nil {
		c.mu.Lock()
		if c.entries[key] == e {
			delete(c.entries, key)
			c.lru.Remove(e.elem)
		}
		c.mu.Unlock()
		release()
		return nil, nil, false, e.err
	}
	return e.cm, release, false, nil
}

func (c *moduleCache) release(e *cacheEntry) {
	c.mu.Lock()
	e.users--
	done := e.evicted && e.users == 0 && e.cm != nil
	c.mu.Unlock()
	if done {
		closeAll([]wazero.CompiledModule{e.cm})
	}
}

// len returns how many modules are cached.
func (c *moduleCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func closeAll(cms []wazero.CompiledModule) {
	for _, cm := range cms {
		_ = cm.Close(context.Background())
	}
}
