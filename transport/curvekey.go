package transport

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
)

// CurveKey is a Curve25519 key of CurveZMQ, public or secret.
type CurveKey [32]byte

// GenerateCurveKeyPair makes a new long-term key pair from crypto/rand, as
// libzmq's zmq_curve_keypair does.
func GenerateCurveKeyPair() (public, secret CurveKey, err error) {
	pub, sec, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return CurveKey{}, CurveKey{}, fmt.Errorf("generate curve key pair: %w", err)
	}
	return *pub, *sec, nil
}

// CurvePublicKey derives the public key of a secret key.
func CurvePublicKey(secret CurveKey) CurveKey {
	var pub CurveKey
	out, err := curve25519.X25519(secret[:], curve25519.Basepoint)
	if err != nil {
		// X25519 fails only for a low-order point, and the base point is not one.
		panic(err)
	}
	copy(pub[:], out)
	return pub
}

// String is the key in Z85, the 40 characters libzmq prints.
func (k CurveKey) String() string {
	s, _ := z85Encode(k[:]) // 32 is a multiple of 4
	return s
}

// Fingerprint names a public key in logs, metrics and the worker list
// without spelling it out: the first 8 bytes of its SHA-256, in hex.
func (k CurveKey) Fingerprint() string {
	sum := sha256.Sum256(k[:])
	return hex.EncodeToString(sum[:8])
}

// ParseCurveKey reads a key written in Z85 (40 characters).
func ParseCurveKey(text string) (CurveKey, error) {
	text = strings.TrimSpace(text)
	if len(text) != 40 {
		return CurveKey{}, fmt.Errorf("curve key: want 40 Z85 characters, got %d", len(text))
	}
	raw, err := z85Decode(text)
	if err != nil {
		return CurveKey{}, fmt.Errorf("curve key: %w", err)
	}
	var k CurveKey
	copy(k[:], raw)
	return k, nil
}

// keyLines returns the non-blank lines of a key file that are not # comments,
// split into fields.
func keyLines(data []byte) [][]string {
	var lines [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, strings.Fields(line))
	}
	return lines
}

// ReadCurveKeyFile reads a file holding one Z85 key (as `casparian keygen
// --curve` writes: # comments, then the key on a line of its own).
func ReadCurveKeyFile(path string) (CurveKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return CurveKey{}, err
	}
	lines := keyLines(data)
	if len(lines) != 1 {
		return CurveKey{}, fmt.Errorf("%s: want one Z85 key, found %d lines", path, len(lines))
	}
	k, err := ParseCurveKey(lines[0][0])
	if err != nil {
		return CurveKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// WriteCurveKeyPair writes prefix.key (the secret key, mode 0600) and
// prefix.pub (the public key, 0644), refusing to overwrite either.
func WriteCurveKeyPair(prefix string, public, secret CurveKey) (secretPath, publicPath string, err error) {
	secretPath, publicPath = prefix+".key", prefix+".pub"
	for _, p := range []string{secretPath, publicPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("%s already exists: not overwriting a key", p)
		}
	}
	write := func(path, body string, mode os.FileMode) error {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		if _, err := f.WriteString(body); err != nil {
			_ = f.Close() // the write's error is the one to report
			return err
		}
		return f.Close()
	}
	if err := write(secretPath, "# CurveZMQ secret key (Z85). Keep it private.\n"+secret.String()+"\n", 0o600); err != nil {
		return "", "", err
	}
	if err := write(publicPath, "# CurveZMQ public key (Z85), fingerprint "+public.Fingerprint()+"\n"+public.String()+"\n", 0o644); err != nil {
		return "", "", err
	}
	return secretPath, publicPath, nil
}

// AuthorizedKeys is the set of client public keys a CURVE server accepts,
// each with a name for logs. The zero value and nil accept nobody.
type AuthorizedKeys struct {
	names map[CurveKey]string
}

// Contains reports whether k is authorized, and its name.
func (a *AuthorizedKeys) Contains(k CurveKey) (name string, ok bool) {
	if a == nil {
		return "", false
	}
	name, ok = a.names[k]
	return name, ok
}

// Len is the number of authorized keys.
func (a *AuthorizedKeys) Len() int {
	if a == nil {
		return 0
	}
	return len(a.names)
}

// NewAuthorizedKeys authorizes keys, named by their fingerprints.
func NewAuthorizedKeys(keys ...CurveKey) *AuthorizedKeys {
	a := &AuthorizedKeys{names: make(map[CurveKey]string, len(keys))}
	for _, k := range keys {
		a.names[k] = k.Fingerprint()
	}
	return a
}

// ReadAuthorizedKeys reads a file of public keys — one per line, Z85, an
// optional name after it, # comments — or a folder of such files named
// *.pub (each file's name, without .pub, names a key that has none on its
// line). A malformed line fails the whole read, so a typo never silently
// locks a worker out or lets one in.
func ReadAuthorizedKeys(path string) (*AuthorizedKeys, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if st.IsDir() {
		files, err = filepath.Glob(filepath.Join(path, "*.pub"))
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
	}
	a := &AuthorizedKeys{names: make(map[CurveKey]string)}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		base := strings.TrimSuffix(filepath.Base(f), ".pub")
		for i, fields := range keyLines(data) {
			k, err := ParseCurveKey(fields[0])
			if err != nil {
				return nil, fmt.Errorf("%s: key %d: %w", f, i+1, err)
			}
			name := base
			if len(fields) > 1 {
				name = strings.Join(fields[1:], " ")
			}
			if !st.IsDir() && len(fields) == 1 {
				name = k.Fingerprint()
			}
			a.names[k] = name
		}
	}
	if len(a.names) == 0 {
		return nil, errors.New(path + ": no public keys")
	}
	return a, nil
}

// ReadCurvePublicKey reads a public key named on a command line: either the
// 40 Z85 characters themselves, or a file holding them (a .pub written by
// `casparian keygen --curve`). A file that exists wins, so a 40-character
// path that happens to be valid Z85 is still read as a path.
func ReadCurvePublicKey(value string) (CurveKey, error) {
	text := strings.TrimSpace(value)
	if text == "" {
		return CurveKey{}, errors.New("no key given")
	}
	if len(text) == 40 {
		if _, err := os.Stat(value); errors.Is(err, os.ErrNotExist) {
			if k, err := ParseCurveKey(text); err == nil {
				return k, nil
			}
		}
	}
	return ReadCurveKeyFile(value)
}

// LoadCurveClient builds a client's CURVE settings from its two flags:
// sentinelKey is the Sentinel's public key (--sentinel-key: a file or the
// Z85 text, see ReadCurvePublicKey) and secretKeyFile the client's own
// secret key (--curve-secret-key; the public key is derived from it). Both
// empty means plaintext and returns nil; one without the other is an error,
// so a half-configured client never silently connects in plaintext.
func LoadCurveClient(sentinelKey, secretKeyFile string) (*CurveClient, error) {
	switch {
	case sentinelKey == "" && secretKeyFile == "":
		return nil, nil
	case secretKeyFile == "":
		return nil, errors.New("--sentinel-key needs --curve-secret-key (this client's secret key): give both or neither")
	case sentinelKey == "":
		return nil, errors.New("--curve-secret-key needs --sentinel-key (the Sentinel's public key): give both or neither")
	}
	server, err := ReadCurvePublicKey(sentinelKey)
	if err != nil {
		return nil, fmt.Errorf("--sentinel-key: %w", err)
	}
	secret, err := ReadCurveKeyFile(secretKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--curve-secret-key: %w", err)
	}
	return NewCurveClient(server, secret), nil
}
