package actors

import (
	"encoding/hex"
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/transport"
)

// socketActor turns ROUTER frames into typed messages for the supervisor and
// typed SendMessage requests into frames for the router's writer goroutine.
// It never touches the socket itself: the Router's goroutines do.
type socketActor struct {
	router     *transport.Router
	maxPayload int
	stats      *Stats
	log        zerolog.Logger
	badLog     zerolog.Logger // sampled: hostile peers must not flood the log
}

func newSocketProps(router *transport.Router, maxPayload int, stats *Stats, log zerolog.Logger) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		l := log.With().Str("component", "socket").Logger()
		return &socketActor{
			router:     router,
			maxPayload: maxPayload,
			stats:      stats,
			log:        l,
			badLog:     l.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second}),
		}
	})
}

func (a *socketActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *FramesReceived:
		a.handleFrames(ctx, m.In)
	case *SendMessage:
		if err := a.send(m); err != nil && m.Op == transport.OpDispatch {
			ctx.Send(ctx.Parent(), &DispatchFailed{To: m.To, JobID: m.JobID})
		}
	case *crash:
		panic("injected crash: socket")
	}
}

func (a *socketActor) handleFrames(ctx actor.Context, in transport.Inbound) {
	a.stats.MessagesReceived.Add(1)
	from := Peer{Key: PeerKey(in.Identity), Identity: in.Identity}
	msg, err := transport.DecodeFrames(in.Frames, a.maxPayload)
	if err != nil {
		a.reject(from, 0, err, errors.Is(err, transport.ErrTooFewFrames) || errors.Is(err, transport.ErrShortHeader))
		return
	}
	payload, err := transport.DecodePayload(msg.Opcode, msg.Payload)
	if err != nil {
		a.reject(from, msg.JobID, err, false)
		return
	}
	jobID := int64(msg.JobID)
	var out any
	switch p := payload.(type) {
	case *transport.Identify:
		out = &IdentifyReceived{From: from, Hello: p}
	case *transport.Heartbeat:
		out = &HeartbeatReceived{From: from, Beat: p}
	case *transport.Conclude:
		out = &ConcludeReceived{From: from, JobID: jobID, Receipt: p}
	case *transport.Err:
		out = &ErrReceived{From: from, JobID: jobID, Err: p}
	case *transport.EnvReady:
		out = &EnvReadyReceived{From: from, Ready: p}
	case *transport.Deploy:
		out = &DeployReceived{From: from, Deploy: p}
	default:
		out = &OtherReceived{From: from, Op: msg.Opcode, JobID: jobID}
	}
	ctx.Send(ctx.Parent(), out)
}

// reject counts a malformed message and answers ERR unless the frames were so
// broken that the peer cannot be speaking protocol v4 at all.
func (a *socketActor) reject(from Peer, jobID uint64, err error, silent bool) {
	a.stats.ProtocolErrors.Add(1)
	a.badLog.Warn().Err(err).Str("worker_id", from.Key).Str("kind", transport.ErrorKind(err)).Msg("malformed message dropped")
	if silent {
		return
	}
	_ = a.send(&SendMessage{To: from, Op: transport.OpErr, JobID: int64(jobID),
		Payload: &transport.Err{Message: "malformed message: " + err.Error()}})
}

func (a *socketActor) send(m *SendMessage) error {
	frames, err := transport.Encode(m.Op, uint64(m.JobID), m.Payload)
	if err != nil {
		a.log.Error().Err(err).Stringer("op", m.Op).Msg("encode failed")
		return err
	}
	if err := a.router.Send(m.To.Identity, frames); err != nil {
		a.stats.SendFailures.Add(1)
		a.badLog.Warn().Err(err).Str("worker_id", m.To.Key).Stringer("op", m.Op).Msg("send dropped")
		return err
	}
	a.stats.MessagesSent.Add(1)
	return nil
}

// PeerKey renders a ZeroMQ identity as the printable key used in logs and in
// the database's claimed_by: printable ASCII identities (the Python worker's
// w-<ns>) as they are, anything else as 0x-prefixed hex. A printable identity
// that itself starts with "0x" is hex-encoded too, so two identities never
// share a key.
func PeerKey(identity []byte) string {
	printable := len(identity) > 0 && len(identity) <= 255
	for _, b := range identity {
		if b < 0x21 || b > 0x7e {
			printable = false
			break
		}
	}
	if printable && (len(identity) < 2 || identity[0] != '0' || identity[1] != 'x') {
		return string(identity)
	}
	return "0x" + hex.EncodeToString(identity)
}
