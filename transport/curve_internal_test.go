package transport

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestZ85_RFC32Vector(t *testing.T) {
	raw := []byte{0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B}
	got, err := z85Encode(raw)
	if err != nil || got != "HelloWorld" {
		t.Fatalf("z85Encode = %q, %v; want HelloWorld", got, err)
	}
	back, err := z85Decode("HelloWorld")
	if err != nil || !bytes.Equal(back, raw) {
		t.Fatalf("z85Decode = %x, %v; want %x", back, err, raw)
	}
}

func TestZ85_RefusesBadInput(t *testing.T) {
	for _, text := range []string{"Hell", "Hello Worl", "%%%%%", "#####"} {
		if _, err := z85Decode(text); err == nil {
			t.Errorf("z85Decode(%q) = nil error", text)
		}
	}
	if _, err := z85Encode([]byte{1, 2, 3}); err == nil {
		t.Error("z85Encode of 3 bytes = nil error")
	}
}

// TestCurveKey_LibzmqTestVector checks the key text against the client key
// pair from libzmq's own CURVE tests (tests/testutil_security.cpp).
func TestCurveKey_LibzmqTestVector(t *testing.T) {
	secret, err := ParseCurveKey("D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := CurvePublicKey(secret).String(), "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"; got != want {
		t.Fatalf("public key of libzmq's test secret = %s, want %s", got, want)
	}
}

// handshakePair runs the client and server handshakes against each other
// over a pipe and returns both sessions.
func handshakePair(t *testing.T, server *CurveServer, client *CurveClient) (*curveSession, *curveSession, error, error) {
	t.Helper()
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	_ = a.SetDeadline(time.Now().Add(5 * time.Second))
	_ = b.SetDeadline(time.Now().Add(5 * time.Second))
	type res struct {
		s   *curveSession
		err error
	}
	done := make(chan res, 1)
	go func() {
		s, err := server.serverHandshake(b, bufio.NewReader(b), func(string) bool { return false })
		if err != nil {
			b.Close() // unblock the client
		}
		done <- res{s, err}
	}()
	cs, cerr := client.clientHandshake(a, bufio.NewReader(a), curveMetadata([2]string{"Socket-Type", "DEALER"}, [2]string{"Identity", "w1"}))
	if cerr != nil {
		a.Close()
	}
	sr := <-done
	return cs, sr.s, cerr, sr.err
}

func TestCurveHandshake_SessionsAgreeAndMessagesOpen(t *testing.T) {
	sPub, sSec, _ := GenerateCurveKeyPair()
	cPub, cSec, _ := GenerateCurveKeyPair()
	server := NewCurveServer(sSec, NewAuthorizedKeys(cPub))
	cs, ss, cerr, serr := handshakePair(t, server, NewCurveClient(sPub, cSec))
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	if ss.peer != cPub || cs.peer != sPub {
		t.Fatalf("peers: server sees %s, client sees %s", ss.peer.Fingerprint(), cs.peer.Fingerprint())
	}
	if !bytes.Contains(ss.metadata, []byte("Identity")) || !bytes.Contains(cs.metadata, []byte("ROUTER")) {
		t.Fatalf("metadata: server got %q, client got %q", ss.metadata, cs.metadata)
	}
	// Both directions, then a replay of the last message.
	frame, _ := cs.sealMessage(nil, msgFlagMore, []byte("hello"), nil)
	plain, err := ss.openMessage(nil, frame[2:])
	if err != nil || plain[0] != msgFlagMore || string(plain[1:]) != "hello" {
		t.Fatalf("client → server: %q, %v", plain, err)
	}
	if _, err := ss.openMessage(nil, frame[2:]); err == nil || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("replayed MESSAGE: %v, want a refusal", err)
	}
	frame, _ = ss.sealMessage(nil, 0, bytes.Repeat([]byte("x"), 300), nil)
	if frame[0] != flagLong {
		t.Fatalf("a 300-byte body needs a long frame, flags %#x", frame[0])
	}
	if plain, err = cs.openMessage(nil, frame[9:]); err != nil || len(plain) != 301 {
		t.Fatalf("server → client: %d bytes, %v", len(plain), err)
	}
}

func TestCurveHandshake_Refusals(t *testing.T) {
	sPub, sSec, _ := GenerateCurveKeyPair()
	cPub, cSec, _ := GenerateCurveKeyPair()
	otherPub, otherSec, _ := GenerateCurveKeyPair()
	t.Run("WrongServerKey", func(t *testing.T) {
		server := NewCurveServer(sSec, NewAuthorizedKeys(cPub))
		_, _, cerr, serr := handshakePair(t, server, NewCurveClient(otherPub, cSec))
		if cerr == nil || serr == nil || !strings.Contains(serr.Error(), "HELLO does not open") {
			t.Fatalf("client %v, server %v; want both to fail at HELLO", cerr, serr)
		}
	})
	t.Run("UnlistedClientKey", func(t *testing.T) {
		server := NewCurveServer(sSec, NewAuthorizedKeys(cPub))
		_, _, cerr, serr := handshakePair(t, server, NewCurveClient(sPub, otherSec))
		ce, ok := serr.(*CurveError)
		if !ok || ce.Reason != RejectUnauthorizedKey || ce.Key != otherPub {
			t.Fatalf("server error %v, want an unauthorized_key refusal naming the key", serr)
		}
		if cerr == nil || !strings.Contains(cerr.Error(), "refused this client's key") {
			t.Fatalf("client error %v, want it to say its key was refused", cerr)
		}
	})
}

// FuzzCurveServerHandshake feeds arbitrary bytes to the server side of the
// handshake, after a valid client greeting: it must never panic, allocate
// past its limit, or accept (nobody can forge the boxes). Seeds are real
// HELLOs and INITIATEs, whole and cut short.
func FuzzCurveServerHandshake(f *testing.F) {
	sPub, sSec, _ := GenerateCurveKeyPair()
	cPub, cSec, _ := GenerateCurveKeyPair()
	server := NewCurveServer(sSec, NewAuthorizedKeys(cPub))
	client := NewCurveClient(sPub, cSec)
	tPub, tSec, _ := GenerateCurveKeyPair()
	hello := appendCommand(nil, curveHello((*[32]byte)(&sPub), (*[32]byte)(&tPub), (*[32]byte)(&tSec), 1))
	f.Add(hello)
	f.Add(hello[:100])
	cookie := make([]byte, curveCookieSize)
	initiate := appendCommand(nil, curveInitiate(cookie, (*[32]byte)(&sPub), (*[32]byte)(&tPub), (*[32]byte)(&client.Public),
		(*[32]byte)(&client.Secret), (*[32]byte)(&tPub), (*[32]byte)(&tSec), 2, curveMetadata([2]string{"Socket-Type", "DEALER"})))
	f.Add(append(append([]byte(nil), hello...), initiate...))
	f.Add([]byte{flagCommand | flagLong, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF})
	f.Add(appendCommand(nil, curveErrorCommand("nope")))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := append(curveGreeting(false), data...)
		sess, err := server.serverHandshake(io.Discard, bufio.NewReader(bytes.NewReader(in)), func(string) bool { return false })
		if err == nil || sess != nil {
			t.Fatalf("a handshake from fuzzed bytes succeeded")
		}
	})
}

// tcpPair returns the two ends of a loopback TCP connection (a pipe would
// deadlock: both sides write their greeting before reading).
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	return a, b
}
