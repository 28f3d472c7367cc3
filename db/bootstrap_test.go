package db

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/casparian/sentinel/job"
)

// snapshot reads every row a bootstrap may touch, as text, so that two
// states of the database can be compared.
func snapshot(t *testing.T, db *DB) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT 'root', id, path, type, active FROM cf_source_root ORDER BY id`,
		`SELECT 'route', id, pattern, tag, priority FROM cf_routing_rule ORDER BY id`,
		`SELECT 'config', plugin_name, subscription_tags, default_parameters, last_updated FROM cf_plugin_config ORDER BY plugin_name`,
		`SELECT 'manifest', id, plugin_name, version, source_hash, status, deployed_at FROM cf_plugin_manifest ORDER BY id`,
		`SELECT 'topic', id, plugin_name, topic_name, uri, mode FROM cf_topic_config ORDER BY id`,
	} {
		rows, err := db.reader.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				if b, ok := v.([]byte); ok {
					vals[i] = string(b)
				}
			}
			out = append(out, fmt.Sprint(vals...))
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func demoBootstrap() Bootstrap {
	return Bootstrap{
		SourceRoots: []string{"/data/inbox"},
		Routes:      []job.RoutingRule{{Pattern: "*.csv", Tag: "csv"}, {Pattern: "*", Tag: "any", Priority: -1}},
		Plugins: []BootstrapPlugin{
			{Name: "csv", ManifestVersion: "builtin", ManifestSource: "builtin:csv", Subscribe: []string{"csv"},
				Topics: []Sink{{Topic: "output", URI: "sqlite://output/casparian.db/{file_stem}", Mode: SinkModeReplace}}},
			{Name: "checksum", ManifestVersion: "builtin", ManifestSource: "builtin:checksum", Subscribe: []string{"any"}},
		},
	}
}

func TestBootstrapApply_SecondApplyChangesNothing(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	n, err := db.BootstrapApply(ctx, demoBootstrap())
	if err != nil {
		t.Fatal(err)
	}
	// 1 root + 2 routes + 2 configs + 2 subscription updates + 2 manifests + 1 topic
	if n != 10 {
		t.Errorf("first apply: %d changes, want 10", n)
	}
	before := snapshot(t, db)
	n, err = db.BootstrapApply(ctx, demoBootstrap())
	if err != nil || n != 0 {
		t.Fatalf("second apply: %d changes, %v; want 0", n, err)
	}
	if after := snapshot(t, db); !reflect.DeepEqual(before, after) {
		t.Fatalf("rows changed by the second apply:\nbefore %q\nafter  %q", before, after)
	}

	// What the bootstrap set up is what dispatch and the scanner use.
	plugins, err := db.PluginsList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range plugins {
		if p.Active == nil {
			t.Fatalf("plugin %s has no ACTIVE manifest", p.Name)
		}
		got[p.Name] = fmt.Sprintf("%v %s", p.SubscriptionTags, p.Active.Version)
	}
	if want := map[string]string{"csv": "[csv] builtin", "checksum": "[any] builtin"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("plugins %v, want %v", got, want)
	}
	roots, err := db.SourceRoots(ctx, true)
	if err != nil || len(roots) != 1 || roots[0].Path != "/data/inbox" {
		t.Fatalf("active roots %+v, %v", roots, err)
	}
}

// An operator's changes after the first start survive the next starts: a
// newer manifest stays ACTIVE, a replaced sink and extra tags are kept.
func TestBootstrapApply_KeepsOperatorChanges(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.BootstrapApply(ctx, demoBootstrap()); err != nil {
		t.Fatal(err)
	}
	v2, err := db.PluginManifestActivate(ctx, "csv", "2.0.0", "csv v2", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.PluginSubscribe(ctx, "csv", []string{"tsv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.writer.Exec(`UPDATE cf_topic_config SET uri = 'parquet://mine.parquet' WHERE plugin_name = 'csv'`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.writer.Exec(`UPDATE cf_source_root SET active = 0`); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, db)
	if n, err := db.BootstrapApply(ctx, demoBootstrap()); err != nil || n != 0 {
		t.Fatalf("apply after operator changes: %d changes, %v; want 0", n, err)
	}
	if after := snapshot(t, db); !reflect.DeepEqual(before, after) {
		t.Fatalf("the bootstrap undid operator changes:\nbefore %q\nafter  %q", before, after)
	}
	plugins, err := db.PluginsList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plugins {
		if p.Name == "csv" && (p.Active == nil || p.Active.ID != v2) {
			t.Fatalf("csv's ACTIVE manifest is %+v, want the operator's %d", p.Active, v2)
		}
	}

	// A new tag in the bootstrap file is added to what is there.
	b := demoBootstrap()
	b.Plugins[0].Subscribe = append(b.Plugins[0].Subscribe, "excel")
	if n, err := db.BootstrapApply(ctx, b); err != nil || n != 1 {
		t.Fatalf("apply with a new tag: %d changes, %v; want 1", n, err)
	}
	tags, err := db.PluginSubscribe(ctx, "csv", []string{"csv"})
	if err != nil || fmt.Sprint(tags) != "[csv excel tsv]" {
		t.Fatalf("csv tags %v, %v", tags, err)
	}
}

func TestBootstrapApply_RejectsRelativeRootAtomically(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	b := demoBootstrap()
	b.SourceRoots = append(b.SourceRoots, "inbox")
	if _, err := db.BootstrapApply(context.Background(), b); err == nil {
		t.Fatal("a relative root must be rejected")
	}
	if rows := snapshot(t, db); len(rows) != 0 {
		t.Fatalf("a failed apply left rows: %q", rows)
	}
}
