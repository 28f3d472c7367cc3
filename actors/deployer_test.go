package actors_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/deploy"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// publisher is a key pair whose public half can be trusted by a Sentinel.
type publisher struct {
	priv    ed25519.PrivateKey
	pubPath string
}

func newPublisher(t *testing.T) publisher {
	t.Helper()
	privPEM, pubPEM, err := deploy.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := deploy.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "publisher.pub")
	if err := os.WriteFile(p, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return publisher{priv: priv, pubPath: p}
}

// artifact is a deployable plugin whose source is base64 like a wasm module's.
func artifact(plugin, version, code, lockfile string) deploy.Artifact {
	return deploy.Artifact{Plugin: plugin, Version: version, Source: base64.StdEncoding.EncodeToString([]byte(code)),
		Lockfile: lockfile, Publisher: "ada", Email: "ada@example.com"}
}

// tool is a publish tool's DEALER: it never identifies.
type tool struct {
	t *testing.T
	d *transport.Dealer
	c chan transport.Message
}

func newTool(t *testing.T, endpoint string) *tool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := transport.DialDealer(ctx, endpoint, transport.DealerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tl := &tool{t: t, d: d, c: make(chan transport.Message, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := d.Recv()
			if errors.Is(err, transport.ErrReconnected) {
				continue
			}
			if err != nil {
				return
			}
			tl.c <- m
		}
	}()
	t.Cleanup(func() { d.Close(); <-done })
	return tl
}

// send sends frames and returns the one reply, failing if a second one
// follows within a short while.
func (tl *tool) send(frames [][]byte) (transport.Opcode, any) {
	tl.t.Helper()
	if err := tl.d.SendFrames(frames); err != nil {
		tl.t.Fatal(err)
	}
	var m transport.Message
	select {
	case m = <-tl.c:
	case <-time.After(10 * time.Second):
		tl.t.Fatal("no reply to DEPLOY")
	}
	select {
	case extra := <-tl.c:
		tl.t.Fatalf("a second reply: %s", extra.Opcode)
	case <-time.After(200 * time.Millisecond):
	}
	p, err := transport.DecodePayload(m.Opcode, m.Payload)
	if err != nil {
		tl.t.Fatal(err)
	}
	return m.Opcode, p
}

func (tl *tool) deploy(d *transport.Deploy) (transport.Opcode, any) {
	tl.t.Helper()
	frames, err := transport.Encode(transport.OpDeploy, 0, d)
	if err != nil {
		tl.t.Fatal(err)
	}
	return tl.send(frames)
}

func mustAck(t *testing.T, op transport.Opcode, p any, want string) *transport.Ack {
	t.Helper()
	ack, ok := p.(*transport.Ack)
	if op != transport.OpAck || !ok || !ack.Success || !strings.Contains(ack.Message, want) || ack.PluginID == nil {
		t.Fatalf("reply %s %+v, want ACK saying %q", op, p, want)
	}
	return ack
}

