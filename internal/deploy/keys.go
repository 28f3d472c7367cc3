package deploy

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Key files are PEM, so they can be read with openssl and friends: the
// private key a "PRIVATE KEY" block (PKCS #8), a public key a "PUBLIC KEY"
// block (PKIX). Only Ed25519 keys are accepted.
const (
	privateBlock = "PRIVATE KEY"
	publicBlock  = "PUBLIC KEY"
)

// TrustedKey is one publisher public key the Sentinel trusts.
type TrustedKey struct {
	Name string // file name, with "#n" when a file holds several keys
	Key  ed25519.PublicKey
}

// Fingerprint is a short stable name for a public key: the first 16 hex
// digits of the SHA-256 of its raw bytes.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// GenerateKey makes a new Ed25519 key pair and returns both as PEM.
func GenerateKey() (privPEM, pubPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("encode private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: privateBlock, Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: publicBlock, Bytes: pubDER}), nil
}

// ParsePrivateKey reads an Ed25519 private key from PEM (PKCS #8).
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != privateBlock {
		return nil, errors.New("not a PEM \"" + privateBlock + "\" file (make one with casparian keygen)")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want Ed25519", k)
	}
	return priv, nil
}

// ParsePublicKeys reads every "PUBLIC KEY" block of a PEM file; there must be
// at least one, all Ed25519. A private key in the file is an error: trusted
// key folders are often shared, and a private key there is a leak.
func ParsePublicKeys(data []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch {
		case strings.Contains(block.Type, "PRIVATE"):
			return nil, errors.New("holds a private key; trust only public keys")
		case block.Type != publicBlock:
			continue
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key is %T, want Ed25519", k)
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM \"" + publicBlock + "\" block")
	}
	return keys, nil
}

// LoadTrustedKeys reads the trusted publisher keys at path: one PEM file, or
// a folder whose *.pub and *.pem files are each one or more public keys.
// Anything unreadable is an error, so a typo never silently trusts nobody.
func LoadTrustedKeys(path string) ([]TrustedKey, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	files := []string{path}
	if info.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("trusted keys: %w", err)
		}
		files = files[:0]
		for _, e := range entries {
			ext := filepath.Ext(e.Name())
			if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") && (ext == ".pub" || ext == ".pem") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		sort.Strings(files)
		if len(files) == 0 {
			return nil, fmt.Errorf("trusted keys: no *.pub or *.pem file in %s", path)
		}
	}
	var out []TrustedKey
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("trusted keys: %w", err)
		}
		keys, err := ParsePublicKeys(data)
		if err != nil {
			return nil, fmt.Errorf("trusted keys: %s: %w", f, err)
		}
		for i, k := range keys {
			name := filepath.Base(f)
			if len(keys) > 1 {
				name = fmt.Sprintf("%s#%d", name, i+1)
			}
			out = append(out, TrustedKey{Name: name, Key: k})
		}
	}
	return out, nil
}
