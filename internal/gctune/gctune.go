// Package gctune lets the garbage collector run less often while the live
// heap is small. Go's default (GOGC=100) collects whenever the heap has
// doubled: a Sentinel whose live heap is a few MB then collects many times a
// second under load, and the collector's share of its CPU is what GOGC=300
// bought back in issue #19's measurements (9–12 % more throughput). A fixed
// GOGC=300 would also triple the heap of a Sentinel with a large live heap
// (thousands of workers). So GOGC follows the live heap instead: the heap may
// grow to a target size before the next collection, and GOGC never goes
// below Go's default, so a large heap is collected exactly as without this
// package.
package gctune

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Bounds of the GOGC Percent chooses: Go's default at least, and at most
// MaxPercent, so an almost empty heap does not wait for the whole target.
const (
	MinPercent = 100
	MaxPercent = 400
)

// Percent is the GOGC that lets a live heap of live bytes grow to target
// bytes before the next collection, within [MinPercent, MaxPercent].
func Percent(live, target uint64) int {
	if live == 0 {
		return MaxPercent
	}
	p := float64(target)/float64(live)*100 - 100
	return int(min(max(p, MinPercent), MaxPercent))
}

// liveHeap is the heap the last collection found live, in bytes.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// Run sets GOGC to Percent(live heap, target) every interval until ctx
// ends, then puts back the GOGC it found. changed, when not nil, is told of
// each new setting. Run is for a process's main: GOGC is process-wide.
func Run(ctx context.Context, target uint64, interval time.Duration, changed func(percent int, live uint64)) {
	current := Percent(liveHeap(), target)
	previous := debug.SetGCPercent(current)
	defer debug.SetGCPercent(previous)
	if changed != nil {
		changed(current, liveHeap())
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		live := liveHeap()
		p := Percent(live, target)
		// Small moves are not worth a call: SetGCPercent stops the world
		// briefly to publish the new goal.
		if p == current || (p > current && p-current < current/10) || (p < current && current-p < current/10) {
			continue
		}
		debug.SetGCPercent(p)
		current = p
		if changed != nil {
			changed(p, live)
		}
	}
}
