package main

import (
	"context"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// wasmModule is the smallest valid WebAssembly module: magic and version.
var wasmModule = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

func keygenAt(t *testing.T, prefix string) {
	t.Helper()
	code, out, errOut := casparian(t, nil, "keygen", "--out", prefix)
	if code != exitOK || !strings.Contains(out, prefix+".pub") {
		t.Fatalf("keygen: exit %d\n%s%s", code, out, errOut)
	}
}

func TestCLI_KeygenAndPublish(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys", "ada")
	keygenAt(t, keys)
	if st, err := os.Stat(keys + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v, %v", st, err)
	}
	if code, _, errOut := casparian(t, nil, "keygen", "--out", keys); code != exitError || !strings.Contains(errOut, "--force") {
		t.Fatalf("keygen over existing keys: exit %d, %s", code, errOut)
	}
	stranger := filepath.Join(dir, "stranger")
	keygenAt(t, stranger)

	e := sentineltest.Start(t, func(c *config.Config) { c.TrustedKeys = keys + ".pub" })
	w := e.Worker(testworker.Options{})
	module := filepath.Join(dir, "wc.wasm")
	if err := os.WriteFile(module, wasmModule, 0o644); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, "wc.lock")
	if err := os.WriteFile(lock, []byte("dep==1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	publish := func(key string, extra ...string) (int, string, string) {
		args := append([]string{"publish", module, "--name", "wc", "--version", "1.0.0", "--key", key,
			"--sentinel", e.Endpoint, "--lockfile", lock, "--publisher", "ada", "--email", "ada@example.com"}, extra...)
		return casparian(t, nil, args...)
	}

	code, out, errOut := publish(keys + ".key")
	if code != exitOK || !strings.Contains(out, "Deployed wc v1.0.0 (manifest ") {
		t.Fatalf("publish: exit %d\n%s%s", code, out, errOut)
	}
	rows, err := e.Store.PluginManifestRows(context.Background(), "wc")
	if err != nil || len(rows) != 1 || rows[0].Status != "ACTIVE" ||
		rows[0].SourceCode != base64.StdEncoding.EncodeToString(wasmModule) || rows[0].Signature == "" {
		t.Fatalf("stored %+v, %v", rows, err)
	}
	if code, out, _ := publish(keys + ".key"); code != exitOK || !strings.Contains(out, "already deployed") {
		t.Fatalf("second publish: exit %d, %s", code, out)
	}
	if code, _, errOut := publish(stranger+".key", "--version", "1.0.1"); code != exitError ||
		!strings.Contains(errOut, "casparian publish: deploy rejected: signature does not verify") {
		t.Fatalf("publish with an untrusted key: exit %d, %s", code, errOut)
	}
	if rows, _ := e.Store.PluginManifestRows(context.Background(), "wc"); len(rows) != 1 {
		t.Fatalf("%d manifests after the refused publish", len(rows))
	}

	// A job of the published plugin runs on a worker with the new code.
	id := e.Enqueue(e.File("a.txt", "x\n"), "wc", 0)
	testwait.Eventually(t, 10*time.Second, "job completed", func() bool { return e.Job(id).Status == job.StatusCompleted })
	if got := w.Received(); len(got) != 1 || got[0].Dispatch.SourceCode != rows[0].SourceCode {
		t.Fatalf("dispatched %+v", got)
	}
}

func TestCLI_PublishTimesOutClearly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keys := filepath.Join(dir, "k")
	keygenAt(t, keys)
	module := filepath.Join(dir, "p.wasm")
	if err := os.WriteFile(module, wasmModule, 0o644); err != nil {
		t.Fatal(err)
	}
	// A TCP peer that accepts and never speaks: nobody will ever answer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	defer func() {
		ln.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	code, _, errOut := casparian(t, nil, "publish", module, "--name", "p", "--version", "1", "--key", keys+".key",
		"--sentinel", "tcp://"+ln.Addr().String(), "--timeout", "1s", "--publisher", "ada")
	if code != exitError || !strings.Contains(errOut, "timed out: no reply from the Sentinel at tcp://"+ln.Addr().String()+" within 1s") {
		t.Fatalf("exit %d, %s", code, errOut)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("gave up after %s", took)
	}
}

