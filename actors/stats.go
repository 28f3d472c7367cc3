package actors

import "sync/atomic"

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
}
