package actors

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
)

// deafStore is a store that cannot hear of other processes' inserts, as
// SQLite is where inotify is missing or refused.
type deafStore struct{ db.Store }

func (deafStore) QueueChanges() (<-chan struct{}, error) {
	return nil, errors.New("inotify_init1: too many open files")
}

// listeningStore hears them.
type listeningStore struct {
	db.Store
	ch chan struct{}
}

func (s listeningStore) QueueChanges() (<-chan struct{}, error) { return s.ch, nil }

func TestQueueChanges_WarnsAndPollsWhenTheStoreCannotTell(t *testing.T) {
	var out bytes.Buffer
	log := zerolog.New(&out)
	cfg := config.Default()
	if ch := queueChanges(deafStore{}, cfg, log); ch != nil {
		t.Fatalf("a store that cannot tell gave a channel")
	}
	line := out.String()
	if strings.Count(line, "\n") != 1 || !strings.Contains(line, `"level":"warn"`) ||
		!strings.Contains(line, "too many open files") || !strings.Contains(line, "polling") {
		t.Errorf("want one warning naming the reason and the poll, got %q", line)
	}
	q := queueActor{deps: deps{cfg: cfg, notified: false}}
	if got := q.pollEvery(); got != cfg.PollInterval {
		t.Errorf("poll every %s without notifications, want --poll-interval %s", got, cfg.PollInterval)
	}
}

func TestQueueChanges_SafetyNetPollWhenTheStoreTells(t *testing.T) {
	var out bytes.Buffer
	cfg := config.Default()
	s := listeningStore{ch: make(chan struct{}, 1)}
	if ch := queueChanges(s, cfg, zerolog.New(&out)); ch != s.ch {
		t.Fatalf("got channel %v, want the store's", ch)
	}
	if out.Len() != 0 {
		t.Errorf("logged %q for a store that tells", out.String())
	}
	if ch := queueChanges(struct{ db.Store }{}, cfg, zerolog.New(&out)); ch != nil || out.Len() != 0 {
		t.Errorf("a store without QueueChanges: channel %v, logged %q; want neither", ch, out.String())
	}
	q := queueActor{deps: deps{cfg: cfg, notified: true}}
	if got := q.pollEvery(); got != cfg.NotifiedPollInterval {
		t.Errorf("poll every %s with notifications, want --notified-poll-interval %s", got, cfg.NotifiedPollInterval)
	}
}
