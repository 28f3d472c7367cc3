package httpapi_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/internal/sentineltest"
)

// POST /api/v1/sources takes only folders at or under --allowed-roots once
// ".." and links are resolved; a refusal is a 400 naming the path and the
// allowed roots, and stores nothing.
func TestAPI_SourcesConfinedToTheAllowedRoots(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(e.Dir, "link-out")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.Dir, "real", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(e.Dir, "real"), filepath.Join(e.Dir, "link-in")); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"Outside":      outside,
		"DotDot":       e.Dir + "/files/../../escape",
		"LinkOut":      filepath.Join(e.Dir, "link-out"),
		"UnderLinkOut": filepath.Join(e.Dir, "link-out", "new"),
		"PrefixTrick":  e.Dir + "2",
		"Root":         "/",
	} {
		t.Run("Refused"+name, func(t *testing.T) {
			code, body := call(t, "POST", e.URL+"/api/v1/sources", fmt.Sprintf(`{"path": %q}`, path), nil)
			msg := errorOf(t, body)
			if code != 400 || !strings.Contains(msg, "source root "+path) ||
				!strings.Contains(msg, "is outside --allowed-roots ("+e.Dir+")") {
				t.Fatalf("POST %s: %d %q; want 400 naming the path and the allowed roots", path, code, msg)
			}
		})
	}
	for name, path := range map[string]string{
		"Nested":     filepath.Join(e.Dir, "real", "deeper"),
		"NotYet":     filepath.Join(e.Dir, "later", "inbox"),
		"LinkWithin": filepath.Join(e.Dir, "link-in"),
		"DotDotIn":   e.Dir + "/files/../real",
	} {
		t.Run("Allowed"+name, func(t *testing.T) {
			var src api.Source
			if code, body := call(t, "POST", e.URL+"/api/v1/sources", fmt.Sprintf(`{"path": %q}`, path), &src); code != 201 {
				t.Fatalf("POST %s: %d %s", path, code, body)
			}
		})
	}
	var sources api.SourceList
	call(t, "GET", e.URL+"/api/v1/sources", "", &sources)
	if len(sources.Sources) != 5 { // e.Root and the four allowed
		t.Errorf("sources after the refusals: %+v", sources.Sources)
	}
}

// POST /api/v1/jobs refuses config_overrides whose sink names the
// Sentinel's database.
func TestAPI_EnqueueRefusesASinkNamingTheDatabase(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	fv := e.File("a.csv", "a\n1\n")
	uri := "sqlite://" + filepath.Join(e.Dir, "casparian_flow.db") + "/cf_plugin_config"
	code, body := call(t, "POST", e.URL+"/api/v1/jobs",
		fmt.Sprintf(`{"plugin": "p", "file_version_id": %d, "config_overrides": {"output": {"uri": %q, "mode": "replace"}}}`, fv, uri), nil)
	if msg := errorOf(t, body); code != 400 || !strings.Contains(msg, "sink "+uri+" names the Sentinel's database") {
		t.Fatalf("enqueue: %d %q; want 400 saying the sink names the database", code, msg)
	}
	var list api.JobList
	call(t, "GET", e.URL+"/api/v1/jobs", "", &list)
	if list.Total != 0 {
		t.Errorf("a refused job was stored: %+v", list.Jobs)
	}
}
