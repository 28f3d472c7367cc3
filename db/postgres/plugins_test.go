package postgres

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

func TestPlugins_ListActiveManifestVersionsAndSubscriptions(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		if got := must(s.PluginsList(ctx)).get(t); len(got) != 0 {
			t.Fatalf("fresh plugins = %+v", got)
		}
		v1 := must(s.PluginManifestActivate(ctx, "p", "1.0", "v1", "", "a1")).get(t)
		v2 := must(s.PluginManifestActivate(ctx, "p", "2.0", "v2", "env", "a2")).get(t)
		tags := must(s.PluginSubscribe(ctx, "q", []string{"csv", " json "})).get(t)
		if !reflect.DeepEqual(tags, []string{"csv", "json"}) {
			t.Errorf("tags = %v", tags)
		}
		tags = must(s.PluginSubscribe(ctx, " q ", []string{"parquet", "csv"})).get(t)
		if !reflect.DeepEqual(tags, []string{"csv", "json", "parquet"}) {
			t.Errorf("merged tags = %v", tags)
		}
		for _, bad := range [][]string{nil, {""}, {" "}, {"a,b"}} {
			_, err := s.PluginSubscribe(ctx, "q", bad)
			wantErr(t, fmt.Sprintf("subscribe %q", bad), err, job.ErrInvalid)
		}
		_, err := s.PluginSubscribe(ctx, "  ", []string{"csv"})
		wantErr(t, "subscribe without plugin", err, job.ErrInvalid)

		plugins := must(s.PluginsList(ctx)).get(t)
		if len(plugins) != 2 || plugins[0].Name != "p" || plugins[1].Name != "q" {
			t.Fatalf("plugins = %+v", plugins)
		}
		p := plugins[0]
		if p.Active == nil || p.Active.ID != v2 || p.Active.Version != "2.0" || p.Active.EnvHash != "env" ||
			p.Active.ArtifactHash != "a2" || p.Active.DeployedAt.IsZero() || len(p.SubscriptionTags) != 0 {
			t.Errorf("p = %+v (active %+v)", p, p.Active)
		}
		if len(p.Versions) != 2 || p.Versions[0].ID != v2 || p.Versions[1].ID != v1 ||
			p.Versions[1].Status != "SUPERSEDED" || p.Versions[1].EnvHash != db.SystemEnvHash {
			t.Errorf("p's versions = %+v", p.Versions)
		}
		if q := plugins[1]; q.Active != nil || len(q.Versions) != 0 || !reflect.DeepEqual(q.SubscriptionTags, []string{"csv", "json", "parquet"}) {
			t.Errorf("q = %+v", q)
		}
	})
}

func TestPluginManifestActivate_SupersedesAndReactivates(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		statuses := func(plugin string) string {
			t.Helper()
			var out []string
			for _, r := range must(s.PluginManifestRows(ctx, plugin)).get(t) {
				out = append(out, fmt.Sprintf("%d:%s:%s:%s", r.ID, r.Version, r.Status, r.EnvHash))
			}
			return strings.Join(out, " ")
		}
		v1 := must(s.PluginManifestActivate(ctx, "p", "1", "src one", "", "a1")).get(t)
		other := must(s.PluginManifestActivate(ctx, "q", "1", "src q", "", "")).get(t)
		v2 := must(s.PluginManifestActivate(ctx, "p", "2", "src two", "envA", "a2")).get(t)
		if got, want := statuses("p"), fmt.Sprintf("%d:1:SUPERSEDED: %d:2:ACTIVE:envA", v1, v2); got != want {
			t.Errorf("p = %s, want %s", got, want)
		}
		// Redeploying the first source reactivates its row, renamed.
		if again := must(s.PluginManifestActivate(ctx, "p", "1b", "src one", "", "a1")).get(t); again != v1 {
			t.Fatalf("reactivate = %d, want %d", again, v1)
		}
		if got, want := statuses("p"), fmt.Sprintf("%d:1b:ACTIVE: %d:2:SUPERSEDED:envA", v1, v2); got != want {
			t.Errorf("p = %s, want %s", got, want)
		}
		if got, want := statuses("q"), fmt.Sprintf("%d:1:ACTIVE:", other); got != want {
			t.Errorf("q = %s, want %s", got, want)
		}
		rows := must(s.PluginManifestRows(ctx, "p")).get(t)
		if rows[0].SourceHash != db.SourceHash("src one") || rows[0].SourceCode != "src one" || rows[0].ArtifactHash != "a1" {
			t.Errorf("row = %+v", rows[0])
		}
		// The environment row exists, with an empty lockfile.
		if lock, err := s.EnvironmentLockfile(ctx, "envA"); err != nil || lock != "" {
			t.Errorf("environment envA: %q, %v", lock, err)
		}
		if _, err := s.PluginManifestActivate(ctx, "", "1", "x", "", ""); err == nil {
			t.Error("empty plugin accepted")
		}
	})
}

