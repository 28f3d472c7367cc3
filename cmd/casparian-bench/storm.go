package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casparian/sentinel/transport"
)

// The connection storm (issue #15, part 5): many peers connect and identify
// as workers, more connect, identify and hang up as fast as they can, then
// all of them leave. What the Sentinel keeps afterwards is what it keeps per
// departed peer: the live heap after a forced GC must come back to where it
// started. The peers speak ZMTP by hand, as the flooder does, so that five
// thousand of them cost the bench little.

// stormWorkerTimeout is the Sentinel's --worker-timeout in a storm: the held
// peers heartbeat well within it (every second, from the moment each has
// identified), and the departed ones are forgotten soon after it.
const stormWorkerTimeout = 10 * time.Second

// stormFigures is what a storm measured.
type stormFigures struct {
	round       int
	peers       int
	connectTook time.Duration
	cycles      int64
	churnFor    time.Duration
	rss         [3]float64 // MB: start, peak (VmHWM), after every peer left
	heap        [3]float64 // MB after GC: start, with every peer held, after
	goroutines  [3]float64
	refused     int64 // held or churning peers whose connect or write failed
}

func runStorm(ctx context.Context, s *sentinelProc, a sentinelArgs, o options, round int) (stormFigures, error) {
	host := strings.TrimPrefix(a.endpoint, "tcp://")
	f := stormFigures{round: round, peers: o.stormPeers, churnFor: o.stormChurn}
	var err error
	if f.heap[0], f.goroutines[0], err = s.heapAfterGC(ctx, a.http); err != nil {
		return f, err
	}
	f.rss[0] = s.rssMB("VmRSS:")

	// Hold: every peer connected and identified at once.
	held := newStormPool(host)
	defer held.close()
	t0 := time.Now()
	if err := held.connect(ctx, f.peers, fmt.Sprintf("storm-r%d-held-", round)); err != nil {
		return f, err
	}
	if err := waitMetric(ctx, a.http, "casparian_workers_connected", func(v float64) bool { return v >= float64(f.peers) }); err != nil {
		return f, fmt.Errorf("held peers registered: %w", err)
	}
	f.connectTook = time.Since(t0)
	if f.heap[1], f.goroutines[1], err = s.heapAfterGC(ctx, a.http); err != nil {
		return f, err
	}

	// Churn: connect, identify, hang up, from a few goroutines, with a new
	// identity every time (as clients without a fixed identity reconnect).
	churnCtx, stop := context.WithTimeout(ctx, f.churnFor)
	var cycles, refused, seq atomic.Int64
	var wg sync.WaitGroup
	churnStart := time.Now()
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; churnCtx.Err() == nil; i++ {
				if o.stormRate > 0 {
					// Paced: cycle n starts n/rate seconds into the churn.
					due := churnStart.Add(time.Duration(seq.Add(1)) * time.Second / time.Duration(o.stormRate))
					select {
					case <-churnCtx.Done():
						return
					case <-time.After(time.Until(due)):
					}
				}
				conn, err := stormConnect(host, fmt.Sprintf("storm-r%d-churn-%d-%d", round, g, i))
				if err != nil {
					refused.Add(1)
					continue
				}
				_ = conn.Close()
				cycles.Add(1)
			}
		}()
	}
	wg.Wait()
	stop()
	f.cycles, f.refused = cycles.Load(), refused.Load()+held.failed.Load()

	// Everyone leaves; the Sentinel forgets each worker after its timeout.
	held.close()
	if err := waitMetric(ctx, a.http, "casparian_workers_connected", func(v float64) bool { return v == 0 }); err != nil {
		return f, fmt.Errorf("every peer forgotten: %w", err)
	}
	// The live heap comes back once the last worker actors have stopped
	// and their mailboxes are collected; wait for it rather than sample once.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if f.heap[2], f.goroutines[2], err = s.heapAfterGC(ctx, a.http); err != nil {
			return f, err
		}
		if f.heap[2] < f.heap[0]+10 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return f, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	f.rss[1], f.rss[2] = s.rssMB("VmHWM:"), s.rssMB("VmRSS:")
	if o.stormProfile != "" {
		// What is still live, for `go tool pprof`.
		prof, err := httpGet(ctx, "http://"+a.http+"/debug/pprof/heap?gc=1")
		if err != nil {
			return f, err
		}
		if err := os.WriteFile(o.stormProfile, []byte(prof), 0o644); err != nil {
			return f, err
		}
	}
	return f, nil
}

func (f stormFigures) print(out io.Writer) {
	perPeer := (f.heap[1] - f.heap[0]) * (1 << 20) / float64(f.peers)
	fmt.Fprintf(out, "storm round %d: %d peers connected and identified in %s (%.1f KB of live heap each); "+
		"%d connect/IDENTIFY/close cycles in %s (%.0f/s); %d connects or writes failed\n",
		f.round, f.peers, f.connectTook.Round(time.Millisecond), perPeer/1024, f.cycles, f.churnFor,
		float64(f.cycles)/f.churnFor.Seconds(), f.refused)
	fmt.Fprintf(out, "storm round %d memory: live heap after GC %.1f MB at start, %.1f MB with every peer held, %.1f MB after every peer left (%+.1f MB); "+
		"goroutines %.0f → %.0f → %.0f; RSS %.1f MB at start, %.1f MB peak, %.1f MB after\n",
		f.round, f.heap[0], f.heap[1], f.heap[2], f.heap[2]-f.heap[0], f.goroutines[0], f.goroutines[1], f.goroutines[2],
		f.rss[0], f.rss[1], f.rss[2])
}