func manifests(t *testing.T, h *harness, plugin string) []db.ManifestRow {
	t.Helper()
	rows, err := h.Store.PluginManifestRows(context.Background(), plugin)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestDeployer_PublishStoreSupersedeAndReload(t *testing.T) {
	t.Parallel()
	pub := newPublisher(t)
	h := newHarness(t, func(c *config.Config) { c.TrustedKeys = pub.pubPath })
	w := h.Worker(testworker.Options{Capabilities: []string{"builtin", "*"}})
	testwait.Eventually(t, 5*time.Second, "worker registered", func() bool { ws, _ := h.Sentinel.Workers(time.Second); return len(ws) == 1 })
	tl := newTool(t, h.Endpoint)
	ctx := context.Background()

	v1 := deploy.NewDeploy(artifact("wc", "1.0.0", "module v1", "dep==1\n"), pub.priv)
	op, p := tl.deploy(v1)
	ack := mustAck(t, op, p, "Deployed wc v1.0.0")
	rows := manifests(t, h, "wc")
	if len(rows) != 1 || rows[0].ID != *ack.PluginID || rows[0].Status != "ACTIVE" || rows[0].Signature != v1.Signature ||
		rows[0].SourceCode != v1.SourceCode || rows[0].ArtifactHash != v1.ArtifactHash || rows[0].SourceHash != v1.ArtifactHash ||
		rows[0].EnvHash != v1.EnvHash || rows[0].PublisherID == 0 || rows[0].DeployedAt.IsZero() {
		t.Fatalf("stored %+v", rows)
	}
	if lock, err := h.Store.EnvironmentLockfile(ctx, v1.EnvHash); err != nil || lock != "dep==1\n" {
		t.Fatalf("environment: %q, %v", lock, err)
	}
	testwait.Eventually(t, 5*time.Second, "RELOAD reached the worker", func() bool { return count(w.Events(), "reload") == 1 })

	// The same content again: idempotent, no new row, no RELOAD.
	op, p = tl.deploy(v1)
	mustAck(t, op, p, "already deployed")
	if rows := manifests(t, h, "wc"); len(rows) != 1 {
		t.Fatalf("redeploy stored %d rows", len(rows))
	}

	// A new version supersedes the old one, and jobs run the new code.
	v2 := deploy.NewDeploy(artifact("wc", "2.0.0", "module v2", "dep==1\n"), pub.priv)
	op, p = tl.deploy(v2)
	mustAck(t, op, p, "Deployed wc v2.0.0")
	rows = manifests(t, h, "wc")
	if len(rows) != 2 || rows[0].Status != "SUPERSEDED" || rows[1].Status != "ACTIVE" {
		t.Fatalf("after v2: %+v", rows)
	}
	testwait.Eventually(t, 5*time.Second, "second RELOAD", func() bool { return count(w.Events(), "reload") == 2 })
	if n := count(w.Events(), "reload"); n != 2 {
		t.Fatalf("the idempotent redeploy broadcast RELOAD: %d reloads", n)
	}
	id := h.Enqueue(h.File("a.txt", "x\n"), "wc", 0)
	testwait.Eventually(t, 5*time.Second, "job completed", func() bool { return h.Job(id).Status == job.StatusCompleted })
	got := w.Received()
	if len(got) != 1 || got[0].Dispatch.SourceCode != v2.SourceCode || got[0].Dispatch.ArtifactHash != v2.ArtifactHash ||
		got[0].Dispatch.EnvHash != v2.EnvHash {
		t.Fatalf("dispatched %+v", got)
	}
}

func count(events []string, what string) int {
	n := 0
	for _, e := range events {
		if e == what {
			n++
		}
	}
	return n
}

func TestDeployer_RefusesAndStoresNothing(t *testing.T) {
	t.Parallel()
	pub := newPublisher(t)
	stranger := newPublisher(t)
	h := newHarness(t, func(c *config.Config) { c.TrustedKeys = pub.pubPath })
	tl := newTool(t, h.Endpoint)
	good := func() *transport.Deploy { return deploy.NewDeploy(artifact("wc", "1", "module", "dep==1\n"), pub.priv) }
	encode := func(d *transport.Deploy) [][]byte {
		f, err := transport.Encode(transport.OpDeploy, 0, d)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	cases := map[string]struct {
		frames [][]byte
		want   string
	}{
		"TamperedSource": {encode(func() *transport.Deploy { d := good(); d.SourceCode += "QQ=="; return d }()), "artifact_hash mismatch"},
		"TamperedAndRehashed": {encode(func() *transport.Deploy {
			d := good()
			d.SourceCode += "QQ=="
			d.ArtifactHash = deploy.ArtifactHash(d.SourceCode, d.LockfileContent)
			return d
		}()), "does not verify"},
		"WrongKey":        {encode(deploy.NewDeploy(artifact("wc", "1", "module", ""), stranger.priv)), "does not verify"},
		"Unsigned":        {encode(deploy.NewDeploy(artifact("wc", "1", "module", ""), nil)), "unsigned"},
		"EnvHashMismatch": {encode(func() *transport.Deploy { d := good(); d.EnvHash = deploy.EnvHash("other"); return d }()), "env_hash mismatch"},
		"MissingVersion": {func() [][]byte {
			d := good()
			d.Version = ""
			raw, err := json.Marshal(d) // Encode would refuse it
			if err != nil {
				t.Fatal(err)
			}
			return [][]byte{transport.AppendHeader(nil, transport.OpDeploy, 0, len(raw)), raw}
		}(), "version"},
		"NotJSON": {func() [][]byte {
			f := encode(good())
			f[1] = []byte("{not json")
			f[0] = transport.AppendHeader(nil, transport.OpDeploy, 0, len(f[1]))
			return f
		}(), "malformed"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			op, p := tl.send(c.frames)
			e, ok := p.(*transport.Err)
			if op != transport.OpErr || !ok || !strings.Contains(e.Message, c.want) {
				t.Fatalf("reply %s %+v, want ERR saying %q", op, p, c.want)
			}
		})
	}
	if rows := manifests(t, h, "wc"); len(rows) != 0 {
		t.Fatalf("refused deploys stored %+v", rows)
	}
	if _, err := h.Store.EnvironmentLockfile(context.Background(), deploy.EnvHash("dep==1\n")); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("a refused deploy stored its environment: %v", err)
	}
	if got := h.Sentinel.Stats().DeploysRejected.Load(); got < 5 {
		t.Fatalf("DeploysRejected = %d", got)
	}
}

