package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/casparian/sentinel/job"
)

func TestPluginsList_ActiveManifestVersionsAndSubscriptions(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.PluginManifestActivate(ctx, "p", "1.0", "v1", "", "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PluginManifestActivate(ctx, "p", "2.0", "v2", "env", "a2"); err != nil {
		t.Fatal(err)
	}
	tags, err := db.PluginSubscribe(ctx, "q", []string{"csv", " json "})
	if err != nil || !reflect.DeepEqual(tags, []string{"csv", "json"}) {
		t.Fatalf("tags = %v, %v", tags, err)
	}
	if tags, err = db.PluginSubscribe(ctx, "q", []string{"csv", "parquet"}); err != nil || !reflect.DeepEqual(tags, []string{"csv", "json", "parquet"}) {
		t.Errorf("merged tags = %v, %v", tags, err)
	}
	plugins, err := db.PluginsList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(plugins) != 2 || plugins[0].Name != "p" || plugins[1].Name != "q" {
		t.Fatalf("plugins = %+v", plugins)
	}
	p := plugins[0]
	if p.Active == nil || p.Active.Version != "2.0" || p.Active.EnvHash != "env" || len(p.Versions) != 2 ||
		p.Versions[1].Status != "SUPERSEDED" || p.Versions[1].EnvHash != "system" {
		t.Errorf("p = %+v", p)
	}
	if q := plugins[1]; q.Active != nil || !reflect.DeepEqual(q.SubscriptionTags, []string{"csv", "json", "parquet"}) {
		t.Errorf("q = %+v", q)
	}
	for _, bad := range [][]string{nil, {""}, {"a,b"}} {
		if _, err := db.PluginSubscribe(ctx, "q", bad); !errors.Is(err, job.ErrInvalid) {
			t.Errorf("subscribe %q: %v, want job.ErrInvalid", bad, err)
		}
	}
}

func TestPluginManifestActivate_SupersedesAndReactivates(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	status := func(id int64) (st string, env *string) {
		t.Helper()
		if err := db.writer.QueryRow(`SELECT status, env_hash FROM cf_plugin_manifest WHERE id = ?`, id).Scan(&st, &env); err != nil {
			t.Fatal(err)
		}
		return st, env
	}
	v1, err := db.PluginManifestActivate(ctx, "p", "1", "src one", "", "a1")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := db.PluginManifestActivate(ctx, "q", "1", "src q", "", "")
	v2, err := db.PluginManifestActivate(ctx, "p", "2", "src two", "envA", "a2")
	if err != nil {
		t.Fatal(err)
	}
	if st, env := status(v1); st != "SUPERSEDED" || env != nil {
		t.Errorf("v1 = %s env %v, want SUPERSEDED with NULL env", st, env)
	}
	if st, env := status(v2); st != "ACTIVE" || env == nil || *env != "envA" {
		t.Errorf("v2 = %s env %v", st, env)
	}
	if st, _ := status(other); st != "ACTIVE" {
		t.Errorf("other plugin's manifest = %s, want ACTIVE", st)
	}
	// Redeploying the first source reactivates its row.
	again, err := db.PluginManifestActivate(ctx, "p", "1b", "src one", "", "a1")
	if err != nil || again != v1 {
		t.Fatalf("reactivate = %d, %v; want %d", again, err, v1)
	}
	if st, _ := status(v1); st != "ACTIVE" {
		t.Errorf("v1 = %s, want ACTIVE", st)
	}
	if st, _ := status(v2); st != "SUPERSEDED" {
		t.Errorf("v2 = %s, want SUPERSEDED", st)
	}
	var hash, lock string
	if err := db.writer.QueryRow(`SELECT source_hash FROM cf_plugin_manifest WHERE id = ?`, v1).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("src one"))
	if hash != hex.EncodeToString(sum[:]) {
		t.Errorf("source_hash = %s", hash)
	}
	if err := db.writer.QueryRow(`SELECT lockfile_content FROM cf_plugin_environment WHERE hash = 'envA'`).Scan(&lock); err != nil || lock != "" {
		t.Errorf("environment row: %q, %v", lock, err)
	}
	var configs int
	if err := db.writer.QueryRow(`SELECT COUNT(*) FROM cf_plugin_config WHERE plugin_name IN ('p', 'q')`).Scan(&configs); err != nil {
		t.Fatal(err)
	}
	if configs != 2 {
		t.Errorf("plugin configs = %d, want 2", configs)
	}
}

func TestTopicConfigAdd_DefaultsMode(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	id, err := db.TopicConfigAdd(ctx, "p", "t", "u", "", "")
	if err != nil {
		t.Fatal(err)
	}
	var mode string
	var schema *string
	if err := db.writer.QueryRow(`SELECT mode, schema_json FROM cf_topic_config WHERE id = ?`, id).Scan(&mode, &schema); err != nil {
		t.Fatal(err)
	}
	if mode != "append" || schema != nil {
		t.Errorf("mode=%q schema=%v", mode, schema)
	}
	if _, err := db.TopicConfigAdd(ctx, "p", "", "u", "", ""); err == nil {
		t.Error("empty topic accepted")
	}
}