// stormPool is the held peers: each heartbeats while held, so the Sentinel
// keeps it, and drains what the Sentinel sends, so it is never cut as a peer
// that does not read.
type stormPool struct {
	host   string
	mu     sync.Mutex
	conns  []net.Conn
	failed atomic.Int64
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func newStormPool(host string) *stormPool {
	return &stormPool{host: host, stop: make(chan struct{})}
}

func (p *stormPool) connect(ctx context.Context, n int, prefix string) error {
	// The first peers beat while the last ones connect: five thousand
	// connections take seconds on a loaded machine.
	p.wg.Add(1)
	go p.heartbeat()
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				conn, err := stormConnect(p.host, fmt.Sprintf("%s%d", prefix, i))
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					p.failed.Add(1)
					return
				}
				p.mu.Lock()
				p.conns = append(p.conns, conn)
				p.mu.Unlock()
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					_, _ = io.Copy(io.Discard, conn)
				}()
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return fmt.Errorf("connect storm peer: %w", *e)
	}
	return ctx.Err()
}

// heartbeat keeps the held peers alive: one HEARTBEAT each every second,
// to every peer connected by then, written by heartbeatShards goroutines so
// that a loaded machine still reaches every peer well within the
// Sentinel's worker timeout.
func (p *stormPool) heartbeat() {
	defer p.wg.Done()
	frames, _ := transport.Encode(transport.OpHeartbeat, 0, &transport.Heartbeat{Status: transport.HeartbeatAlive})
	beat := appendMessage(nil, frames)
	var wg sync.WaitGroup
	for shard := range heartbeatShards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-tick.C:
				}
				p.mu.Lock()
				conns := p.conns // appended to, never changed below its length
				p.mu.Unlock()
				for i := shard; i < len(conns); i += heartbeatShards {
					_ = conns[i].SetWriteDeadline(time.Now().Add(time.Second))
					if _, err := conns[i].Write(beat); err != nil {
						p.failed.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
}

const heartbeatShards = 16

func (p *stormPool) close() {
	p.once.Do(func() {
		close(p.stop)
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}

// stormConnect opens one peer: greeting, READY with identity, IDENTIFY.
func stormConnect(host, identity string) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		return nil, err
	}
	hello, err := transport.Encode(transport.OpIdentify, 0, &transport.Identify{WorkerID: identity,
		Capabilities: []string{"storm"}, MaxConcurrentJobs: 1})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(appendMessage(greetingAndReady(identity), hello)); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

// heapAfterGC asks the Sentinel's profiler (--pprof) to collect and report
// its memory: the live heap in MB and the number of goroutines.
func (s *sentinelProc) heapAfterGC(ctx context.Context, addr string) (heapMB, goroutines float64, err error) {
	body, err := httpGet(ctx, "http://"+addr+"/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return 0, 0, fmt.Errorf("heap profile: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	found := false
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, 0, fmt.Errorf("heap profile: HeapAlloc %q: %w", v, err)
			}
			heapMB, found = n/(1<<20), true
		}
	}
	if !found {
		return 0, 0, errors.New("heap profile: no HeapAlloc line (is --pprof on?)")
	}
	return heapMB, scrapeCounter(ctx, addr, "go_goroutines"), nil
}

// rssMB reads one memory line (VmRSS:, VmHWM:) of /proc/<pid>/status in MB.
func (s *sentinelProc) rssMB(field string) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return kb / 1024
		}
	}
	return 0
}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }() // read to the end: nothing to lose
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

// waitMetric polls /metrics until sample satisfies ok or ctx ends.
func waitMetric(ctx context.Context, addr, sample string, ok func(float64) bool) error {
	var last float64
	for {
		last = scrapeCounter(ctx, addr, sample)
		if ok(last) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s still %v: %w", sample, last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// storm runs the connection storm against a Sentinel of its own, with the
// profiler on (the heap after GC is read from it) and a short worker timeout.
func storm(ctx context.Context, out io.Writer, a sentinelArgs, o options) error {
	if a.curve != nil {
		return errors.New("--storm runs plaintext peers; the CURVE cost of a connection is TestRouter_ConnectionStormLeavesNoMemory's")
	}
	fmt.Fprintf(out, "machine: %d CPUs; storm of %d held peers, churn for %s\n", numCPU(), o.stormPeers, o.stormChurn)
	var err error
	if a.endpoint, err = freeEndpoint(); err != nil {
		return err
	}
	ep, err := freeEndpoint()
	if err != nil {
		return err
	}
	a.http = strings.TrimPrefix(ep, "tcp://")
	a.extra = append(a.extra, "--http", a.http, "--pprof", "--worker-timeout", stormWorkerTimeout.String(), "--heartbeat-interval", (stormWorkerTimeout / 2).String())
	s, err := startSentinel(ctx, a)
	if err != nil {
		return err
	}
	defer s.stop()
	if err := waitMetric(ctx, a.http, "casparian_up", func(v float64) bool { return v == 1 }); err != nil {
		return err
	}
	var first, last stormFigures
	for round := 1; round <= max(o.stormRounds, 1); round++ {
		f, err := runStorm(ctx, s, a, o, round)
		if err != nil {
			return err
		}
		f.print(out)
		if round == 1 {
			first = f
		}
		last = f
	}
	// What a departed peer leaves behind grows with every round; what the
	// first round's peak leaves (map and slice capacity, goroutine
	// descriptors) does not.
	fmt.Fprintf(out, "storm: live heap after GC %.1f MB at start, %.1f MB after round 1, %.1f MB after round %d: "+
		"%+.1f MB from the start, %+.1f MB kept by the rounds after the first\n",
		first.heap[0], first.heap[2], last.heap[2], last.round, last.heap[2]-first.heap[0], last.heap[2]-first.heap[2])
	return nil
}
