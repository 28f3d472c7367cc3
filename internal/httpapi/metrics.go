package httpapi

import (
	"context"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/job"
)

// metricsCollector exports a Sentinel's Stats to Prometheus at scrape time:
// the counters and histograms are read from their atomics, the gauges
// (workers, slots, jobs by status) are asked of the actor tree. Nothing is
// copied in between, so a scrape always shows the current values.
type metricsCollector struct {
	s   *actors.Sentinel
	log zerolog.Logger

	counters   []counterMetric
	histograms []histogramMetric

	up, workers, slots, jobs *prometheus.Desc
	curveRefusals            *prometheus.Desc
	// By plugin (actors.PluginStats, at most actors.MaxPluginLabels
	// values): outcomes, durations, enqueue-to-start latencies, and the
	// age of the oldest due QUEUED job.
	completed, failed, requeued, reused *prometheus.Desc
	duration, enqueueToStart            *prometheus.Desc
	oldestQueued                        *prometheus.Desc
	messagesDropped                     *prometheus.Desc
	chainRefused                        *prometheus.Desc
	sentinel, sentinels                 *prometheus.Desc
}

type counterMetric struct {
	desc *prometheus.Desc
	v    *atomic.Int64
}

type histogramMetric struct {
	desc  *prometheus.Desc
	h     *actors.Histogram
	label []string // label values, if the family has a label
}

// gaugeTimeout bounds the actor requests of one scrape.
const gaugeTimeout = 5 * time.Second

