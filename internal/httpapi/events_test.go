package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/internal/httpapi"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
)

// stream is an open GET /api/v1/events.
type stream struct {
	res    *http.Response
	sc     *bufio.Scanner
	cancel context.CancelFunc
}

// openStream opens the event stream at url with the headers ("Name: value");
// it fails the test unless the answer is 200 text/event-stream. The stream
// is closed when the test ends, if not before.
func openStream(t *testing.T, url string, headers ...string) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ": ")
		req.Header.Set(name, value)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	st := &stream{res: res, sc: bufio.NewScanner(res.Body), cancel: cancel}
	st.sc.Buffer(nil, 1<<20)
	t.Cleanup(st.close)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		raw, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %d %v %s", url, res.StatusCode, res.Header, raw)
	}
	return st
}

func (st *stream) close() {
	st.cancel()
	_ = st.res.Body.Close()
}

// next reads the next status event; it fails the test if the stream ends
// first.
func (st *stream) next(t *testing.T) api.StatusEvent {
	t.Helper()
	var name, data string
	for st.sc.Scan() {
		line := st.sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "" && name == "status":
			var ev api.StatusEvent
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatalf("status event %q: %v", data, err)
			}
			return ev
		}
	}
	t.Fatalf("the event stream ended: %v", st.sc.Err())
	return api.StatusEvent{}
}

// until reads status events until cond holds of one, for at most within.
func (st *stream) until(t *testing.T, within time.Duration, what string, cond func(api.StatusEvent) bool) api.StatusEvent {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ev := st.next(t)
		if cond(ev) {
			return ev
		}
		if time.Now().After(deadline) {
			t.Fatalf("no status event within %s shows %s; the last: %+v", within, what, ev)
		}
	}
}

func TestEvents_StatusAtConnectThenAsTheQueueChanges(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("nobody", "p")
	fv := e.File("a.txt", "a\n")
	e.Enqueue(fv, "nobody", 0)

	start := time.Now()
	st := openStream(t, e.URL+"/api/v1/events")
	first := st.next(t)
	if wait := time.Since(start); wait > 900*time.Millisecond {
		t.Errorf("the first event came after %s, want at once", wait)
	}
	if !first.Ready || first.Counts["QUEUED"] != 1 || len(first.Counts) != 6 || len(first.Throughput) != 60 || first.Error != "" {
		t.Errorf("first event = %+v", first)
	}

	e.Enqueue(fv, "nobody", 0)
	st.until(t, 5*time.Second, "2 QUEUED", func(ev api.StatusEvent) bool { return ev.Counts["QUEUED"] == 2 })

	// A worker connects and completes a job: the workers, their slots and
	// the current minute's throughput follow.
	e.Worker(testworker.Options{Identity: "tw-events", Capabilities: []string{"p"}, Slots: 3})
	done := e.Enqueue(fv, "p", 0)
	ev := st.until(t, 10*time.Second, "the worker and a completed job", func(ev api.StatusEvent) bool {
		last := ev.Throughput[len(ev.Throughput)-1]
		return ev.Counts["COMPLETED"] == 1 && len(ev.Workers) == 1 && last.Completed == 1
	})
	if ev.Slots != 3 || ev.Workers[0].ID != "tw-events" {
		t.Errorf("event after job %d completed = %+v", done, ev)
	}
}

func TestEvents_WantAReadToken(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, withTokens(t))
	if a := send(t, "GET", e.URL+"/api/v1/events", ""); a.code != http.StatusUnauthorized || reasonOf(t, a) != "no_token" {
		t.Errorf("no token: %d %s", a.code, a.body)
	}
	if a := send(t, "GET", e.URL+"/api/v1/events", "", bearerOf(wrongToken)); a.code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d %s", a.code, a.body)
	}
	if a := send(t, "GET", e.URL+"/api/v1/events", "", "Origin: http://evil.example", bearerOf(readToken)); a.code != http.StatusForbidden {
		t.Errorf("cross-origin: %d %s", a.code, a.body)
	}
	st := openStream(t, e.URL+"/api/v1/events", bearerOf(readToken))
	if ev := st.next(t); !ev.Ready {
		t.Errorf("event = %+v", ev)
	}
}

// serve runs a Server of its own over e's Sentinel on 127.0.0.1 and returns
// its URL; the test shuts it down itself.
func serve(t *testing.T, e *sentineltest.Env, opts httpapi.Options) (*httpapi.Server, string, chan error) {
	t.Helper()
	opts.Sentinel = e.Sentinel
	opts.Logger = zerolog.Nop()
	srv := httpapi.New(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	return srv, "http://" + ln.Addr().String(), served
}

func TestEvents_StreamsEndWhenTheServerShutsDown(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	srv, url, served := serve(t, e, httpapi.Options{})
	streams := []*stream{openStream(t, url+"/api/v1/events"), openStream(t, url+"/api/v1/events")}
	for _, st := range streams {
		st.next(t)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with open streams: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %s with open streams", took)
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	for i, st := range streams {
		for st.sc.Scan() { // what was sent before the end
		}
		if err := st.sc.Err(); err != nil {
			t.Errorf("stream %d ended with %v, want a clean end", i, err)
		}
	}
}

func TestEvents_CapOpenStreams(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	srv, url, served := serve(t, e, httpapi.Options{MaxStreams: 2})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	first := openStream(t, url+"/api/v1/events")
	first.next(t)
	openStream(t, url+"/api/v1/events").next(t)

	a := send(t, "GET", url+"/api/v1/events", "")
	if a.code != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" ||
		!strings.Contains(errorOf(t, a.body), "too many event streams") {
		t.Errorf("a third stream: %d %v %s", a.code, a.header, a.body)
	}
	// A client that goes away frees its place.
	first.close()
	testwait.Eventually(t, 5*time.Second, "a stream closed by its client no longer counts", func() (bool, string) {
		a := send(t, "GET", url+"/api/v1/events", "")
		return a.code == http.StatusOK, a.body
	})
}

func TestEvents_StreamsOutliveTheServersReadTimeout(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	// The routes under an http.Server of this test's own, with a short
	// ReadTimeout (the Sentinel's is 30 s): net/http lifts the read
	// deadline once the request is read, and the stream must not depend
	// on that changing unnoticed.
	hs := &http.Server{Handler: httpapi.New(httpapi.Options{Sentinel: e.Sentinel, Logger: zerolog.Nop()}).Handler(),
		ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	st := openStream(t, "http://"+ln.Addr().String()+"/api/v1/events")
	first := st.next(t).At
	last := st.until(t, 10*time.Second, "an event 2 s after the first", func(ev api.StatusEvent) bool {
		return ev.At.Sub(first) >= 2*time.Second
	})
	t.Logf("events from %s to %s on one stream", first.Format(time.StampMilli), last.At.Format(time.StampMilli))
	st.close()
	if err := hs.Close(); err != nil {
		t.Error(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("serve: %v", err)
	}
}
