package transport_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casparian/sentinel/transport"
)

func TestReadCurvePublicKey_FileOrInline(t *testing.T) {
	pub, sec, err := transport.GenerateCurveKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	prefix := filepath.Join(dir, "sentinel")
	if _, _, err := transport.WriteCurveKeyPair(prefix, pub, sec); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{
		"File":          prefix + ".pub",
		"Inline":        pub.String(),
		"InlineSpaced":  "  " + pub.String() + "\n",
		"FileOf40Chars": write40CharPath(t, pub),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := transport.ReadCurvePublicKey(value)
			if err != nil || got != pub {
				t.Fatalf("ReadCurvePublicKey(%q) = %s, %v; want %s", value, got, err, pub)
			}
		})
	}
	for value, want := range map[string]string{
		"":                                 "no key given",
		filepath.Join(dir, "missing.pub"):  "no such file",
		strings.Repeat("~", 40):            "no such file", // 40 characters, not Z85: a path
		pub.String()[:39]:                  "no such file",
		filepath.Join(dir, "sentinel.key"): "", // a key file reads; whether it is the right one, the handshake says
	} {
		_, err := transport.ReadCurvePublicKey(value)
		if want == "" {
			if err != nil {
				t.Errorf("ReadCurvePublicKey(%q): %v", value, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadCurvePublicKey(%q) = %v, want an error mentioning %q", value, err, want)
		}
	}
}

// write40CharPath writes a public key file whose relative path is 40
// characters of the Z85 alphabet, and returns that path: an existing file
// must be read, not decoded as a key.
func write40CharPath(t *testing.T, pub transport.CurveKey) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	name := "keys/" + strings.Repeat("a", 31) + ".pub"
	if len(name) != 40 {
		t.Fatalf("path %q is %d characters", name, len(name))
	}
	if _, err := transport.ParseCurveKey(name); err != nil {
		t.Fatalf("the path should also parse as Z85: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(pub.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestLoadCurveClient_BothOrNeither(t *testing.T) {
	spub, ssec, _ := transport.GenerateCurveKeyPair()
	cpub, csec, _ := transport.GenerateCurveKeyPair()
	dir := t.TempDir()
	if _, _, err := transport.WriteCurveKeyPair(filepath.Join(dir, "sentinel"), spub, ssec); err != nil {
		t.Fatal(err)
	}
	if _, _, err := transport.WriteCurveKeyPair(filepath.Join(dir, "worker"), cpub, csec); err != nil {
		t.Fatal(err)
	}
	c, err := transport.LoadCurveClient("", "")
	if c != nil || err != nil {
		t.Fatalf("neither: %v, %v; want plaintext (nil, nil)", c, err)
	}
	for _, server := range []string{filepath.Join(dir, "sentinel.pub"), spub.String()} {
		c, err = transport.LoadCurveClient(server, filepath.Join(dir, "worker.key"))
		if err != nil || c.ServerKey != spub || c.Public != cpub || c.Secret != csec {
			t.Fatalf("both (%s): %+v, %v", server, c, err)
		}
	}
	for _, tc := range []struct{ server, secret, want string }{
		{spub.String(), "", "--sentinel-key needs --curve-secret-key"},
		{"", filepath.Join(dir, "worker.key"), "--curve-secret-key needs --sentinel-key"},
		{"nope.pub", filepath.Join(dir, "worker.key"), "--sentinel-key: "},
		{spub.String(), filepath.Join(dir, "nope.key"), "--curve-secret-key: "},
	} {
		if _, err := transport.LoadCurveClient(tc.server, tc.secret); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadCurveClient(%q, %q) = %v, want an error mentioning %q", tc.server, tc.secret, err, tc.want)
		}
	}
}