func TestTopicConfigAdd_RefusesEmptyFields(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		a := must(s.TopicConfigAdd(ctx, "p", "t", "memory://p/t", "", "")).get(t)
		b := must(s.TopicConfigAdd(ctx, "p", "u", "memory://p/u", db.SinkModeReplace, `{"a":"int"}`)).get(t)
		if a == 0 || b == a {
			t.Errorf("ids %d, %d", a, b)
		}
		for _, bad := range [][3]string{{"", "t", "u"}, {"p", "", "u"}, {"p", "t", ""}} {
			if _, err := s.TopicConfigAdd(ctx, bad[0], bad[1], bad[2], "", ""); err == nil {
				t.Errorf("topic config %q accepted", bad)
			}
		}
		// The plugin's configuration was created with it.
		if got := must(s.PluginsList(ctx)).get(t); len(got) != 1 || got[0].Name != "p" {
			t.Errorf("plugins = %+v", got)
		}
		// A claim's dispatch carries the sinks in order, mode defaulted to
		// append (and the default output sink the dispatch adds after).
		fx.activate("p")
		fx.enqueue(t, "p", 0)
		claims := fx.claim(t, testNow, "w", 1, "p")
		if len(claims) != 1 {
			t.Fatalf("claims = %+v", claims)
		}
		sinks := claims[0].Dispatch.Sinks
		if len(sinks) < 2 || sinks[0].Topic != "t" || sinks[0].Mode != db.SinkModeAppend ||
			sinks[1].Mode != db.SinkModeReplace || sinks[1].SchemaDef != `{"a":"int"}` {
			t.Errorf("dispatch sinks = %+v", sinks)
		}
	})
}

func deployment(plugin, version, source, lock string) db.Deployment {
	return db.Deployment{Plugin: plugin, Version: version, SourceCode: source, Lockfile: lock,
		EnvHash: db.SourceHash(lock), ArtifactHash: db.SourceHash(source + lock), Signature: "ab", PublisherName: "ada",
		PublisherEmail: "ada@example.com", SystemRequirements: []string{"glibc"}}
}

// versions lists a plugin's manifests as "version:status", oldest first.
func versionsOf(t *testing.T, s catalogueStore, plugin string) string {
	t.Helper()
	var out []string
	for _, r := range must(s.PluginManifestRows(context.Background(), plugin)).get(t) {
		out = append(out, r.Version+":"+r.Status)
	}
	return strings.Join(out, " ")
}

