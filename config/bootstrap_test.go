package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeBootstrap(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadBootstrap_ParsesEverySection(t *testing.T) {
	path := writeBootstrap(t, `{
		"source_roots": ["/data/inbox"],
		"routes": [{"pattern": "*.csv", "tag": "csv", "priority": 5}],
		"plugins": [{
			"name": "csv",
			"manifest": {"version": "builtin", "source_code": "builtin:csv"},
			"subscribe": ["csv"],
			"topics": [{"topic": "output", "uri": "sqlite://output/x.db/{file_stem}", "mode": "replace"}]
		}, {"name": "checksum", "subscribe": ["any"]}]
	}`)
	got, err := ReadBootstrap(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Bootstrap{
		SourceRoots: []string{"/data/inbox"},
		Routes:      []BootstrapRoute{{Pattern: "*.csv", Tag: "csv", Priority: 5}},
		Plugins: []BootstrapPlugin{{
			Name:      "csv",
			Manifest:  &BootstrapManifest{Version: "builtin", SourceCode: "builtin:csv"},
			Subscribe: []string{"csv"},
			Topics:    []BootstrapTopic{{Topic: "output", URI: "sqlite://output/x.db/{file_stem}", Mode: "replace"}},
		}, {Name: "checksum", Subscribe: []string{"any"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

func TestReadBootstrap_RejectsWhatItCannotApply(t *testing.T) {
	for name, tc := range map[string]struct{ text, want string }{
		"UnknownKey":      {`{"source_root": ["/x"]}`, `unknown field "source_root"`},
		"RelativeRoot":    {`{"source_roots": ["inbox"]}`, `source_roots[0]: want an absolute path`},
		"RouteWithoutTag": {`{"routes": [{"pattern": "*"}]}`, `routes[0]: tag "" must be non-empty`},
		"CommaInTag":      {`{"plugins": [{"name": "p", "subscribe": ["a,b"]}]}`, `subscribe: tag "a,b"`},
		"DuplicatePlugin": {`{"plugins": [{"name": "p"}, {"name": "p"}]}`, `plugin "p" is listed twice`},
		"ManifestNoVer":   {`{"plugins": [{"name": "p", "manifest": {"source_code": "x"}}]}`, `manifest.version is required`},
		"BadMode":         {`{"plugins": [{"name": "p", "topics": [{"topic": "output", "uri": "a", "mode": "merge"}]}]}`, `mode must be append`},
		"TopicWithoutURI": {`{"plugins": [{"name": "p", "topics": [{"topic": "output"}]}]}`, `topic and uri are required`},
		"TwoValues":       {`{} {}`, `more than one JSON value`},
		"NotJSON":         {`source_roots: [/x]`, `invalid character`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ReadBootstrap(writeBootstrap(t, tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := ReadBootstrap(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("a missing file must be an error")
	}
}

func TestLoad_BootstrapFromFlagAndEnvironment(t *testing.T) {
	env := map[string]string{"CASPARIAN_BOOTSTRAP": "/etc/casparian/bootstrap.json"}
	cfg, err := Load(nil, func(k string) string { return env[k] }, nil)
	if err != nil || cfg.Bootstrap != "/etc/casparian/bootstrap.json" {
		t.Fatalf("from env: %q, %v", cfg.Bootstrap, err)
	}
	cfg, err = Load([]string{"--bootstrap", "b.json"}, func(k string) string { return env[k] }, nil)
	if err != nil || cfg.Bootstrap != "b.json" {
		t.Fatalf("flag over env: %q, %v", cfg.Bootstrap, err)
	}
}
