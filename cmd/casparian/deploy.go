package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/casparian/sentinel/internal/deploy"
	"github.com/casparian/sentinel/transport"
)

// defaultSentinel is the ZeroMQ endpoint publish sends DEPLOY to when neither
// --sentinel nor CASPARIAN_SENTINEL says otherwise.
const defaultSentinel = "tcp://127.0.0.1:5555"

// wasmMagic starts every WebAssembly binary module.
var wasmMagic = []byte{0x00, 'a', 's', 'm'}

// Default --out of keygen, by kind of key.
const (
	defaultKeyPrefix   = "casparian-publisher"
	defaultCurvePrefix = "casparian-curve"
)

// keygen writes a new key pair, PREFIX.key (mode 0600) and PREFIX.pub: an
// Ed25519 publisher key (PKCS #8 and PKIX PEM; the .pub is what the
// Sentinel's --trusted-keys reads) or, with --curve, a CurveZMQ key (Z85; the
// .pub goes into the Sentinel's --authorized-workers, or, for the Sentinel's
// own key, to every client's --sentinel-key).
func keygen(_ context.Context, c *cli, _ []string) error {
	curve := *c.flag["curve"]
	prefix := *c.str["out"]
	if prefix == "" {
		prefix = defaultKeyPrefix
		if curve {
			prefix = defaultCurvePrefix
		}
	}
	privPath, pubPath := prefix+".key", prefix+".pub"
	if !*c.flag["force"] {
		for _, p := range []string{privPath, pubPath} {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s exists; use --force to replace it", p)
			}
		}
	}
	if dir := filepath.Dir(prefix); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if curve {
		return keygenCurve(c, prefix)
	}
	privPEM, pubPEM, err := deploy.GenerateKey()
	if err != nil {
		return err
	}
	// Remove first so an existing file's looser mode is not kept.
	_ = os.Remove(privPath)
	if err := os.WriteFile(privPath, privPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(pubPath, pubPEM, 0o644); err != nil {
		return err
	}
	pub, err := deploy.ParsePublicKeys(pubPEM)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "private key: %s (keep it secret)\npublic key:  %s (give it to the Sentinel's --trusted-keys)\nfingerprint: %s\n",
		privPath, pubPath, deploy.Fingerprint(pub[0]))
	return nil
}

// keygenCurve writes a CurveZMQ key pair. One kind of key serves every
// party: which one it is depends on where its files go, so both uses are
// printed.
func keygenCurve(c *cli, prefix string) error {
	pub, sec, err := transport.GenerateCurveKeyPair()
	if err != nil {
		return err
	}
	// Without --force keygen has checked that neither file exists; with it,
	// the old pair goes, and WriteCurveKeyPair creates both files afresh
	// (it never overwrites, so an old file's looser mode is not kept).
	for _, p := range []string{prefix + ".key", prefix + ".pub"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	secPath, pubPath, err := transport.WriteCurveKeyPair(prefix, pub, sec)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, `secret key:  %s (keep it secret)
public key:  %s
             %s
fingerprint: %s
For a worker or a publisher: add %s to the Sentinel's --authorized-workers, and run the
  client with --curve-secret-key %s --sentinel-key <the Sentinel's .pub or key>.
For the Sentinel: run it with --curve-secret-key %s, and give %s (or the key above)
  to every client's --sentinel-key.
`, secPath, pubPath, pub, pub.Fingerprint(), pubPath, secPath, secPath, pubPath)
	return nil
}

