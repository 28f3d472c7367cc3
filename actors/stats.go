package actors

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Stats are the Sentinel's counters, shared by all actors. They are plain
// atomics so any actor can count without a message hop; the metrics endpoint
// and the tests read them.
type Stats struct {
	MessagesReceived  atomic.Int64
	MessagesSent      atomic.Int64
	SendFailures      atomic.Int64
	ProtocolErrors    atomic.Int64
	StaleMessages     atomic.Int64
	UnknownWorkers    atomic.Int64
	WorkersRegistered atomic.Int64
	WorkersRemoved    atomic.Int64
	JobsDispatched    atomic.Int64
	JobsCompleted     atomic.Int64
	JobsFailed        atomic.Int64
	JobsRequeued      atomic.Int64
	JobsRejected      atomic.Int64
	DBErrors          atomic.Int64
	ActorRestarts     atomic.Int64

	// CurveRefusals counts connections refused during the CURVE handshake,
	// by reason (transport's Reject* reasons).
	CurveRefusals *Counters

	// MessagesDropped counts inbound messages dropped before any actor
	// saw them, by reason (transport's Drop* reasons: "rate", over a
	// connection's budget).
	MessagesDropped *Counters
	// PeersCut counts connections closed for staying over their inbound
	// budget.
	PeersCut atomic.Int64

	// JobsCancelled counts jobs that ended SKIPPED by an operator's cancel.
	JobsCancelled atomic.Int64
	// JobsEnqueued counts jobs inserted by the operator API and the scanner
	// (jobs other processes insert are not seen here).
	JobsEnqueued atomic.Int64
	// JobsEnqueuedUnrunnable counts operator enqueues accepted for a
	// plugin that no connected worker could run at the time.
	JobsEnqueuedUnrunnable atomic.Int64
	// ScanPasses counts completed scans of every active source root.
	ScanPasses atomic.Int64
	// FilesHashed counts files the scanner read and hashed.
	FilesHashed atomic.Int64
	// FileVersions counts new cf_file_version rows the scanner recorded.
	FileVersions atomic.Int64
	// ScanErrors counts files or roots a scan could not read.
	ScanErrors atomic.Int64
	// DeploysAccepted and DeploysRejected count DEPLOYs answered ACK and
	// ERR (refused by verification or by the store).
	DeploysAccepted, DeploysRejected atomic.Int64
	// EnvPrepares counts PREPARE_ENV sent; EnvFailures the ones answered ERR
	// or not answered within --env-timeout.
	EnvPrepares, EnvFailures atomic.Int64
	// PingsSent counts ZMTP PINGs sent to workers that do not answer
	// HEARTBEAT (the original Casparian workers).
	PingsSent atomic.Int64

	// DispatchLatency is from the dispatcher asking for a claim (a slot is
	// free) to the DISPATCH handed to the socket actor.
	DispatchLatency *Histogram
	// JobDuration is from DISPATCH to the worker's receipt (CONCLUDE or ERR).
	JobDuration *Histogram
	// ClaimTime is the database time of one batch that claims (with the
	// conclusions written in the same transaction), ConcludeTime of one
	// batch of conclusions alone, ScanWriteTime of one batch of scanned
	// files.
	ClaimTime, ConcludeTime, ScanWriteTime *Histogram

	// Throughput counts JobsCompleted and JobsFailed again per minute,
	// for the last hour (the console's rates).
	Throughput *Throughput
	// PruneTime is the database time of one batch of the retention sweep.
	PruneTime *Histogram

	// JobsPruned counts jobs the retention sweep and the operator's prune
	// deleted.
	JobsPruned atomic.Int64
	// ByPlugin counts outcomes and observes durations per plugin.
	ByPlugin *PluginStats

	// JobsChained counts jobs queued on upstream artifacts (chaining by
	// topic); ChainRefused the artifacts not chained, by reason
	// (job.ChainOutsideRoots, ChainNotAFile, ChainUnreadable).
	JobsChained  atomic.Int64
	ChainRefused *Counters
}