func TestCLI_PublishUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"publish", "f.wasm", "--version", "1", "--key", "k"},
		{"publish", "f.wasm", "--name", "p", "--version", "1"},
		{"publish", "--name", "p", "--version", "1", "--key", "k"},
	} {
		if code, _, _ := casparian(t, nil, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// curveKeygenAt runs keygen --curve and returns the public key it printed.
func curveKeygenAt(t *testing.T, prefix string) transport.CurveKey {
	t.Helper()
	code, out, errOut := casparian(t, nil, "keygen", "--curve", "--out", prefix)
	if code != exitOK {
		t.Fatalf("keygen --curve: exit %d\n%s%s", code, out, errOut)
	}
	pub, err := transport.ReadCurveKeyFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{prefix + ".key (keep it secret)", pub.String(), "fingerprint: " + pub.Fingerprint(),
		"add " + prefix + ".pub to the Sentinel's --authorized-workers", "to every client's --sentinel-key"} {
		if !strings.Contains(out, want) {
			t.Errorf("keygen --curve output lacks %q:\n%s", want, out)
		}
	}
	return pub
}

func TestCLI_KeygenCurve(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "keys", "worker-1")
	pub := curveKeygenAt(t, prefix)
	sec, err := transport.ReadCurveKeyFile(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if transport.CurvePublicKey(sec) != pub {
		t.Fatal("the .pub does not hold the public key of the .key")
	}
	if st, err := os.Stat(prefix + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret key file: %v, %v; want mode 0600", st, err)
	}
	if st, err := os.Stat(prefix + ".pub"); err != nil || st.Mode().Perm()&0o044 != 0o044 {
		t.Fatalf("public key file: %v, %v; want it readable by all", st, err)
	}
	raw, _ := os.ReadFile(prefix + ".key")
	if code, out, _ := casparian(t, nil, "keygen", "--curve", "--out", prefix); code != exitError {
		t.Fatalf("keygen --curve over existing keys: exit %d, %s", code, out)
	}
	if again, _ := os.ReadFile(prefix + ".key"); string(again) != string(raw) {
		t.Fatal("a refused keygen changed the secret key")
	}
	// --force replaces the pair, and a looser mode on the old file does not
	// survive.
	if err := os.Chmod(prefix+".key", 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := casparian(t, nil, "keygen", "--curve", "--out", prefix, "--force"); code != exitOK {
		t.Fatalf("keygen --curve --force: exit %d\n%s%s", code, out, errOut)
	}
	if st, err := os.Stat(prefix + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("replaced secret key file: %v, %v; want mode 0600", st, err)
	}
	if now, err := transport.ReadCurveKeyFile(prefix + ".pub"); err != nil || now == pub {
		t.Fatalf("--force kept the old key (%v)", err)
	}

	// Without --out, the default prefix names what the key is for.
	t.Chdir(dir)
	if code, out, errOut := casparian(t, nil, "keygen", "--curve"); code != exitOK || !strings.Contains(out, "casparian-curve.pub") {
		t.Fatalf("keygen --curve without --out: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := transport.ReadCurveKeyFile(filepath.Join(dir, "casparian-curve.key")); err != nil {
		t.Fatal(err)
	}
}

// TestCLI_PublishOverCurve publishes to a Sentinel with CURVE on: with the
// keys from flags, then from the environment with the Sentinel's key given
// inline; without keys, or with a key the Sentinel does not list, nothing
// is deployed and the error says why.
func TestCLI_PublishOverCurve(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	signing := filepath.Join(dir, "ada")
	keygenAt(t, signing)
	sentinelKey := curveKeygenAt(t, filepath.Join(dir, "sentinel"))
	adaConn := filepath.Join(dir, "ada-conn")
	curveKeygenAt(t, adaConn)
	workerConn := filepath.Join(dir, "worker")
	curveKeygenAt(t, workerConn)
	stranger := filepath.Join(dir, "stranger")
	curveKeygenAt(t, stranger)
	var authorized []byte
	for _, p := range []string{adaConn, workerConn} {
		b, err := os.ReadFile(p + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		authorized = append(authorized, b...)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized"), authorized, 0o644); err != nil {
		t.Fatal(err)
	}

	e := sentineltest.Start(t, func(c *config.Config) {
		c.TrustedKeys = signing + ".pub"
		c.CurveSecretKey = filepath.Join(dir, "sentinel.key")
		c.AuthorizedWorkers = filepath.Join(dir, "authorized")
	})
	module := filepath.Join(dir, "wc.wasm")
	if err := os.WriteFile(module, wasmModule, 0o644); err != nil {
		t.Fatal(err)
	}
	publish := func(env map[string]string, extra ...string) (int, string, string) {
		args := append([]string{"publish", module, "--name", "wc", "--key", signing + ".key",
			"--sentinel", e.Endpoint, "--publisher", "ada", "--timeout", "3s"}, extra...)
		return casparian(t, env, args...)
	}

	code, out, errOut := publish(nil, "--version", "1.0.0", "--sentinel-key", filepath.Join(dir, "sentinel.pub"),
		"--curve-secret-key", adaConn+".key")
	if code != exitOK || !strings.Contains(out, "Deployed wc v1.0.0 (manifest ") {
		t.Fatalf("publish over CURVE: exit %d\n%s%s", code, out, errOut)
	}
	env := map[string]string{"CASPARIAN_SENTINEL_KEY": sentinelKey.String(), "CASPARIAN_CURVE_SECRET_KEY": adaConn + ".key"}
	if code, out, errOut := publish(env, "--version", "1.0.0"); code != exitOK || !strings.Contains(out, "already deployed") {
		t.Fatalf("publish with the keys from the environment: exit %d\n%s%s", code, out, errOut)
	}

	if code, _, errOut := publish(nil, "--version", "1.0.1", "--sentinel-key", sentinelKey.String(),
		"--curve-secret-key", stranger+".key"); code != exitError ||
		!strings.Contains(errOut, "timed out: could not connect to the Sentinel within 3s") ||
		!strings.Contains(errOut, "is it in its --authorized-workers?") {
		t.Fatalf("publish with an unlisted key: exit %d, %s", code, errOut)
	}
	if code, _, errOut := publish(nil, "--version", "1.0.1"); code != exitError ||
		!strings.Contains(errOut, "if the Sentinel runs with CURVE, give --sentinel-key and --curve-secret-key") {
		t.Fatalf("publish in plaintext to a CURVE Sentinel: exit %d, %s", code, errOut)
	}
	if code, _, errOut := publish(nil, "--version", "1.0.1", "--sentinel-key", sentinelKey.String()); code != exitUsage ||
		!strings.Contains(errOut, "--sentinel-key needs --curve-secret-key") {
		t.Fatalf("publish with half the keys: exit %d, %s", code, errOut)
	}
	rows, err := e.Store.PluginManifestRows(context.Background(), "wc")
	if err != nil || len(rows) != 1 || rows[0].Version != "1.0.0" {
		t.Fatalf("stored %+v, %v; want only v1.0.0", rows, err)
	}

	// A test worker with its own authorized key runs the published plugin.
	secret, err := transport.ReadCurveKeyFile(workerConn + ".key")
	if err != nil {
		t.Fatal(err)
	}
	w := e.Worker(testworker.Options{Curve: transport.NewCurveClient(sentinelKey, secret)})
	id := e.Enqueue(e.File("a.txt", "x\n"), "wc", 0)
	testwait.Eventually(t, 10*time.Second, "job completed", func() bool { return e.Job(id).Status == job.StatusCompleted })
	if got := w.Received(); len(got) != 1 || got[0].Dispatch.SourceCode != rows[0].SourceCode {
		t.Fatalf("dispatched %+v", got)
	}
}
