package httpapi

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"github.com/rs/zerolog"
)

// MinTokenLength is the shortest token an --api-tokens file may hold.
// `casparian token new` makes 43-character tokens.
const MinTokenLength = 16

// Role is what a token may do.
type Role int

// The roles of the --api-tokens file, weakest first.
const (
	// RoleRead reads: the web console, the GETs of /api/v1, /metrics.
	RoleRead Role = iota + 1
	// RoleAdmin also changes state (every POST) and reads /debug/pprof.
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// Token is one line of an --api-tokens file.
type Token struct {
	Role Role
	Name string // optional third field; "line N" when the line has none
	Line int
	// digest is the SHA-256 of the token: only digests are compared, so
	// the comparison takes the same time whatever the presented length.
	digest [sha256.Size]byte
}

// Tokens holds the operator API tokens of an --api-tokens file. Reload
// re-reads the file (on SIGHUP); requests in flight keep the set they
// started with.
type Tokens struct {
	path string
	log  zerolog.Logger
	set  atomic.Pointer[[]Token]
}

// LoadTokens reads an --api-tokens file. It fails on a malformed line
// (naming it), a token shorter than MinTokenLength, a token given twice or
// a file with no token; a file that group or others may read is logged as
// a warning.
func LoadTokens(path string, log zerolog.Logger) (*Tokens, error) {
	t := &Tokens{path: path, log: log.With().Str("component", "http").Logger()}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the file again and, if it is valid, replaces the tokens. A
// file that is not valid leaves the previous tokens in force.
func (t *Tokens) Reload() error {
	info, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	raw, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	tokens, err := ParseTokens(raw)
	if err != nil {
		return fmt.Errorf("api tokens %s: %w", t.path, err)
	}
	if perm := info.Mode().Perm(); perm&0o044 != 0 {
		t.log.Warn().Str("file", t.path).Str("mode", perm.String()).
			Msg("the API tokens file is readable by other users; chmod 600 it")
	}
	t.set.Store(&tokens)
	read, admin := 0, 0
	for _, tok := range tokens {
		if tok.Role == RoleAdmin {
			admin++
		} else {
			read++
		}
	}
	t.log.Info().Str("file", t.path).Int("read_tokens", read).Int("admin_tokens", admin).Msg("API tokens loaded")
	return nil
}

// ParseTokens reads the lines of an --api-tokens file:
//
//	# comment
//	read  TOKEN [name]
//	admin TOKEN [name]
//
// Errors name the line.
func ParseTokens(raw []byte) ([]Token, error) {
	var tokens []Token
	seen := map[[sha256.Size]byte]int{} // digest → line
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || len(fields) > 3 {
			return nil, fmt.Errorf("line %d: want \"read TOKEN [name]\" or \"admin TOKEN [name]\", got %d fields", n, len(fields))
		}
		tok := Token{Line: n, Name: fmt.Sprintf("line %d", n)}
		switch fields[0] {
		case "read":
			tok.Role = RoleRead
		case "admin":
			tok.Role = RoleAdmin
		default:
			// The role is echoed only if it is short: a line holding a
			// token alone must not put the token in a log.
			return nil, fmt.Errorf("line %d: the role must be read or admin", n)
		}
		if len(fields[1]) < MinTokenLength {
			return nil, fmt.Errorf("line %d: the token has %d characters, want at least %d (casparian token new makes one)",
				n, len(fields[1]), MinTokenLength)
		}
		if len(fields) == 3 {
			tok.Name = fields[2]
		}
		tok.digest = sha256.Sum256([]byte(fields[1]))
		if first, dup := seen[tok.digest]; dup {
			return nil, fmt.Errorf("line %d: the same token as line %d", n, first)
		}
		seen[tok.digest] = n
		tokens = append(tokens, tok)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, errors.New("no tokens: want lines of \"read TOKEN [name]\" or \"admin TOKEN [name]\"")
	}
	return tokens, nil
}

// match returns the token equal to presented. Every stored digest is
// compared, in constant time, whether or not an earlier one matched.
func (t *Tokens) match(presented string) (Token, bool) {
	d := sha256.Sum256([]byte(presented))
	var found Token
	ok := 0
	for _, tok := range *t.set.Load() {
		eq := subtle.ConstantTimeCompare(d[:], tok.digest[:])
		if eq == 1 {
			found = tok
		}
		ok |= eq
	}
	return found, ok == 1
}

// NewToken makes an API token: 32 bytes from crypto/rand, base64url without
// padding (43 characters).
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
