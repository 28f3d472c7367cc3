package postgres

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

func demoBootstrap() db.Bootstrap {
	return db.Bootstrap{
		SourceRoots: []string{"/data/inbox/"},
		Routes:      []job.RoutingRule{{Pattern: "*.csv", Tag: "csv"}, {Pattern: "*", Tag: "any", Priority: -1}},
		Plugins: []db.BootstrapPlugin{
			{Name: "csv", ManifestVersion: "builtin", ManifestSource: "builtin:csv", Subscribe: []string{"csv"},
				Topics: []db.Sink{{Topic: "output", URI: "sqlite://output/casparian.db/{file_stem}", Mode: db.SinkModeReplace}}},
			{Name: "checksum", ManifestVersion: "builtin", ManifestSource: "builtin:checksum", Subscribe: []string{"any"}},
		},
	}
}

// catalogue is what the Store reads back of everything a bootstrap may
// touch, so that two states can be compared on either backend.
func catalogue(t *testing.T, s catalogueStore) string {
	t.Helper()
	ctx := context.Background()
	roots := must(s.SourceRoots(ctx, false)).get(t)
	routes := must(s.RoutingRules(ctx)).get(t)
	plugins := must(s.PluginsList(ctx)).get(t)
	out := fmt.Sprintf("roots %+v\nroutes %+v\n", roots, routes)
	for _, p := range plugins {
		out += fmt.Sprintf("plugin %s %v\n", p.Name, p.SubscriptionTags)
		for _, m := range must(s.PluginManifestRows(ctx, p.Name)).get(t) {
			out += fmt.Sprintf("  manifest %+v\n", m)
		}
	}
	return out
}

func TestBootstrapApply_SecondApplyChangesNothing(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		n := must(s.BootstrapApply(ctx, demoBootstrap())).get(t)
		// 1 root + 2 routes + 2 configs + 2 subscription updates + 2 manifests + 1 topic
		if n != 10 {
			t.Errorf("first apply: %d changes, want 10", n)
		}
		before := catalogue(t, s)
		if n := must(s.BootstrapApply(ctx, demoBootstrap())).get(t); n != 0 {
			t.Errorf("second apply: %d changes, want 0", n)
		}
		if after := catalogue(t, s); after != before {
			t.Fatalf("the second apply changed rows:\nbefore %s\nafter  %s", before, after)
		}

		got := map[string]string{}
		for _, p := range must(s.PluginsList(ctx)).get(t) {
			if p.Active == nil {
				t.Fatalf("plugin %s has no ACTIVE manifest", p.Name)
			}
			got[p.Name] = fmt.Sprintf("%v %s %s", p.SubscriptionTags, p.Active.Version, p.Active.EnvHash)
		}
		if want := map[string]string{"csv": "[csv] builtin system", "checksum": "[any] builtin system"}; !reflect.DeepEqual(got, want) {
			t.Errorf("plugins %v, want %v", got, want)
		}
		roots := must(s.SourceRoots(ctx, true)).get(t)
		if len(roots) != 2 || roots[1].Path != "/data/inbox" {
			t.Errorf("active roots %+v", roots)
		}
		routes := must(s.RoutingRules(ctx)).get(t)
		if len(routes) != 2 || routes[0].Tag != "csv" || routes[1].Tag != "any" || routes[1].Priority != -1 {
			t.Errorf("routes %+v", routes)
		}

		// What it set up is what a scan and a dispatch use.
		rec := must(s.ScanRecordFiles(ctx, testNow, []db.ScannedFile{{RootID: roots[1].ID, RelPath: "x.csv",
			Hash: "hx", Size: 1, ModTime: testNow, Tags: []string{"csv", "any"}}})).get(t)[0]
		if len(rec.Jobs) != 2 {
			t.Fatalf("scanned file's jobs: %+v", rec)
		}
		claims := fx.claim(t, testNow, "w", 2, "csv")
		if len(claims) != 1 || claims[0].Dispatch.SourceCode != "builtin:csv" || len(claims[0].Dispatch.Sinks) != 1 ||
			claims[0].Dispatch.Sinks[0].Mode != db.SinkModeReplace {
			t.Errorf("csv's claim: %+v", claims)
		}
	})
}

// An operator's changes after the first start survive the next starts: a
// newer manifest stays ACTIVE, extra tags are kept.
func TestBootstrapApply_KeepsOperatorChanges(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		must(s.BootstrapApply(ctx, demoBootstrap())).get(t)
		v2 := must(s.PluginManifestActivate(ctx, "csv", "2.0.0", "csv v2", "", "")).get(t)
		must(s.PluginSubscribe(ctx, "csv", []string{"tsv"})).get(t)
		before := catalogue(t, s)
		if n := must(s.BootstrapApply(ctx, demoBootstrap())).get(t); n != 0 {
			t.Errorf("apply after operator changes: %d changes, want 0", n)
		}
		if after := catalogue(t, s); after != before {
			t.Fatalf("the bootstrap undid operator changes:\nbefore %s\nafter  %s", before, after)
		}
		for _, p := range must(s.PluginsList(ctx)).get(t) {
			if p.Name == "csv" && (p.Active == nil || p.Active.ID != v2) {
				t.Fatalf("csv's ACTIVE manifest is %+v, want the operator's %d", p.Active, v2)
			}
		}

		// A new tag in the bootstrap file is added to what is there.
		b := demoBootstrap()
		b.Plugins[0].Subscribe = append(b.Plugins[0].Subscribe, "excel")
		if n := must(s.BootstrapApply(ctx, b)).get(t); n != 1 {
			t.Errorf("apply with a new tag: %d changes, want 1", n)
		}
		if tags := must(s.PluginSubscribe(ctx, "csv", []string{"csv"})).get(t); fmt.Sprint(tags) != "[csv excel tsv]" {
			t.Errorf("csv tags %v", tags)
		}
	})
}

func TestBootstrapApply_RefusesInvalidAtomically(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		before := catalogue(t, s)
		for name, spoil := range map[string]func(*db.Bootstrap){
			"RelativeRoot":  func(b *db.Bootstrap) { b.SourceRoots = append(b.SourceRoots, "inbox") },
			"UnnamedPlugin": func(b *db.Bootstrap) { b.Plugins = append(b.Plugins, db.BootstrapPlugin{Name: " "}) },
			"TopicWithoutURI": func(b *db.Bootstrap) {
				b.Plugins[1].Topics = []db.Sink{{Topic: "t"}}
			},
		} {
			b := demoBootstrap()
			spoil(&b)
			_, err := s.BootstrapApply(ctx, b)
			wantErr(t, name, err, job.ErrInvalid)
		}
		if after := catalogue(t, s); after != before {
			t.Fatalf("a refused apply left rows:\nbefore %s\nafter  %s", before, after)
		}
	})
}
