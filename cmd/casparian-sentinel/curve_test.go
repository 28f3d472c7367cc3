package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/transport"
)

// curveSetup is a Sentinel key pair on disk and worker key pairs listed in
// an authorized-workers file.
type curveSetup struct {
	serverPub      transport.CurveKey
	secretFile     string
	authorizedFile string
	workers        map[string]transport.CurveKey // name → secret key
}

func newCurveSetup(t *testing.T, workerNames ...string) *curveSetup {
	t.Helper()
	dir := t.TempDir()
	pub, sec, err := transport.GenerateCurveKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	cs := &curveSetup{serverPub: pub, workers: map[string]transport.CurveKey{}}
	if cs.secretFile, _, err = transport.WriteCurveKeyPair(filepath.Join(dir, "sentinel"), pub, sec); err != nil {
		t.Fatal(err)
	}
	var list strings.Builder
	list.WriteString("# workers allowed in\n")
	for _, name := range workerNames {
		wpub, wsec, err := transport.GenerateCurveKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		cs.workers[name] = wsec
		fmt.Fprintf(&list, "%s %s\n", wpub, name)
	}
	cs.authorizedFile = filepath.Join(dir, "authorized_workers")
	if err := os.WriteFile(cs.authorizedFile, []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return cs
}

func (cs *curveSetup) sentinelArgs() []string {
	return []string{"--curve-secret-key", cs.secretFile, "--authorized-workers", cs.authorizedFile}
}

// workerArgs are worker.py's flags for connecting as the named worker, or
// with a key of its own that no list holds.
func (cs *curveSetup) workerArgs(t *testing.T, name string) []string {
	t.Helper()
	sec, ok := cs.workers[name]
	if !ok {
		var err error
		if _, sec, err = transport.GenerateCurveKeyPair(); err != nil {
			t.Fatal(err)
		}
	}
	// "=" keeps argparse from reading a key that starts with "-" as a flag.
	return []string{"--curve-server-key=" + cs.serverPub.String(), "--curve-secret-key=" + sec.String()}
}

// TestInterop_PythonWorkerOverCurve: the libzmq reference worker completes
// every job over CURVE; the same worker without a listed key, or in
// plaintext, gets none, and each refusal is logged with its reason.
func TestInterop_PythonWorkerOverCurve(t *testing.T) {
	t.Parallel()
	requirePyZMQ(t)
	const nJobs = 20
	fx := newInteropFixture(t, nJobs)
	cs := newCurveSetup(t, "py-1")
	s := startSentinel(t, append(fx.sentinelArgs(), cs.sentinelArgs()...), nil)

	// Strangers first: nothing of theirs may count.
	stranger := runWorker(t, s.endpoint, "w-stranger", 1, append(cs.workerArgs(t, "nobody"), "--timeout", "2")...)
	plain := runWorker(t, s.endpoint, "w-plain", 1, "--timeout", "2")
	for name, w := range map[string]workerRun{"unlisted key": stranger, "plaintext": plain} {
		if w.err == nil || strings.Contains(w.stdout, "done ") {
			t.Errorf("%s worker: exit %v, stdout %q; want a timeout with no job", name, w.err, w.stdout)
		}
	}
	counts, err := fx.store.JobsCountByStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if counts["QUEUED"] != nJobs {
		t.Fatalf("after the refused workers: %v, want all %d jobs still QUEUED", counts, nJobs)
	}
	for _, reason := range []string{transport.RejectUnauthorizedKey, transport.RejectNotCurve} {
		if !strings.Contains(s.logs.String(), `"reason":"`+reason+`"`) {
			t.Errorf("no refusal logged with reason %s", reason)
		}
	}

	identity := fmt.Sprintf("w-%d", time.Now().UnixNano())
	w := runWorker(t, s.endpoint, identity, nJobs, append(cs.workerArgs(t, "py-1"), "--zmq-heartbeat-ms", "50", "--stay", "0.6")...)
	if w.err != nil {
		t.Fatalf("worker.py over CURVE failed: %v", w.err)
	}
	fx.checkAllCompleted(t, identity, w)
	s.stopClean(t)
}

// TestInterop_StolenIdentityIsRefused: a second authorized key that claims
// a connected worker's identity is refused during the handshake, and the
// real worker completes every job.
func TestInterop_StolenIdentityIsRefused(t *testing.T) {
	t.Parallel()
	requirePyZMQ(t)
	const nJobs = 40
	fx := newInteropFixture(t, nJobs)
	cs := newCurveSetup(t, "real", "thief")
	s := startSentinel(t, append(fx.sentinelArgs(), cs.sentinelArgs()...), nil)

	identity := fmt.Sprintf("w-%d", time.Now().UnixNano())
	var wg sync.WaitGroup
	var real workerRun
	wg.Add(1)
	go func() {
		defer wg.Done()
		real = runWorker(t, s.endpoint, identity, nJobs, append(cs.workerArgs(t, "real"), "--stay", "3")...)
	}()
	testwait.Eventually(t, 10*time.Second, "the real worker registered", func() (bool, string) {
		return strings.Contains(s.logs.String(), identity), "not yet"
	})
	thief := runWorker(t, s.endpoint, identity, 1, append(cs.workerArgs(t, "thief"), "--timeout", "2")...)
	wg.Wait()
	if thief.err == nil || strings.Contains(thief.stdout, "done ") {
		t.Errorf("thief: exit %v, stdout %q; want a refusal with no job", thief.err, thief.stdout)
	}
	if !strings.Contains(s.logs.String(), `"reason":"`+transport.RejectIdentityTaken+`"`) {
		t.Error("no identity_taken refusal logged")
	}
	if real.err != nil {
		t.Fatalf("real worker: %v", real.err)
	}
	fx.checkAllCompleted(t, identity, real)
	s.stopClean(t)
}

// TestRun_SIGHUPReloadsTheAuthorizedWorkers: a key added to the file gets in
// after SIGHUP, a key removed no longer does, and a file that no longer
// reads keeps the keys in force. Not parallel: the SIGHUP goes to the whole
// test process, and every Sentinel running in it would reload (the
// parallel tests of the package wait until the serial ones have ended).
func TestRun_SIGHUPReloadsTheAuthorizedWorkers(t *testing.T) {
	cs := newCurveSetup(t, "first")
	s := startSentinel(t, append([]string{"--bind", "tcp://127.0.0.1:0", "--database", "sqlite://" + filepath.Join(t.TempDir(), "s.db"),
		"--shutdown-timeout", "5s", "--log-format", "json"}, cs.sentinelArgs()...), nil)
	dial := func(name string, secret transport.CurveKey) error {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		d, err := transport.DialDealer(ctx, s.endpoint, transport.DealerOptions{Identity: []byte(name),
			Curve: transport.NewCurveClient(cs.serverPub, secret)})
		if err == nil {
			d.Close()
		}
		return err
	}
	secondPub, secondSec, _ := transport.GenerateCurveKeyPair()
	if err := dial("second", secondSec); err == nil {
		t.Fatal("an unlisted key got in")
	}
	hup := func(want int) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		testwait.Eventually(t, 5*time.Second, "the reload logged", func() (bool, string) {
			return strings.Count(s.logs.String(), "SIGHUP: reloading") >= want, "not yet"
		})
	}
	if err := os.WriteFile(cs.authorizedFile, []byte(secondPub.String()+" second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup(1)
	testwait.Eventually(t, 5*time.Second, "the new key accepted", func() (bool, string) {
		err := dial("second", secondSec)
		return err == nil, fmt.Sprint(err)
	})
	if err := dial("first", cs.workers["first"]); err == nil {
		t.Fatal("a key removed from the file still got in")
	}
	if err := os.WriteFile(cs.authorizedFile, []byte("not a key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup(2)
	testwait.Eventually(t, 5*time.Second, "the failed reload logged", func() (bool, string) {
		return strings.Contains(s.logs.String(), `"reload":"authorized-workers"`), "not yet"
	})
	if err := dial("second", secondSec); err != nil {
		t.Fatalf("after a bad file the keys in force should stay: %v", err)
	}
	s.stopClean(t)
}

// TestRun_InitSecretsCreatesWhatIsMissingOnce: the first start makes the
// Sentinel's and the workers' keys and the tokens; the worker key gets in
// and the admin token works; a second start keeps every file as it was.
func TestRun_InitSecretsCreatesWhatIsMissingOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secrets, workerDir := filepath.Join(dir, "sentinel"), filepath.Join(dir, "workers")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"--bind", "tcp://127.0.0.1:0", "--database", "sqlite://" + filepath.Join(dir, "s.db"),
		"--http", "127.0.0.1:0", "--shutdown-timeout", "5s", "--log-format", "json",
		"--curve-secret-key", filepath.Join(secrets, "sentinel.key"),
		"--authorized-workers", filepath.Join(secrets, "authorized_workers"),
		"--api-tokens", filepath.Join(secrets, "api_tokens"),
		"--init-secrets", workerDir}
	s := startSentinel(t, args, nil)
	serverPub, err := transport.ReadCurveKeyFile(filepath.Join(workerDir, "sentinel.pub"))
	if err != nil {
		t.Fatal(err)
	}
	workerSec, err := transport.ReadCurveKeyFile(filepath.Join(workerDir, "worker.key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := transport.DialDealer(ctx, s.endpoint, transport.DealerOptions{Identity: []byte("w"),
		Curve: transport.NewCurveClient(serverPub, workerSec)})
	if err != nil {
		t.Fatalf("the generated worker key: %v", err)
	}
	d.Close()
	if st, err := os.Stat(filepath.Join(secrets, "api_tokens")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("api_tokens: %v, %v; want mode 0600", st, err)
	}
	raw, err := os.ReadFile(filepath.Join(secrets, "api_tokens"))
	if err != nil {
		t.Fatal(err)
	}
	roles := 0
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "admin" || f[0] == "read") {
			roles++
			if strings.Contains(s.logs.String(), f[1]) {
				t.Fatalf("the %s token reached the log", f[0])
			}
		}
	}
	if roles != 2 {
		t.Fatalf("api_tokens holds %d tokens, want an admin and a read one:\n%s", roles, raw)
	}
	s.stopClean(t)

	before := map[string]string{}
	for _, dir := range []string{secrets, workerDir} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			raw, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			before[filepath.Join(dir, e.Name())] = string(raw)
		}
	}
	if len(before) != 7 {
		t.Fatalf("files after the first start: %d, want 7 (sentinel.key/.pub, authorized_workers, api_tokens; sentinel.pub, worker.key/.pub)", len(before))
	}
	startSentinel(t, args, nil).stopClean(t)
	for path, body := range before {
		if raw, _ := os.ReadFile(path); string(raw) != body {
			t.Errorf("%s changed on the second start", path)
		}
	}
}
