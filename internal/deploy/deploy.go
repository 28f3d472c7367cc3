// Package deploy is the pure logic of plugin publishing (docs/PROTOCOL.md §4.8):
// the hashes, the Ed25519 signature, the publisher key files, and the checks
// the Sentinel runs on a DEPLOY before anything is stored. It does no I/O
// beyond reading key files, so the publish tool and the Sentinel share it.
package deploy

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"

	"github.com/casparian/sentinel/transport"
)

// EnvHash is the env_hash of a lockfile: the SHA-256 hex of its bytes. An
// empty lockfile hashes like the empty string; it is not "system".
func EnvHash(lockfile string) string {
	sum := sha256.Sum256([]byte(lockfile))
	return hex.EncodeToString(sum[:])
}

// ArtifactHash is the artifact_hash of a plugin: the SHA-256 hex of the
// source bytes followed directly by the lockfile bytes.
func ArtifactHash(source, lockfile string) string {
	h := sha256.New()
	h.Write([]byte(source))
	h.Write([]byte(lockfile))
	return hex.EncodeToString(h.Sum(nil))
}

// Sign returns the hex Ed25519 signature over the ASCII bytes of
// artifactHash, as the DEPLOY's signature field carries it.
func Sign(priv ed25519.PrivateKey, artifactHash string) string {
	return hex.EncodeToString(ed25519.Sign(priv, []byte(artifactHash)))
}

// Artifact is what a publisher deploys.
type Artifact struct {
	Plugin, Version    string
	Source, Lockfile   string
	Publisher, Email   string
	SystemRequirements []string
}

// NewDeploy builds the DEPLOY payload of a, with both hashes computed and,
// when priv is not nil, signed.
func NewDeploy(a Artifact, priv ed25519.PrivateKey) *transport.Deploy {
	d := &transport.Deploy{
		PluginName:         a.Plugin,
		Version:            a.Version,
		SourceCode:         a.Source,
		LockfileContent:    a.Lockfile,
		EnvHash:            EnvHash(a.Lockfile),
		ArtifactHash:       ArtifactHash(a.Source, a.Lockfile),
		PublisherName:      a.Publisher,
		PublisherEmail:     a.Email,
		SystemRequirements: a.SystemRequirements,
	}
	if priv != nil {
		d.Signature = Sign(priv, d.ArtifactHash)
	}
	return d
}

// ErrRejected marks a DEPLOY refused by Verify; the message says why.
var ErrRejected = errors.New("deploy rejected")

// Policy is how the Sentinel judges signatures.
type Policy struct {
	// Keys are the trusted publishers' public keys.
	Keys []TrustedKey
	// AllowUnsigned accepts a DEPLOY without a signature, or whose
	// signature no trusted key verifies (development only). The hashes are
	// still checked.
	AllowUnsigned bool
}

// Verdict is an accepted DEPLOY.
type Verdict struct {
	// Key names the trusted key that verified the signature; "" when the
	// deploy was let through by AllowUnsigned.
	Key string
	// Unverified says why AllowUnsigned had to let it through.
	Unverified string
}

// pluginName keeps plugin names safe to use in paths and URIs (workers name
// default output files after them): letters, digits, '.', '_' and '-', not
// starting with a dot.
var pluginName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// Verify checks a DEPLOY: required fields, both hashes recomputed from the
// content, and the signature against the trusted keys. Every refusal wraps
// ErrRejected and names the reason.
func Verify(d *transport.Deploy, p Policy) (Verdict, error) {
	reject := func(format string, args ...any) (Verdict, error) {
		return Verdict{}, fmt.Errorf("%w: "+format, append([]any{ErrRejected}, args...)...)
	}
	switch {
	case d == nil:
		return reject("empty deploy")
	case d.PluginName == "":
		return reject("plugin_name is missing")
	case !pluginName.MatchString(d.PluginName):
		return reject("plugin_name %q: use letters, digits, '.', '_' or '-' (at most 128, not starting with '.')", d.PluginName)
	case d.Version == "":
		return reject("version is missing")
	case len(d.Version) > 64:
		return reject("version is longer than 64 bytes")
	case d.SourceCode == "":
		return reject("source_code is missing")
	case d.PublisherName == "":
		return reject("publisher_name is missing")
	case d.EnvHash == "":
		return reject("env_hash is missing")
	case d.ArtifactHash == "":
		return reject("artifact_hash is missing")
	}
	if want := EnvHash(d.LockfileContent); d.EnvHash != want {
		return reject("env_hash mismatch: DEPLOY says %s, the lockfile hashes to %s", d.EnvHash, want)
	}
	if want := ArtifactHash(d.SourceCode, d.LockfileContent); d.ArtifactHash != want {
		return reject("artifact_hash mismatch: DEPLOY says %s, source and lockfile hash to %s", d.ArtifactHash, want)
	}
	why := checkSignature(d, p.Keys)
	if why == "" {
		return Verdict{Key: matchingKey(d, p.Keys)}, nil
	}
	if p.AllowUnsigned {
		return Verdict{Unverified: why}, nil
	}
	return reject("%s", why)
}

// checkSignature returns "" when a trusted key verifies the signature, or
// the reason it does not.
func checkSignature(d *transport.Deploy, keys []TrustedKey) string {
	if d.Signature == "" {
		return "unsigned deploy (no signature) refused: sign it with a trusted publisher key"
	}
	if len(keys) == 0 {
		return "no trusted publisher keys are configured (--trusted-keys)"
	}
	if matchingKey(d, keys) == "" {
		return fmt.Sprintf("signature does not verify against any of the %d trusted publisher key(s): unknown key or tampered content", len(keys))
	}
	return ""
}

// matchingKey names the first trusted key that verifies d's signature.
func matchingKey(d *transport.Deploy, keys []TrustedKey) string {
	sig, err := hex.DecodeString(d.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return ""
	}
	for _, k := range keys {
		if ed25519.Verify(k.Key, []byte(d.ArtifactHash), sig) {
			return k.Name
		}
	}
	return ""
}
