package transport

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/testwait"
)

// stormPeer is a minimal ZMTP DEALER: greeting, READY with an identity, and
// one message, so that zmq4's ROUTER has adopted the connection (and its
// reader delivered the message) before the peer hangs up. Over CURVE the
// same plaintext goes through the client side of curveConn.
func stormDial(addr, identity string, curve *CurveClient) (net.Conn, error) {
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(20 * time.Second))
	props := [][2]string{{"Socket-Type", "DEALER"}, {"Identity", identity}}
	conn := raw
	if curve != nil {
		cc, err := dialCurve(raw, curve, curveMetadata(props...), 1<<20)
		if err != nil {
			_ = raw.Close()
			return nil, err
		}
		conn = cc
	}
	msg := nullGreeting()
	msg = appendCommand(msg, append([]byte("\x05READY"), curveMetadata(props...)...))
	hdr := AppendHeader(nil, OpHeartbeat, 0, 2)
	msg = append(msg, flagMore, byte(len(hdr)))
	msg = append(msg, hdr...)
	msg = append(msg, 0, 2, '{', '}')
	if _, err := conn.Write(msg); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return raw, nil
}

// heapAfterGC is the live heap once the collector has run twice (finalizers
// of closed sockets run in between).
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestRouter_ConnectionStormLeavesNoMemory connects thousands of peers, in
// waves, plaintext and CURVE, lets each deliver one message, closes them all
// and checks that the live heap comes back to where it started: nothing is
// kept per departed peer (guard buffers, zmq4's connection lists, the
// liveness table). It also reports what one idle connected peer costs.
func TestRouter_ConnectionStormLeavesNoMemory(t *testing.T) {
	plain, curved, waves := 2000, 200, 3
	if testing.Short() {
		plain, curved, waves = 500, 50, 2
	}
	keys := func() (pub, sec CurveKey) {
		pub, sec, err := GenerateCurveKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		return pub, sec
	}
	serverPub, serverSec := keys()
	clientPub, clientSec := keys()
	curveServer := NewCurveServer(serverSec, NewAuthorizedKeys(clientPub))
	client := NewCurveClient(serverPub, clientSec)

	var delivered atomic.Int64
	start := func(opts RouterOptions) *Router {
		r, err := ListenRouter("tcp://127.0.0.1:0", opts)
		if err != nil {
			t.Fatal(err)
		}
		r.Start(func(in Inbound) { delivered.Add(1) })
		return r
	}
	plainRouter := start(RouterOptions{})
	defer plainRouter.Close()
	curveRouter := start(RouterOptions{Curve: curveServer})
	defer curveRouter.Close()

	base := heapAfterGC()
	var perPlain, perCurve float64
	for wave := range waves {
		// Fresh identities every wave, as reconnecting clients without a
		// fixed identity have.
		var conns []net.Conn
		for _, set := range []struct {
			r     *Router
			n     int
			curve *CurveClient
			cost  *float64
		}{{plainRouter, plain, nil, &perPlain}, {curveRouter, curved, client, &perCurve}} {
			before := heapAfterGC()
			want := delivered.Load() + int64(set.n)
			got := dialMany(t, strings.TrimPrefix(set.r.Endpoint(), "tcp://"), set.n, set.curve, fmt.Sprintf("w%d-", wave))
			testwait.Eventually(t, 30*time.Second, "every peer's message delivered", func() bool { return delivered.Load() >= want })
			*set.cost = float64(heapAfterGC()-before) / float64(set.n)
			conns = append(conns, got...)
		}
		for _, c := range conns {
			_ = c.Close()
		}
		for _, r := range []*Router{plainRouter, curveRouter} {
			testwait.Eventually(t, 30*time.Second, "every connection gone", func() bool { return r.Connections() == 0 })
		}
	}
	t.Logf("heap per idle connected peer: plaintext %.0f bytes, CURVE %.0f bytes", perPlain, perCurve)

	const slack = 10 << 20
	var after uint64
	deadline := time.Now().Add(20 * time.Second)
	for {
		after = heapAfterGC()
		if after < base+slack || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("live heap: %.1f MB before, %.1f MB after %d waves of %d plaintext and %d CURVE peers",
		float64(base)/(1<<20), float64(after)/(1<<20), waves, plain, curved)
	if after >= base+slack {
		t.Fatalf("live heap %.1f MB after every peer left, %.1f MB at the start: more than 10 MB kept",
			float64(after)/(1<<20), float64(base)/(1<<20))
	}
}

// dialMany connects n storm peers from a few goroutines.
func dialMany(t *testing.T, addr string, n int, curve *CurveClient, prefix string) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := stormDial(addr, fmt.Sprintf("%s%d", prefix, i), curve)
				if err != nil {
					failed.Store(&err)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		t.Fatalf("dial: %v", *err)
	}
	return conns
}