func TestPluginDeploy_StoresSupersedesAndIsIdempotent(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		v1 := deployment("wc", "1", "src-1", "numpy==2\n")
		res := must(s.PluginDeploy(ctx, testNow, v1)).get(t)
		if res.Outcome != db.DeployCreated || res.ManifestID == 0 || res.Superseded != 0 {
			t.Fatalf("first deploy: %+v", res)
		}
		m := must(s.PluginManifestRows(ctx, "wc")).get(t)[0]
		if m.Status != "ACTIVE" || m.SourceHash != v1.ArtifactHash || m.ArtifactHash != v1.ArtifactHash || m.SourceCode != "src-1" ||
			m.EnvHash != v1.EnvHash || m.Signature != "ab" || m.PublisherID == 0 || !m.DeployedAt.Equal(testNow) {
			t.Fatalf("stored %+v", m)
		}
		if lock, err := s.EnvironmentLockfile(ctx, v1.EnvHash); err != nil || lock != "numpy==2\n" {
			t.Fatalf("environment: %q, %v", lock, err)
		}

		again := must(s.PluginDeploy(ctx, testNow.Add(time.Minute), v1)).get(t)
		if again.Outcome != db.DeployUnchanged || again.ManifestID != res.ManifestID || again.Superseded != 0 {
			t.Fatalf("redeploy: %+v", again)
		}
		if m := must(s.PluginManifestRows(ctx, "wc")).get(t)[0]; !m.DeployedAt.Equal(testNow) {
			t.Errorf("an unchanged redeploy wrote deployed_at %v", m.DeployedAt)
		}

		v2 := deployment("wc", "2", "src-2", "")
		v2.Signature, v2.PublisherEmail = "", ""
		res2 := must(s.PluginDeploy(ctx, testNow.Add(2*time.Minute), v2)).get(t)
		if res2.Outcome != db.DeployCreated || res2.Superseded != 1 {
			t.Fatalf("v2: %+v", res2)
		}
		if got := versionsOf(t, s, "wc"); got != "1:SUPERSEDED 2:ACTIVE" {
			t.Fatalf("after v2: %s", got)
		}
		rows := must(s.PluginManifestRows(ctx, "wc")).get(t)
		if rows[1].Signature != "" || rows[1].PublisherID != rows[0].PublisherID {
			t.Errorf("v2 row = %+v; want no signature and ada's publisher %d", rows[1], rows[0].PublisherID)
		}
		// Rolling back to v1 by deploying it again reactivates its row.
		back := must(s.PluginDeploy(ctx, testNow.Add(3*time.Minute), v1)).get(t)
		if back.Outcome != db.DeployReactivated || back.ManifestID != res.ManifestID || back.Superseded != 1 {
			t.Fatalf("rollback: %+v", back)
		}
		if got := versionsOf(t, s, "wc"); got != "1:ACTIVE 2:SUPERSEDED" {
			t.Fatalf("after rollback: %s", got)
		}
		if m := must(s.PluginManifestRows(ctx, "wc")).get(t)[0]; !m.DeployedAt.Equal(testNow.Add(3 * time.Minute)) {
			t.Errorf("reactivated deployed_at = %v", m.DeployedAt)
		}
		// A publisher known by azure_oid is another row than ada by name.
		v3 := deployment("wc", "3", "src-3", "")
		v3.AzureOID = "00000000-0000-0000-0000-000000000001"
		must(s.PluginDeploy(ctx, testNow.Add(4*time.Minute), v3)).get(t)
		v4 := deployment("wc", "4", "src-4", "")
		v4.AzureOID, v4.PublisherName, v4.PublisherEmail = v3.AzureOID, "Ada L.", ""
		must(s.PluginDeploy(ctx, testNow.Add(5*time.Minute), v4)).get(t)
		rows = must(s.PluginManifestRows(ctx, "wc")).get(t)
		if len(rows) != 4 || rows[2].PublisherID == rows[0].PublisherID || rows[3].PublisherID != rows[2].PublisherID {
			t.Errorf("publishers of v1..v4: %d %d %d %d", rows[0].PublisherID, rows[1].PublisherID, rows[2].PublisherID, rows[3].PublisherID)
		}
		if got := versionsOf(t, s, "wc"); got != "1:SUPERSEDED 2:SUPERSEDED 3:SUPERSEDED 4:ACTIVE" {
			t.Errorf("after v4: %s", got)
		}
	})
}

