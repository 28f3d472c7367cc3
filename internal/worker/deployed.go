package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/internal/worker/plugin"
	"github.com/casparian/sentinel/internal/worker/wasm"
	"github.com/casparian/sentinel/transport"
)

// Deployed plugins: WebAssembly modules that a DISPATCH carries in
// source_code, checked against its artifact_hash and run by package wasm.

// SystemEnv is the env_hash of plugins that need no lockfile.
const SystemEnv = "system"

// wasmInterpreterPath is what ENV_READY reports as the interpreter of an
// environment: deployed plugins all run in the worker's wazero runtime.
const wasmInterpreterPath = "wazero"

// emptyEnv is sha256hex(""): the env_hash of an empty lockfile, known to
// every worker without a PREPARE_ENV, like SystemEnv.
var emptyEnv = sha256hex("")

// sha256hex is the hash every env_hash and artifact_hash uses.
func sha256hex(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ArtifactHash is what a deployed plugin's artifact_hash must be:
// sha256hex(source_code || lockfile_content), over the exact bytes.
func ArtifactHash(sourceCode, lockfile string) string { return sha256hex(sourceCode, lockfile) }

// EnvHash is what an environment's env_hash must be: sha256hex(lockfile).
func EnvHash(lockfile string) string { return sha256hex(lockfile) }

// environments are what deployed plugins need from PREPARE_ENV, and a memo
// of their modules. The receiver writes lockfiles, job goroutines read them
// and keep the memo. mu is a leaf lock (see Worker).
type environments struct {
	mu         sync.Mutex
	lockfiles  map[string]string // guarded by mu: lockfiles by env_hash (lower case), from PREPARE_ENV
	moduleKeys map[string]string // guarded by mu: wasm module keys by verified artifact_hash
}

// lockfile returns the lockfile of envHash, if this worker knows it.
func (w *Worker) lockfile(envHash string) (string, bool) {
	h := strings.ToLower(envHash)
	if h == "" || h == SystemEnv || h == emptyEnv {
		return "", true
	}
	w.envs.mu.Lock()
	defer w.envs.mu.Unlock()
	l, ok := w.envs.lockfiles[h]
	return l, ok
}

// prepareEnv answers PREPARE_ENV: it checks that the lockfile hashes to
// env_hash, keeps it, and reports the environment ready. Deployed plugins
// need nothing installed, so "ready" means the worker can check artifact
// hashes for that environment. A lockfile that does not match gets an ERR
// naming the env_hash, and is not kept.
func (w *Worker) prepareEnv(p *transport.PrepareEnv) {
	interpreter := w.exe // built-ins run in the worker's own binary
	if w.wasm != nil {
		interpreter = wasmInterpreterPath
	}
	h := strings.ToLower(p.EnvHash)
	if h == "" || h == SystemEnv {
		w.send(transport.OpEnvReady, 0, &transport.EnvReady{EnvHash: p.EnvHash, InterpreterPath: interpreter, Cached: true})
		return
	}
	if got := EnvHash(p.LockfileContent); got != h {
		msg := fmt.Sprintf("PREPARE_ENV %s rejected: lockfile_content hashes to %s", p.EnvHash, got)
		w.log.Warn().Str("env_hash", p.EnvHash).Msg(msg)
		w.send(transport.OpErr, 0, &transport.Err{Message: msg})
		return
	}
	w.envs.mu.Lock()
	_, cached := w.envs.lockfiles[h]
	if h == emptyEnv {
		cached = true
	} else {
		w.envs.lockfiles[h] = p.LockfileContent
	}
	w.envs.mu.Unlock()
	w.log.Info().Str("env_hash", p.EnvHash).Bool("cached", cached).Msg("environment ready")
	w.send(transport.OpEnvReady, 0, &transport.EnvReady{EnvHash: p.EnvHash, InterpreterPath: interpreter, Cached: cached})
}

// pluginFor picks what runs a DISPATCH.
//
// A source_code that is the base64 of a WebAssembly module (it starts with
// the "\0asm" magic) is a deployed plugin, whatever its name: publishing a
// module under a built-in's name replaces the built-in for those jobs.
// Anything else runs the built-in of that name (their manifests carry text
// such as "builtin:csv", which is never that base64). Only the first eight
// characters are decoded to tell the two apart.
func (w *Worker) pluginFor(d *transport.Dispatch, log zerolog.Logger) (plugin.Plugin, error) {
	if !wasm.LooksLikeModule(d.SourceCode) {
		if p, ok := w.plugins[d.PluginName]; ok {
			return p, nil
		}
		if w.wasm != nil {
			return nil, fmt.Errorf("plugin %q is not a built-in of this worker (it has: %s) and its source_code is not a base64 WebAssembly module",
				d.PluginName, strings.Join(w.builtins, ", "))
		}
		return nil, fmt.Errorf("plugin %q is not available on this worker (it runs: %s)", d.PluginName, strings.Join(w.caps, ", "))
	}
	if w.wasm == nil {
		return nil, fmt.Errorf("plugin %q is a WebAssembly module, and deployed plugins are turned off on this worker", d.PluginName)
	}
	lock, ok := w.lockfile(d.EnvHash)
	if !ok {
		return nil, fmt.Errorf("plugin %q: environment %s is not prepared on this worker (no PREPARE_ENV for it)", d.PluginName, d.EnvHash)
	}
	if got := ArtifactHash(d.SourceCode, lock); !strings.EqualFold(got, d.ArtifactHash) {
		return nil, fmt.Errorf("plugin %q: artifact_hash mismatch: source_code and the lockfile of env %s hash to %s, the DISPATCH says %q",
			d.PluginName, orSystem(d.EnvHash), got, d.ArtifactHash)
	}
	// A verified artifact_hash names its source exactly, so the module key
	// found for it once holds for every later job: those skip decoding
	// and hashing the module again unless it has to be compiled again.
	art := strings.ToLower(d.ArtifactHash)
	source := d.SourceCode
	load := func() ([]byte, error) { return wasm.Decode(source) }
	key, known := w.moduleKey(art)
	if !known {
		code, err := wasm.Decode(source)
		if err != nil {
			return nil, fmt.Errorf("plugin %q: %w", d.PluginName, err)
		}
		key = wasm.ModuleKey(code)
		w.rememberModuleKey(art, key)
		load = func() ([]byte, error) { return code, nil }
	}
	return w.wasm.Plugin(d.PluginName, key, load, log), nil
}

// moduleKeys bounds the artifact_hash → module key memo; it is cleared
// when full (keys are cheap to find again).
const moduleKeys = 1024

func (w *Worker) moduleKey(artifact string) (string, bool) {
	w.envs.mu.Lock()
	defer w.envs.mu.Unlock()
	k, ok := w.envs.moduleKeys[artifact]
	return k, ok
}

func (w *Worker) rememberModuleKey(artifact, key string) {
	w.envs.mu.Lock()
	defer w.envs.mu.Unlock()
	if len(w.envs.moduleKeys) >= moduleKeys {
		clear(w.envs.moduleKeys)
	}
	w.envs.moduleKeys[artifact] = key
}

func orSystem(envHash string) string {
	if envHash == "" {
		return SystemEnv
	}
	return envHash
}
