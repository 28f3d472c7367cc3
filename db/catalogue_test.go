package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"
)

func TestSourceRootAdd_Upserts(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	a, err := db.SourceRootAdd(ctx, "/a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := db.SourceRootAdd(ctx, "/b")
	again, err := db.SourceRootAdd(ctx, "/a")
	if err != nil || again.ID != a.ID || b.ID == a.ID {
		t.Errorf("ids a=%d b=%d again=%d err=%v", a.ID, b.ID, again.ID, err)
	}
	if _, err := db.SourceRootAdd(ctx, ""); err == nil {
		t.Error("empty path accepted")
	}
}

func TestFileVersionAdd_UpsertsHashAndLocation(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	r, _ := db.SourceRootAdd(ctx, "/r")
	root := r.ID
	mod := time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)
	v1, err := db.FileVersionAdd(ctx, root, "dir/f.csv", "h1", 10, mod, []string{"b", "a", "b", " "})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := db.FileVersionAdd(ctx, root, "dir/f.csv", "h2", 20, mod.Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	v3, err := db.FileVersionAdd(ctx, root, "other.csv", "h1", 10, mod, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}

	var locs, hashes int
	db.writer.QueryRow(`SELECT COUNT(*) FROM cf_file_location`).Scan(&locs)
	db.writer.QueryRow(`SELECT COUNT(*) FROM cf_file_hash_registry`).Scan(&hashes)
	if locs != 2 || hashes != 2 {
		t.Errorf("locations=%d hashes=%d, want 2 and 2", locs, hashes)
	}
	var filename string
	var current, size int64
	if err := db.writer.QueryRow(`SELECT l.filename, l.current_version_id, l.last_known_size FROM cf_file_location l
		JOIN cf_file_version v ON v.location_id = l.id WHERE v.id = ?`, v1).Scan(&filename, &current, &size); err != nil {
		t.Fatal(err)
	}
	if filename != "f.csv" || current != v2 || size != 20 {
		t.Errorf("location: filename=%q current=%d size=%d; want f.csv, %d, 20", filename, current, size, v2)
	}
	tags := map[int64]string{}
	for _, v := range []int64{v1, v2, v3} {
		var s string
		db.writer.QueryRow(`SELECT applied_tags FROM cf_file_version WHERE id = ?`, v).Scan(&s)
		tags[v] = s
	}
	if tags[v1] != "a,b" || tags[v2] != "" || tags[v3] != "x" {
		t.Errorf("applied_tags = %v", tags)
	}
}

func TestPluginManifestActivate_SupersedesAndReactivates(t *testing.T) {
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
	db.writer.QueryRow(`SELECT COUNT(*) FROM cf_plugin_config WHERE plugin_name IN ('p', 'q')`).Scan(&configs)
	if configs != 2 {
		t.Errorf("plugin configs = %d, want 2", configs)
	}
}

func TestTopicConfigAdd_DefaultsMode(t *testing.T) {
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
