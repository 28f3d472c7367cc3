package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/job"
)

const (
	// defaultMaxStreams is Options.MaxStreams' default.
	defaultMaxStreams = 32
	// eventEvery is how often a stream sends a status event.
	eventEvery = time.Second
	// sharedFor is how long one reading of the queue serves every stream:
	// 32 open consoles cost one count query a second, not 32.
	sharedFor = eventEvery / 2
	// streamWriteTimeout bounds one event's write: a client that stops
	// reading is dropped instead of holding its goroutine.
	streamWriteTimeout = 10 * time.Second
)

// sharedStatus is the last status event read, shared by the streams.
type sharedStatus struct {
	mu   sync.Mutex // held while reading, so concurrent streams wait for one read
	at   time.Time
	last api.StatusEvent
}

// GET /api/v1/events is a Server-Sent Events stream: "event: status" with
// an api.StatusEvent at once and then every second, until the client goes
// away or the server shuts down. The console opens it with EventSource,
// which cannot send an Authorization header: this route (and the console's
// page) alone also takes the token as ?token= (Endpoint.TokenInQuery).
func (srv *Server) events(w http.ResponseWriter, r *http.Request) {
	if n := srv.streams.Add(1); n > int64(srv.maxStreams) {
		srv.streams.Add(-1)
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, api.Error{Error: fmt.Sprintf(
			"too many event streams are open (at most %d); close a console or try again later", srv.maxStreams)})
		return
	}
	defer srv.streams.Add(-1)

	// The server's ReadTimeout does not end the stream: net/http lifts the
	// read deadline once a request without a body is read (the test
	// TestEvents_StreamsOutliveTheServersReadTimeout holds it to that).
	// Each write has a deadline of its own.
	rc := http.NewResponseController(w)
	// The connection may serve other requests after the stream: none
	// inherits the last event's write deadline.
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a proxy in front must not hold events back
	w.WriteHeader(http.StatusOK)
	// EventSource reconnects after a dropped stream; 2 s rather than its
	// default of about 3.
	if err := writeEvent(w, rc, "retry: 2000\n\n"); err != nil {
		return
	}

	tick := time.NewTicker(eventEvery)
	defer tick.Stop()
	for {
		data, err := json.Marshal(srv.statusEvent())
		if err != nil {
			srv.log.Error().Err(err).Msg("encode status event")
			return
		}
		if err := writeEvent(w, rc, "event: status\ndata: "+string(data)+"\n\n"); err != nil {
			if !errors.Is(err, context.Canceled) {
				srv.log.Debug().Err(err).Str("remote", r.RemoteAddr).Msg("event stream ended")
			}
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-srv.closing:
			return
		case <-tick.C:
		}
	}
}

// writeEvent writes one event within streamWriteTimeout and flushes it. A
// ResponseWriter without deadlines (a test's recorder, a middleware that
// hides them) writes without one.
func writeEvent(w http.ResponseWriter, rc *http.ResponseController, text string) error {
	if err := rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := w.Write([]byte(text)); err != nil {
		return err
	}
	return rc.Flush()
}

// statusEvent reads the queue and the workers, or returns what another
// stream read less than sharedFor ago. A part that cannot be read is named
// in Error and the rest is still sent.
func (srv *Server) statusEvent() api.StatusEvent {
	sh := &srv.shared
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := time.Now()
	if now.Sub(sh.at) < sharedFor {
		return sh.last
	}
	// Not the request's context: the reading serves every stream.
	ctx, cancel := context.WithTimeout(context.Background(), min(srv.timeout, 5*time.Second))
	defer cancel()
	ev := api.StatusEvent{At: now.UTC(), Ready: srv.s.Ready(), Endpoint: srv.s.Endpoint(),
		Counts: map[string]int64{}, Workers: []api.Worker{}}
	var errs []string
	if counts, err := srv.s.Counts(ctx); err != nil {
		errs = append(errs, "job counts: "+err.Error())
	} else {
		for _, st := range job.Statuses {
			ev.Counts[string(st)] = counts[st]
		}
	}
	if workers, err := srv.s.WorkersInfo(ctx); err != nil {
		errs = append(errs, "workers: "+err.Error())
	} else {
		for _, wi := range workers {
			ev.Workers = append(ev.Workers, workerJSON(wi))
			ev.Slots += wi.Slots
			ev.Busy += len(wi.Running)
		}
	}
	for _, m := range srv.s.Stats().Throughput.Snapshot(now) {
		ev.Throughput = append(ev.Throughput, api.Minute{Start: m.Start.UTC(), Completed: m.Completed, Failed: m.Failed})
	}
	ev.Error = strings.Join(errs, "; ")
	sh.at, sh.last = now, ev
	return ev
}