// NewStats returns zeroed counters with their histograms.
func NewStats() *Stats {
	return &Stats{
		DispatchLatency: NewHistogram(LatencyBuckets),
		JobDuration:     NewHistogram(DurationBuckets),
		ClaimTime:       NewHistogram(LatencyBuckets),
		ConcludeTime:    NewHistogram(LatencyBuckets),
		ScanWriteTime:   NewHistogram(LatencyBuckets),
		PruneTime:       NewHistogram(LatencyBuckets),
		CurveRefusals:   &Counters{},
		MessagesDropped: &Counters{},
		ChainRefused:    &Counters{},
		Throughput:      &Throughput{},
		ByPlugin:        &PluginStats{},
	}
}

// MaxPluginLabels bounds the plugin names among the label values of the
// per-plugin metrics: the first plugins seen get their own, later ones share
// OtherPlugin (UnknownPlugin comes on top), so a stream of one-off plugin
// names cannot grow the metrics without end.
const MaxPluginLabels = 50

// The plugin labels that are not a plugin's name: OtherPlugin for plugins
// beyond MaxPluginLabels, UnknownPlugin for jobs whose plugin the Sentinel
// did not learn (adopted after a restart, requeued from the database).
const (
	OtherPlugin   = "other"
	UnknownPlugin = "unknown"
)

// PluginStats holds a PluginCounters per plugin label.
type PluginStats struct {
	mu sync.Mutex
	m  map[string]*PluginCounters
}

// PluginCounters are one plugin label's counters and histograms.
type PluginCounters struct {
	Completed, Failed, Requeued atomic.Int64
	// Reused counts jobs linked to an earlier result instead of run.
	Reused atomic.Int64
	// Duration is as Stats.JobDuration; EnqueueToStart is from the job's
	// insert (or an operator's retry) to its first claim.
	Duration, EnqueueToStart *Histogram
}

// For returns the counters of plugin's label, creating them at first use.
func (p *PluginStats) For(plugin string) *PluginCounters {
	label := PluginLabel(plugin)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]*PluginCounters)
	}
	if c, ok := p.m[label]; ok {
		return c
	}
	if len(p.m) >= MaxPluginLabels && label != UnknownPlugin {
		label = OtherPlugin
		if c, ok := p.m[label]; ok {
			return c
		}
	}
	c := &PluginCounters{Duration: NewHistogram(DurationBuckets), EnqueueToStart: NewHistogram(DurationBuckets)}
	p.m[label] = c
	return c
}

// Snapshot returns the counters by label; they stay live.
func (p *PluginStats) Snapshot() map[string]*PluginCounters {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]*PluginCounters, len(p.m))
	for k, v := range p.m {
		out[k] = v
	}
	return out
}

// PluginLabel is the label of a plugin name: the name, or UnknownPlugin
// for none.
func PluginLabel(plugin string) string {
	if plugin == "" {
		return UnknownPlugin
	}
	return plugin
}

// Counters counts events by a label, safe for concurrent use.
type Counters struct {
	mu sync.Mutex
	n  map[string]int64
}

// Add counts one event labelled label.
func (c *Counters) Add(label string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int64)
	}
	c.n[label]++
}

// Snapshot returns the counts by label.
func (c *Counters) Snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// Bucket bounds in seconds. Latencies inside the Sentinel are sub-millisecond
// to a few seconds under load; jobs run from milliseconds to hours.
var (
	LatencyBuckets  = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	DurationBuckets = []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600}
)

// Histogram counts observations (in seconds) into fixed buckets. Like the
// counters it is lock-free, so actors observe without a message hop; the
// metrics endpoint exports a Snapshot.
type Histogram struct {
	bounds  []float64
	counts  []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sumBits atomic.Uint64   // float64 bits of the sum
}

// NewHistogram returns a histogram with the given ascending upper bounds.
func NewHistogram(bounds []float64) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe records one value in seconds.
func (h *Histogram) Observe(v float64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Since records the time elapsed since start.
func (h *Histogram) Since(start time.Time) { h.Observe(time.Since(start).Seconds()) }

// HistogramSnapshot is a histogram read at one moment, in Prometheus' shape.
type HistogramSnapshot struct {
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64 // upper bound → cumulative count
}

// Snapshot reads the histogram. Count is the sum of the buckets, so the two
// always agree even while observations arrive.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Buckets: make(map[float64]uint64, len(h.bounds))}
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		s.Buckets[b] = cum
	}
	s.Count = cum + h.counts[len(h.bounds)].Load()
	s.Sum = math.Float64frombits(h.sumBits.Load())
	return s
}