func TestPluginDeploy_RefusesConflictsAndInvalid(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		must(s.PluginDeploy(ctx, testNow, deployment("wc", "1", "src", ""))).get(t)
		for name, d := range map[string]db.Deployment{
			"SameContentOtherVersion": deployment("wc", "1.1", "src", ""),
			"SameContentOtherPlugin":  deployment("other", "1", "src", ""),
			"SameVersionOtherContent": deployment("wc", "1", "src-changed", ""),
		} {
			_, err := s.PluginDeploy(ctx, testNow, d)
			var conflict *db.DeployConflict
			if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "already stored") {
				t.Errorf("%s: %v, want a db.DeployConflict", name, err)
			}
			wantErr(t, name, err, job.ErrConflict)
		}
		for _, blank := range []func(*db.Deployment){
			func(d *db.Deployment) { d.Plugin = "" }, func(d *db.Deployment) { d.Version = "" },
			func(d *db.Deployment) { d.ArtifactHash = "" }, func(d *db.Deployment) { d.EnvHash = "" },
			func(d *db.Deployment) { d.PublisherName = "" },
		} {
			d := deployment("wc", "9", "src-9", "")
			blank(&d)
			_, err := s.PluginDeploy(ctx, testNow, d)
			wantErr(t, fmt.Sprintf("deploy %+v", d), err, job.ErrInvalid)
		}
		if got := versionsOf(t, s, "wc"); got != "1:ACTIVE" {
			t.Errorf("after refusals: %s", got)
		}
		if got := versionsOf(t, s, "other"); got != "" {
			t.Errorf("other plugin stored: %v", got)
		}
		_, err := s.EnvironmentLockfile(ctx, "nope")
		wantErr(t, "unknown environment", err, job.ErrNotFound)
	})
}

func TestPluginDeploy_DispatchCarriesTheNewestArtifact(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		must(s.PluginDeploy(ctx, testNow, deployment("wc", "1", "src-1", "lock"))).get(t)
		v2 := deployment("wc", "2", "src-2", "lock")
		must(s.PluginDeploy(ctx, testNow.Add(time.Second), v2)).get(t)
		fx.enqueue(t, "wc", 0)
		claims := fx.claim(t, testNow, "w1", 1, "*")
		if len(claims) != 1 {
			t.Fatalf("claims: %+v", claims)
		}
		if d := claims[0].Dispatch; d.SourceCode != "src-2" || d.ArtifactHash != v2.ArtifactHash || d.EnvHash != v2.EnvHash {
			t.Fatalf("dispatch carries %+v", d)
		}
	})
}

// The environments list, on both backends: the most recently used first
// (a deploy naming an environment uses it), each with the plugin versions
// whose manifests name it, and how many of those are ACTIVE.
func TestEnvironments_ListWithThePluginsThatUseThem(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		if got := must(s.EnvironmentsList(ctx)).get(t); len(got) != 0 {
			t.Fatalf("fresh environments = %+v", got)
		}
		must(s.PluginDeploy(ctx, testNow, deployment("wc", "1", "src-1", "numpy==2\n"))).get(t)
		must(s.PluginDeploy(ctx, testNow.Add(time.Minute), deployment("wc", "2", "src-2", "pandas\n"))).get(t)
		must(s.PluginDeploy(ctx, testNow.Add(2*time.Minute), deployment("q", "1", "src-q", "numpy==2\n"))).get(t)
		got := must(s.EnvironmentsList(ctx)).get(t)
		want := []job.Environment{
			{Hash: db.SourceHash("numpy==2\n"), LockfileBytes: 9, CreatedAt: testNow, LastUsed: testNow.Add(2 * time.Minute),
				ActivePluginCount: 1, Manifests: []job.EnvironmentUser{
					{Plugin: "q", Version: "1", Status: "ACTIVE"}, {Plugin: "wc", Version: "1", Status: "SUPERSEDED"}}},
			{Hash: db.SourceHash("pandas\n"), LockfileBytes: 7, CreatedAt: testNow.Add(time.Minute), LastUsed: testNow.Add(time.Minute),
				ActivePluginCount: 1, Manifests: []job.EnvironmentUser{{Plugin: "wc", Version: "2", Status: "ACTIVE"}}},
		}
		if len(got) != len(want) {
			t.Fatalf("environments = %+v", got)
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Hash != w.Hash || g.LockfileBytes != w.LockfileBytes || !g.CreatedAt.Equal(w.CreatedAt) || !g.LastUsed.Equal(w.LastUsed) ||
				g.ActivePluginCount != w.ActivePluginCount || !reflect.DeepEqual(g.Manifests, w.Manifests) || g.SizeMB != 0 {
				t.Errorf("environment %d = %+v, want %+v", i, g, w)
			}
		}
	})
}
