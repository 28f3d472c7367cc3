package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casparian/sentinel/transport"
)

func newKey(t *testing.T) (privPEM, pubPEM []byte) {
	t.Helper()
	priv, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func trusted(t *testing.T, pubPEM []byte) []TrustedKey {
	t.Helper()
	keys, err := ParsePublicKeys(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	return []TrustedKey{{Name: "k.pub", Key: keys[0]}}
}

func TestHashes_FollowTheContract(t *testing.T) {
	empty := sha256.Sum256(nil)
	if got := EnvHash(""); got != hex.EncodeToString(empty[:]) {
		t.Fatalf("EnvHash(\"\") = %s, want the SHA-256 of nothing", got)
	}
	both := sha256.Sum256([]byte("sourcelock"))
	if got := ArtifactHash("source", "lock"); got != hex.EncodeToString(both[:]) {
		t.Fatalf("ArtifactHash = %s, want sha256(source||lockfile)", got)
	}
}

func TestVerify(t *testing.T) {
	privPEM, pubPEM := newKey(t)
	priv, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPub := newKey(t)
	art := Artifact{Plugin: "wc", Version: "1.0.0", Source: "AGFzbQ==", Lockfile: "numpy==2.0\n", Publisher: "ada"}
	policy := Policy{Keys: trusted(t, pubPEM)}

	t.Run("SignedByATrustedKey", func(t *testing.T) {
		v, err := Verify(NewDeploy(art, priv), policy)
		if err != nil || v.Key != "k.pub" || v.Unverified != "" {
			t.Fatalf("Verify = %+v, %v", v, err)
		}
	})
	refused := map[string]struct {
		tamper func(d *transport.Deploy)
		policy Policy
		want   string
	}{
		"TamperedSource":   {func(d *transport.Deploy) { d.SourceCode += "x" }, policy, "artifact_hash mismatch"},
		"TamperedLockfile": {func(d *transport.Deploy) { d.LockfileContent = "evil" }, policy, "env_hash mismatch"},
		"RehashedTamper": {func(d *transport.Deploy) {
			d.SourceCode += "x"
			d.ArtifactHash = ArtifactHash(d.SourceCode, d.LockfileContent)
		}, policy, "does not verify"},
		"WrongKey":         {nil, Policy{Keys: trusted(t, otherPub)}, "does not verify"},
		"NoTrustedKeys":    {nil, Policy{}, "no trusted publisher keys"},
		"Unsigned":         {func(d *transport.Deploy) { d.Signature = "" }, policy, "unsigned"},
		"SignatureNotHex":  {func(d *transport.Deploy) { d.Signature = "zz" }, policy, "does not verify"},
		"MissingVersion":   {func(d *transport.Deploy) { d.Version = "" }, policy, "version is missing"},
		"MissingSource":    {func(d *transport.Deploy) { d.SourceCode = "" }, policy, "source_code is missing"},
		"MissingPublisher": {func(d *transport.Deploy) { d.PublisherName = "" }, policy, "publisher_name is missing"},
		"PathInName":       {func(d *transport.Deploy) { d.PluginName = "../x" }, policy, "plugin_name"},
		"UppercaseHash": {func(d *transport.Deploy) { d.ArtifactHash = strings.ToUpper(d.ArtifactHash) }, policy,
			"artifact_hash mismatch"},
	}
	for name, c := range refused {
		t.Run(name, func(t *testing.T) {
			d := NewDeploy(art, priv)
			if c.tamper != nil {
				c.tamper(d)
			}
			_, err := Verify(d, c.policy)
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Verify = %v, want a rejection saying %q", err, c.want)
			}
		})
	}
	t.Run("AllowUnsignedLetsSignaturesThroughButNotHashes", func(t *testing.T) {
		loose := Policy{Keys: trusted(t, otherPub), AllowUnsigned: true}
		unsigned := NewDeploy(art, nil)
		v, err := Verify(unsigned, loose)
		if err != nil || v.Key != "" || !strings.Contains(v.Unverified, "unsigned") {
			t.Fatalf("unsigned: %+v, %v", v, err)
		}
		if v, err := Verify(NewDeploy(art, priv), loose); err != nil || !strings.Contains(v.Unverified, "does not verify") {
			t.Fatalf("unknown key: %+v, %v", v, err)
		}
		unsigned.SourceCode += "x"
		if _, err := Verify(unsigned, loose); !errors.Is(err, ErrRejected) {
			t.Fatalf("a hash mismatch passed with AllowUnsigned: %v", err)
		}
	})
}

func TestLoadTrustedKeys(t *testing.T) {
	dir := t.TempDir()
	_, pub1 := newKey(t)
	_, pub2 := newKey(t)
	_, pub3 := newKey(t)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	one := write("ada.pub", pub1)
	write("team.pem", append(append([]byte{}, pub2...), pub3...))
	write("README.md", []byte("not a key"))

	keys, err := LoadTrustedKeys(one)
	if err != nil || len(keys) != 1 || keys[0].Name != "ada.pub" {
		t.Fatalf("one file: %+v, %v", keys, err)
	}
	keys, err = LoadTrustedKeys(dir)
	if err != nil || len(keys) != 3 || keys[1].Name != "team.pem#1" || keys[2].Name != "team.pem#2" {
		t.Fatalf("folder: %+v, %v", keys, err)
	}
	if Fingerprint(keys[0].Key) == Fingerprint(keys[1].Key) || len(Fingerprint(keys[0].Key)) != 16 {
		t.Fatal("fingerprints should be 16 hex digits and differ")
	}

	priv, _ := newKey(t)
	for name, data := range map[string][]byte{"private.pub": priv, "empty.pub": []byte("junk")} {
		bad := t.TempDir()
		p := filepath.Join(bad, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadTrustedKeys(bad); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if _, err := LoadTrustedKeys(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing path loaded")
	}
	if _, err := LoadTrustedKeys(t.TempDir()); err == nil {
		t.Error("an empty folder loaded")
	}
	if _, err := ParsePrivateKey(pub1); err == nil {
		t.Error("a public key parsed as private")
	}
}