func TestDeployer_ConflictingVersionIsRefused(t *testing.T) {
	t.Parallel()
	pub := newPublisher(t)
	h := newHarness(t, func(c *config.Config) { c.TrustedKeys = pub.pubPath })
	tl := newTool(t, h.Endpoint)
	op, p := tl.deploy(deploy.NewDeploy(artifact("wc", "1", "module", ""), pub.priv))
	mustAck(t, op, p, "Deployed")
	op, p = tl.deploy(deploy.NewDeploy(artifact("wc", "1", "other module", ""), pub.priv))
	if e, ok := p.(*transport.Err); op != transport.OpErr || !ok || !strings.Contains(e.Message, "different content") ||
		strings.Contains(e.Message, "UNIQUE") {
		t.Fatalf("reply %s %+v", op, p)
	}
	if rows := manifests(t, h, "wc"); len(rows) != 1 || rows[0].SourceCode != base64.StdEncoding.EncodeToString([]byte("module")) {
		t.Fatalf("rows %+v", rows)
	}
}

func TestDeployer_AllowUnsigned(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.AllowUnsigned = true })
	tl := newTool(t, h.Endpoint)
	d := deploy.NewDeploy(artifact("dev", "0.1", "module", ""), nil)
	op, p := tl.deploy(d)
	mustAck(t, op, p, "Deployed dev v0.1")
	if rows := manifests(t, h, "dev"); len(rows) != 1 || rows[0].Status != "ACTIVE" || rows[0].Signature != "" {
		t.Fatalf("rows %+v", rows)
	}
	bad := deploy.NewDeploy(artifact("dev", "0.2", "module 2", ""), nil)
	bad.SourceCode += "QQ=="
	op, p = tl.deploy(bad)
	if e, ok := p.(*transport.Err); op != transport.OpErr || !ok || !strings.Contains(e.Message, "artifact_hash mismatch") {
		t.Fatalf("a tampered deploy passed --allow-unsigned: %s %+v", op, p)
	}
}

func TestDeployer_BadTrustedKeysFailStart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "junk.pub")
	if err := os.WriteFile(path, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := sentineltest.FastConfig()
	cfg.TrustedKeys = path
	router, err := transport.ListenRouter(cfg.Bind, transport.RouterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer router.Close()
	store, err := db.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := actors.Start(actors.Options{Config: cfg, DB: store, Router: router}); err == nil || !strings.Contains(err.Error(), "junk.pub") {
		t.Fatalf("Start = %v, want an error naming the key file", err)
	}
}