func newMetricsCollector(s *actors.Sentinel, log zerolog.Logger) *metricsCollector {
	st := s.Stats()
	counter := func(name, help string, v *atomic.Int64) counterMetric {
		return counterMetric{desc: prometheus.NewDesc("casparian_"+name+"_total", help, nil, nil), v: v}
	}
	plugin := []string{"plugin"}
	dbBatch := prometheus.NewDesc("casparian_db_batch_seconds",
		"Database time of one batch: op=claim (a claim round), conclude (receipts), scan (scanned files), "+
			"prune (the retention sweep's deletes).",
		[]string{"op"}, nil)
	return &metricsCollector{
		s:   s,
		log: log,
		counters: []counterMetric{
			counter("jobs_dispatched", "DISPATCH messages sent to workers.", &st.JobsDispatched),
			counter("jobs_rejected", "REJECTED receipts (worker at capacity).", &st.JobsRejected),
			counter("jobs_pruned", "Finished jobs deleted by the retention sweep (--retain-completed, --retain-failed) "+
				"and by the operator's prune.", &st.JobsPruned),
			counter("jobs_cancelled", "Jobs that ended SKIPPED by an operator's cancel.", &st.JobsCancelled),
			counter("jobs_chained", "Jobs queued on an artifact of another job, for plugins subscribed to its topic.", &st.JobsChained),
			counter("jobs_enqueued", "Jobs inserted by the operator API and the scanner.", &st.JobsEnqueued),
			counter("jobs_enqueued_unrunnable", "Jobs the operator API accepted for a plugin that no connected worker could run then.",
				&st.JobsEnqueuedUnrunnable),
			counter("workers_registered", "Workers that identified.", &st.WorkersRegistered),
			counter("workers_removed", "Workers removed (silent, lost or over their restart limit).", &st.WorkersRemoved),
			counter("messages_received", "Valid messages received from peers.", &st.MessagesReceived),
			counter("messages_sent", "Messages sent to peers.", &st.MessagesSent),
			counter("send_failures", "Messages that could not be queued for sending.", &st.SendFailures),
			counter("protocol_errors", "Malformed or invalid messages received.", &st.ProtocolErrors),
			counter("db_errors", "Database calls that failed.", &st.DBErrors),
			counter("stale_messages", "Receipts and reports about jobs their sender no longer holds.", &st.StaleMessages),
			counter("unknown_workers", "Messages from identities that never identified.", &st.UnknownWorkers),
			counter("actor_restarts", "Actor restarts by supervision.", &st.ActorRestarts),
			counter("scan_passes", "Completed scans of the active source roots.", &st.ScanPasses),
			counter("files_hashed", "Files the scanner read and hashed.", &st.FilesHashed),
			counter("file_versions", "File versions the scanner recorded.", &st.FileVersions),
			counter("scan_errors", "Files or source roots a scan could not read.", &st.ScanErrors),
			counter("deploys_accepted", "DEPLOYs answered ACK.", &st.DeploysAccepted),
			counter("deploys_rejected", "DEPLOYs answered ERR (verification or storage refused them).", &st.DeploysRejected),
			counter("env_prepares", "PREPARE_ENV messages sent to workers.", &st.EnvPrepares),
			counter("env_failures", "Environments a worker failed to prepare (ERR or --env-timeout).", &st.EnvFailures),
			counter("pings_sent", "ZMTP PINGs sent to workers that do not answer HEARTBEAT.", &st.PingsSent),
			counter("peers_over_budget", "Connections closed for staying over their inbound message budget (--peer-rate).", &st.PeersCut),
		},
		histograms: []histogramMetric{
			{desc: prometheus.NewDesc("casparian_dispatch_latency_seconds",
				"From a free slot asking for a claim to the DISPATCH being sent.", nil, nil), h: st.DispatchLatency},
			{desc: dbBatch, h: st.ClaimTime, label: []string{"claim"}},
			{desc: dbBatch, h: st.ConcludeTime, label: []string{"conclude"}},
			{desc: dbBatch, h: st.ScanWriteTime, label: []string{"scan"}},
			{desc: dbBatch, h: st.PruneTime, label: []string{"prune"}},
		},
		completed: prometheus.NewDesc("casparian_jobs_completed_total", "Jobs that ended COMPLETED, by plugin.", plugin, nil),
		reused: prometheus.NewDesc("casparian_jobs_reused_total",
			"Jobs linked at enqueue time to an earlier result of the same content, manifest and sinks instead of run, by plugin.", plugin, nil),
		failed: prometheus.NewDesc("casparian_jobs_failed_total",
			"Jobs that ended FAILED, by plugin (unknown: a dispatch that could not be assembled).", plugin, nil),
		requeued: prometheus.NewDesc("casparian_jobs_requeued_total",
			"Jobs put back to QUEUED after an infrastructure fault, by plugin.", plugin, nil),
		duration: prometheus.NewDesc("casparian_job_duration_seconds",
			"From DISPATCH to the worker's receipt, by plugin.", plugin, nil),
		enqueueToStart: prometheus.NewDesc("casparian_job_enqueue_to_start_seconds",
			"From a job's insert (or an operator's retry) to its first claim, by plugin; requeued jobs' later claims are not counted.",
			plugin, nil),
		oldestQueued: prometheus.NewDesc("casparian_queue_oldest_age_seconds",
			"Age of the oldest QUEUED job that is due (next_run_at unset or passed), by plugin, since it was enqueued; "+
				"a plugin with no such job has no series.", plugin, nil),
		sentinel: prometheus.NewDesc("casparian_sentinel_leader",
			"This Sentinel, by its lease id and host: 1 when it leads the Sentinels sharing the database "+
				"(runs the scanner and the sweeps), else 0. SQLite has one Sentinel, which leads.",
			[]string{"sentinel_id", "host"}, nil),
		sentinels: prometheus.NewDesc("casparian_sentinels_live",
			"Sentinels whose lease on the database is live, this one included.", nil, nil),
		up: prometheus.NewDesc("casparian_up",
			"1 when the Sentinel is serving and its database answers, else 0.", nil, nil),
		workers: prometheus.NewDesc("casparian_workers_connected", "Workers connected now.", nil, nil),
		slots: prometheus.NewDesc("casparian_worker_slots",
			"Job slots of the connected workers: state=busy (running a job) or free.", []string{"state"}, nil),
		jobs: prometheus.NewDesc("casparian_jobs", "Jobs in the queue by status.", []string{"status"}, nil),
		curveRefusals: prometheus.NewDesc("casparian_curve_refusals_total",
			"Worker connections refused during the CURVE handshake, by reason "+
				"(unauthorized_key, identity_taken, not_curve, bad_handshake, handshake_timeout).", []string{"reason"}, nil),
		chainRefused: prometheus.NewDesc("casparian_chain_refused_total",
			"Artifacts of completed jobs that plugins subscribe to and that were not chained, by reason "+
				"(outside_roots: in no active source root; not_a_file: a sqlite:// table or no file URI; unreadable).",
			[]string{"reason"}, nil),
		messagesDropped: prometheus.NewDesc("casparian_messages_dropped_total",
			"Inbound messages dropped before any actor saw them, by reason (rate: over the connection's --peer-rate budget).",
			[]string{"reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.counters {
		ch <- m.desc
	}
	for _, m := range c.histograms {
		if m.label == nil || m.label[0] == "claim" { // one Desc per family
			ch <- m.desc
		}
	}
	ch <- c.up
	ch <- c.workers
	ch <- c.slots
	ch <- c.jobs
	ch <- c.curveRefusals
	ch <- c.messagesDropped
	ch <- c.chainRefused
	ch <- c.sentinel
	ch <- c.sentinels
	for _, d := range []*prometheus.Desc{c.completed, c.failed, c.requeued, c.reused, c.duration, c.enqueueToStart, c.oldestQueued} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.counters {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.v.Load()))
	}
	for _, m := range c.histograms {
		s := m.h.Snapshot()
		ch <- prometheus.MustNewConstHistogram(m.desc, s.Count, s.Sum, s.Buckets, m.label...)
	}
	for label, pc := range c.s.Stats().ByPlugin.Snapshot() {
		ch <- prometheus.MustNewConstMetric(c.completed, prometheus.CounterValue, float64(pc.Completed.Load()), label)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(pc.Failed.Load()), label)
		ch <- prometheus.MustNewConstMetric(c.requeued, prometheus.CounterValue, float64(pc.Requeued.Load()), label)
		ch <- prometheus.MustNewConstMetric(c.reused, prometheus.CounterValue, float64(pc.Reused.Load()), label)
		d := pc.Duration.Snapshot()
		ch <- prometheus.MustNewConstHistogram(c.duration, d.Count, d.Sum, d.Buckets, label)
		e := pc.EnqueueToStart.Snapshot()
		ch <- prometheus.MustNewConstHistogram(c.enqueueToStart, e.Count, e.Sum, e.Buckets, label)
	}
	for reason, n := range c.s.Stats().CurveRefusals.Snapshot() {
		ch <- prometheus.MustNewConstMetric(c.curveRefusals, prometheus.CounterValue, float64(n), reason)
	}
	for reason, n := range c.s.Stats().MessagesDropped.Snapshot() {
		ch <- prometheus.MustNewConstMetric(c.messagesDropped, prometheus.CounterValue, float64(n), reason)
	}
	for reason, n := range c.s.Stats().ChainRefused.Snapshot() {
		ch <- prometheus.MustNewConstMetric(c.chainRefused, prometheus.CounterValue, float64(n), reason)
	}
	me := c.s.Self()
	leader := 0.0
	if me.Leader {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(c.sentinel, prometheus.GaugeValue, leader, me.ID, me.Host)
	ctx, cancel := context.WithTimeout(context.Background(), gaugeTimeout)
	defer cancel()
	up := 1.0
	if err := c.s.Health(ctx); err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	if up == 0 {
		return // the gauges would only time out
	}
	if workers, err := c.s.WorkersInfo(ctx); err != nil {
		c.log.Warn().Err(err).Msg("metrics: workers not available")
	} else {
		busy, free := 0, 0
		for _, w := range workers {
			busy += len(w.Running)
			free += max(w.Slots-len(w.Running), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(len(workers)))
		ch <- prometheus.MustNewConstMetric(c.slots, prometheus.GaugeValue, float64(busy), "busy")
		ch <- prometheus.MustNewConstMetric(c.slots, prometheus.GaugeValue, float64(free), "free")
	}
	if counts, err := c.s.Counts(ctx); err != nil {
		c.log.Warn().Err(err).Msg("metrics: job counts not available")
	} else {
		for _, st := range job.Statuses {
			ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(counts[st]), string(st))
		}
	}
	if ages, err := c.s.QueueAges(ctx); err != nil {
		c.log.Warn().Err(err).Msg("metrics: queue ages not available")
	} else {
		for label, age := range queueAges(ages, time.Now()) {
			ch <- prometheus.MustNewConstMetric(c.oldestQueued, prometheus.GaugeValue, age, label)
		}
	}
	if all, err := c.s.Sentinels(ctx); err != nil {
		c.log.Warn().Err(err).Msg("metrics: the list of Sentinels is not available")
	} else {
		ch <- prometheus.MustNewConstMetric(c.sentinels, prometheus.GaugeValue, float64(len(all)))
	}
}

// queueAges turns the oldest due QUEUED job of each plugin into ages in
// seconds by plugin label: the actors.MaxPluginLabels oldest under their
// names, any others under actors.OtherPlugin with the oldest of them.
func queueAges(ages []job.QueueAge, now time.Time) map[string]float64 {
	sort.Slice(ages, func(i, j int) bool { return ages[i].EnqueuedAt.Before(ages[j].EnqueuedAt) })
	out := make(map[string]float64, min(len(ages), actors.MaxPluginLabels+1))
	for i, a := range ages {
		label := actors.PluginLabel(a.Plugin)
		if i >= actors.MaxPluginLabels {
			label = actors.OtherPlugin
		}
		if _, ok := out[label]; !ok { // the first of a label is its oldest
			out[label] = max(now.Sub(a.EnqueuedAt).Seconds(), 0)
		}
	}
	return out
}
