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
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testworker"
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
	sentineltest.Eventually(t, 10*time.Second, "job completed", func() bool { return e.Job(id).Status == db.StatusCompleted })
	if got := w.Received(); len(got) != 1 || got[0].Dispatch.SourceCode != rows[0].SourceCode {
		t.Fatalf("dispatched %+v", got)
	}
}

func TestCLI_PublishTimesOutClearly(t *testing.T) {
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
