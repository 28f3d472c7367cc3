package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/internal/sentineltest"
)

func TestAPI_EnvironmentsListsEachWithItsPlugins(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	url := e.URL + "/api/v1/environments"
	code, body := call(t, "GET", url, "", nil)
	if code != http.StatusOK || !strings.Contains(body, `"environments": []`) {
		t.Fatalf("no environment: %d %s", code, body)
	}
	ctx := context.Background()
	e.Plugin("builtin") // no environment: not listed
	for _, m := range [][3]string{{"wasm", "1.0", "env-a"}, {"wasm", "2.0", "env-b"}, {"other", "1.0", "env-a"}} {
		if _, err := e.DB.PluginManifestActivate(ctx, m[0], m[1], "src-"+m[0]+m[1], m[2], "art-"+m[0]+m[1]); err != nil {
			t.Fatal(err)
		}
	}
	var list api.EnvironmentList
	if code, body := call(t, "GET", url, "", &list); code != http.StatusOK || len(list.Environments) != 2 {
		t.Fatalf("environments: %d %s", code, body)
	}
	byHash := map[string]api.Environment{}
	for _, env := range list.Environments {
		byHash[env.Hash] = env
	}
	a, b := byHash["env-a"], byHash["env-b"]
	if a.ActivePlugins != 1 || len(a.Plugins) != 2 || a.Plugins[0] != (api.EnvironmentUser{Plugin: "other", Version: "1.0", Status: "ACTIVE"}) ||
		a.Plugins[1] != (api.EnvironmentUser{Plugin: "wasm", Version: "1.0", Status: "SUPERSEDED"}) || a.LastUsed == nil || a.CreatedAt == nil {
		t.Errorf("env-a = %+v", a)
	}
	if b.ActivePlugins != 1 || len(b.Plugins) != 1 || b.Plugins[0].Version != "2.0" || b.LockfileBytes != 0 {
		t.Errorf("env-b = %+v", b)
	}
	if code, body := call(t, "GET", url+"?plugin=wasm", "", nil); code != http.StatusBadRequest ||
		!strings.Contains(errorOf(t, body), "takes no query parameters") {
		t.Errorf("with a query: %d %s", code, body)
	}
}