// publish sends FILE as a DEPLOY and prints the Sentinel's answer. A .wasm
// file (or any file starting with the WebAssembly magic) is sent base64
// encoded; anything else must be UTF-8 text and is sent as it is.
func publish(ctx context.Context, c *cli, args []string) error {
	name, version := *c.str["name"], *c.str["version"]
	if name == "" || version == "" {
		return usagef("--name and --version are required")
	}
	unsigned := *c.flag["unsigned"]
	keyPath := *c.str["key"]
	if keyPath == "" && !unsigned {
		return usagef("--key is required (or --unsigned, for a Sentinel run with --allow-unsigned)")
	}
	publisher := *c.str["publisher"]
	if publisher == "" {
		publisher = c.getenv("USER")
	}
	if publisher == "" {
		return usagef("--publisher is required (USER is not set)")
	}
	source, err := readSource(args[0])
	if err != nil {
		return err
	}
	var lockfile string
	if p := *c.str["lockfile"]; p != "" {
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !utf8.Valid(raw) {
			return fmt.Errorf("lockfile %s is not UTF-8 text", p)
		}
		lockfile = string(raw)
	}
	var priv []byte
	if !unsigned {
		raw, err := os.ReadFile(keyPath)
		if err != nil {
			return err
		}
		if priv, err = deploy.ParsePrivateKey(raw); err != nil {
			return fmt.Errorf("%s: %w", keyPath, err)
		}
	}
	d := deploy.NewDeploy(deploy.Artifact{Plugin: name, Version: version, Source: source, Lockfile: lockfile,
		Publisher: publisher, Email: *c.str["email"]}, priv)
	d.Shadow = *c.flag["shadow"]
	if n := *c.num["shadow-files"]; n != 0 {
		if n < 0 || !d.Shadow {
			return usagef("--shadow-files takes a positive number, with --shadow")
		}
		d.ShadowFiles = int(n)
	}
	if n := len(d.SourceCode) + len(d.LockfileContent); n > transport.DefaultMaxPayload-64<<10 {
		// The Sentinel drops an oversized frame with the connection, before
		// it could answer; say so now rather than after the timeout.
		fmt.Fprintf(c.stderr, "casparian publish: warning: the DEPLOY is about %d MiB; a Sentinel with the default "+
			"--max-message-size (16 MiB) drops it without a reply\n", n>>20)
	}
	endpoint := *c.str["sentinel"]
	if e := c.getenv("CASPARIAN_SENTINEL"); e != "" && endpoint == defaultSentinel {
		endpoint = e
	}
	sentinelKey := flagOrEnv(c, "sentinel-key", "CASPARIAN_SENTINEL_KEY")
	secretKey := flagOrEnv(c, "curve-secret-key", "CASPARIAN_CURVE_SECRET_KEY")
	curve, err := transport.LoadCurveClient(sentinelKey, secretKey)
	if err != nil {
		if (sentinelKey == "") != (secretKey == "") {
			return usagef("%v", err)
		}
		return err
	}
	reply, err := sendDeploy(ctx, endpoint, d, curve)
	var notConnected *connectError
	if errors.Is(err, context.DeadlineExceeded) {
		if curve != nil && errors.As(err, &notConnected) {
			// A refused CURVE handshake is a dial that is retried until
			// the timeout; the error carries the last refusal's reason.
			return fmt.Errorf("timed out: could not connect to the Sentinel within %s: %w", c.opts.timeout, err)
		}
		return fmt.Errorf("timed out: no reply from the Sentinel at %s within %s (is it running, and is that its --bind?)",
			endpoint, c.opts.timeout)
	}
	if curve == nil && errors.As(err, &notConnected) {
		// zmq4 fails a plaintext dial at once when the ZMTP handshake does:
		// most likely the Sentinel speaks CURVE.
		return fmt.Errorf("%w (if the Sentinel runs with CURVE, give --sentinel-key and --curve-secret-key)", err)
	}
	if err != nil {
		return err
	}
	switch p := reply.(type) {
	case *transport.Ack:
		if !p.Success {
			return errors.New(p.Message)
		}
		if p.PluginID != nil {
			fmt.Fprintf(c.stdout, "%s (manifest %d)\n", p.Message, *p.PluginID)
		} else {
			fmt.Fprintln(c.stdout, p.Message)
		}
		return nil
	case *transport.Err:
		return errors.New(p.Message) // "deploy rejected: <why>" or "deploy failed: <why>"
	}
	return fmt.Errorf("unexpected reply %T", reply)
}

// readSource reads the plugin file as the string DEPLOY carries.
func readSource(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if len(raw) == 0 {
		return "", fmt.Errorf("%s is empty", path)
	}
	if strings.EqualFold(filepath.Ext(path), ".wasm") || bytes.HasPrefix(raw, wasmMagic) {
		return base64.StdEncoding.EncodeToString(raw), nil
	}
	if !utf8.Valid(raw) {
		return "", fmt.Errorf("%s is neither a WebAssembly module nor UTF-8 text", path)
	}
	return string(raw), nil
}

// flagOrEnv is a string flag's value, or the environment variable's when
// the flag is empty.
func flagOrEnv(c *cli, name, env string) string {
	if v := *c.str[name]; v != "" {
		return v
	}
	return c.getenv(env)
}

// connectError is a DEPLOY that could not be sent because the DEALER never
// connected.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// sendDeploy sends d as a DEALER tool, over CURVE when curve is set, and
// waits, until ctx ends, for the ACK or ERR. Other messages (none are
// expected) are skipped.
func sendDeploy(ctx context.Context, endpoint string, d *transport.Deploy, curve *transport.CurveClient) (any, error) {
	frames, err := transport.Encode(transport.OpDeploy, 0, d)
	if err != nil {
		return nil, err
	}
	dealer, err := transport.DialDealer(ctx, endpoint, transport.DealerOptions{MaxPayload: len(frames[1]) + 1<<20, Curve: curve})
	if err != nil {
		return nil, &connectError{err: err}
	}
	defer func() { _ = dealer.Close() }() // the reply, or its absence, is the result
	type result struct {
		payload any
		err     error
	}
	got := make(chan result, 1)
	go func() {
		if err := dealer.SendFrames(frames); err != nil {
			got <- result{err: fmt.Errorf("send DEPLOY: %w", err)}
			return
		}
		for {
			m, err := dealer.Recv()
			if errors.Is(err, transport.ErrReconnected) {
				continue
			}
			if err != nil {
				got <- result{err: err}
				return
			}
			if m.Opcode != transport.OpAck && m.Opcode != transport.OpErr {
				continue
			}
			p, err := transport.DecodePayload(m.Opcode, m.Payload)
			got <- result{payload: p, err: err}
			return
		}
	}()
	select {
	case r := <-got:
		return r.payload, r.err
	case <-ctx.Done():
		_ = dealer.Close() // unblocks Recv; the goroutine's send lands in the buffer
		<-got
		return nil, ctx.Err()
	}
}
