package actors

import (
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// generations numbers every timer ever armed, process-wide, so a tick from a
// timer of an actor's previous incarnation never matches the new one's.
var generations atomic.Uint64

// timer delivers one *tick to an actor after a delay, from outside its
// mailbox, so Receive never sleeps.
type timer struct {
	gen uint64
	t   *time.Timer
}

func (t *timer) arm(sys *actor.ActorSystem, pid *actor.PID, d time.Duration) {
	t.stop()
	gen := generations.Add(1)
	t.gen = gen
	t.t = time.AfterFunc(d, func() { sys.Root.Send(pid, &tick{gen: gen}) })
}

// current reports whether m was sent by this timer's latest arming.
func (t *timer) current(m *tick) bool { return t.t != nil && m.gen == t.gen }

// armed reports whether the timer is waiting to fire.
func (t *timer) armed() bool { return t.t != nil }

func (t *timer) stop() {
	if t.t != nil {
		t.t.Stop()
		t.t = nil
	}
}

// fired marks a timer as no longer armed once its tick was handled.
func (t *timer) fired() { t.t = nil }
