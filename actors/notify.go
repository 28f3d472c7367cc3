package actors

import (
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
)

// queueChanges returns the channel on which store tells of other
// processes' inserts, or nil when it cannot: then it says why, once, and
// the queue actor polls every --poll-interval.
func queueChanges(store db.Store, cfg config.Config, log zerolog.Logger) <-chan struct{} {
	n, ok := store.(db.QueueNotifier)
	if !ok {
		return nil
	}
	changes, err := n.QueueChanges()
	if err != nil {
		log.Warn().Err(err).Dur("poll_interval", cfg.PollInterval).
			Msg("the database cannot tell of other processes' inserts; polling for them instead")
		return nil
	}
	return changes
}

// forwarder is a goroutine of the Sentinel's lifecycle, not an actor: it
// turns the database's news of inserted jobs (db.QueueNotifier) into
// QueueNotified messages for the queue actor, so that a job another process
// inserts is claimed within milliseconds instead of at the next poll. The
// channel folds bursts into one signal, and so does the queue actor's check.
type forwarder struct {
	stop chan struct{}
	done chan struct{}
}

func forwardQueueChanges(changes <-chan struct{}, send func()) *forwarder {
	f := &forwarder{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for {
			select {
			case <-f.stop:
				return
			case <-changes:
				send()
			}
		}
	}()
	return f
}

func (f *forwarder) close() {
	close(f.stop)
	<-f.done
}
