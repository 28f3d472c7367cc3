package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casparian/sentinel/transport"
)

// flooder is one hostile peer: it identifies as a worker that can run
// nothing and then writes HEARTBEATs as fast as the socket takes them,
// reconnecting whenever the Sentinel hangs up. It speaks ZMTP by hand, so
// the flood costs the bench as little as possible.
type flooder struct {
	host   string
	sent   atomic.Int64 // HEARTBEATs written
	cuts   atomic.Int64 // times the Sentinel closed the connection
	firstC atomic.Int64 // nanoseconds from start to the first cut; 0 if none
	start  time.Time
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startFlooder(endpoint string) *flooder {
	f := &flooder{host: strings.TrimPrefix(endpoint, "tcp://"), start: time.Now(), stop: make(chan struct{})}
	f.wg.Add(1)
	go f.run()
	return f
}

// close stops flooding and waits for the flooder.
func (f *flooder) close() {
	close(f.stop)
	f.wg.Wait()
}

func (f *flooder) run() {
	defer f.wg.Done()
	batch := floodBatch(1000)
	for {
		select {
		case <-f.stop:
			return
		default:
		}
		conn, err := net.DialTimeout("tcp", f.host, time.Second)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		f.flood(conn, batch)
	}
}

// flood writes batches until the connection fails or the flooder stops. A
// reader drains what the Sentinel sends, so the flooder is never cut as a
// peer that does not read.
func (f *flooder) flood(conn net.Conn, batch []byte) {
	defer func() { _ = conn.Close() }() // the flood is over: the connection failed or the flooder stopped
	gone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, conn)
		close(gone)
	}()
	hello, _ := transport.Encode(transport.OpIdentify, 0, &transport.Identify{WorkerID: "flooder", Capabilities: []string{"nothing"}, MaxConcurrentJobs: 1})
	out := greetingAndReady("flooder")
	out = appendMessage(out, hello)
	if _, err := conn.Write(out); err != nil {
		return
	}
	go func() {
		select {
		case <-f.stop:
			_ = conn.Close()
		case <-gone:
		}
	}()
	for {
		if _, err := conn.Write(batch); err != nil {
			break
		}
		f.sent.Add(1000)
	}
	select {
	case <-f.stop:
	default:
		if f.cuts.Add(1) == 1 {
			f.firstC.Store(int64(time.Since(f.start)))
		}
	}
	<-gone
}

// floodBatch is n HEARTBEAT messages back to back.
func floodBatch(n int) []byte {
	frames, _ := transport.Encode(transport.OpHeartbeat, 0, &transport.Heartbeat{Status: "IDLE"})
	var out []byte
	for range n {
		out = appendMessage(out, frames)
	}
	return out
}

// greetingAndReady is a NULL-security ZMTP 3.0 greeting and a DEALER's
// READY with identity.
func greetingAndReady(identity string) []byte {
	out := make([]byte, 64)
	out[0], out[9], out[10] = 0xFF, 0x7F, 3
	copy(out[12:], "NULL")
	ready := []byte("\x05READY")
	for _, p := range [][2]string{{"Socket-Type", "DEALER"}, {"Identity", identity}} {
		ready = append(ready, byte(len(p[0])))
		ready = append(ready, p[0]...)
		ready = binary.BigEndian.AppendUint32(ready, uint32(len(p[1])))
		ready = append(ready, p[1]...)
	}
	return append(append(out, 0x04, byte(len(ready))), ready...)
}

// appendMessage frames a multipart message (short frames only).
func appendMessage(out []byte, frames [][]byte) []byte {
	for i, fr := range frames {
		flags := byte(0)
		if i < len(frames)-1 {
			flags = 0x01
		}
		out = append(out, flags, byte(len(fr)))
		out = append(out, fr...)
	}
	return out
}

// scrapeCounter reads one sample of a Prometheus text page, 0 if absent.
func scrapeCounter(ctx context.Context, addr, sample string) float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer func() { _ = resp.Body.Close() }() // read from, not written: nothing to lose
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return 0
}

// measureFlood runs a second measurement with one flooder connected and
// prints how it compares with the run without.
func measureFlood(ctx context.Context, out io.Writer, r *rig, a sentinelArgs, o options, full float64) error {
	if err := identifyAll(r.pool, nil, 0); err != nil {
		return err
	}
	if err := seedMore(ctx, r.database, o.jobs); err != nil {
		return err
	}
	f := startFlooder(a.endpoint)
	rate, err := measure(ctx, out, "with one flooding peer", r, o, 0)
	if err != nil {
		f.close()
		return err
	}
	// A short run may end before the Sentinel has judged the flood
	// sustained: keep flooding until it cuts the flooder (or 10 s).
	for wait := time.Now(); f.cuts.Load() == 0 && time.Since(wait) < 10*time.Second; {
		time.Sleep(20 * time.Millisecond) // polling a counter
	}
	elapsed := time.Since(f.start)
	f.close()
	cut := "never disconnected"
	if d := f.firstC.Load(); d > 0 {
		cut = fmt.Sprintf("first disconnected after %s, %d disconnects in all", time.Duration(d).Round(time.Millisecond), f.cuts.Load())
	}
	dropped := scrapeCounter(ctx, a.http, `casparian_messages_dropped_total{reason="rate"}`)
	fmt.Fprintf(out, "flood: %d HEARTBEATs sent in %.1fs (%.0f/s), %.0f dropped by the Sentinel, %s; throughput %.0f %% of the run without it\n",
		f.sent.Load(), elapsed.Seconds(), float64(f.sent.Load())/elapsed.Seconds(), dropped, cut, 100*rate/full)
	return nil
}
