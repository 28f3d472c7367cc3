package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func deployment(plugin, version, source, lock string) Deployment {
	return Deployment{Plugin: plugin, Version: version, SourceCode: source, Lockfile: lock,
		EnvHash: sha(lock), ArtifactHash: sha(source + lock), Signature: "ab", PublisherName: "ada",
		PublisherEmail: "ada@example.com", SystemRequirements: []string{"glibc"}}
}

func statuses(t *testing.T, db *DB, plugin string) []string {
	t.Helper()
	rows, err := db.PluginManifestRows(context.Background(), plugin)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		out = append(out, r.Version+":"+r.Status)
	}
	return out
}

func TestPluginDeploy_StoresSupersedesAndIsIdempotent(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	v1 := deployment("wc", "1", "src-1", "numpy==2\n")
	res, err := db.PluginDeploy(ctx, testNow, v1)
	if err != nil || res.Outcome != DeployCreated || res.ManifestID == 0 {
		t.Fatalf("first deploy: %+v, %v", res, err)
	}
	rows, _ := db.PluginManifestRows(ctx, "wc")
	m := rows[0]
	if m.Status != "ACTIVE" || m.SourceHash != v1.ArtifactHash || m.ArtifactHash != v1.ArtifactHash ||
		m.EnvHash != v1.EnvHash || m.Signature != "ab" || m.PublisherID == 0 || !m.DeployedAt.Equal(testNow) {
		t.Fatalf("stored %+v", m)
	}
	if lock, err := db.EnvironmentLockfile(ctx, v1.EnvHash); err != nil || lock != "numpy==2\n" {
		t.Fatalf("environment: %q, %v", lock, err)
	}

	again, err := db.PluginDeploy(ctx, testNow.Add(time.Minute), v1)
	if err != nil || again.Outcome != DeployUnchanged || again.ManifestID != res.ManifestID {
		t.Fatalf("redeploy: %+v, %v", again, err)
	}

	v2 := deployment("wc", "2", "src-2", "")
	res2, err := db.PluginDeploy(ctx, testNow.Add(2*time.Minute), v2)
	if err != nil || res2.Outcome != DeployCreated || res2.Superseded != 1 {
		t.Fatalf("v2: %+v, %v", res2, err)
	}
	if got := strings.Join(statuses(t, db, "wc"), " "); got != "1:SUPERSEDED 2:ACTIVE" {
		t.Fatalf("after v2: %s", got)
	}
	// Rolling back to v1 by deploying it again reactivates its row.
	back, err := db.PluginDeploy(ctx, testNow.Add(3*time.Minute), v1)
	if err != nil || back.Outcome != DeployReactivated || back.ManifestID != res.ManifestID || back.Superseded != 1 {
		t.Fatalf("rollback: %+v, %v", back, err)
	}
	if got := strings.Join(statuses(t, db, "wc"), " "); got != "1:ACTIVE 2:SUPERSEDED" {
		t.Fatalf("after rollback: %s", got)
	}

	// One publisher row for ada, however often she deploys.
	var publishers int
	if err := db.reader.QueryRow(`SELECT COUNT(*) FROM cf_publisher WHERE name = 'ada'`).Scan(&publishers); err != nil || publishers != 1 {
		t.Fatalf("publishers: %d, %v", publishers, err)
	}
}

func TestPluginDeploy_RefusesConflicts(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.PluginDeploy(ctx, testNow, deployment("wc", "1", "src", "")); err != nil {
		t.Fatal(err)
	}
	cases := map[string]Deployment{
		"SameContentOtherVersion": deployment("wc", "1.1", "src", ""),
		"SameContentOtherPlugin":  deployment("other", "1", "src", ""),
		"SameVersionOtherContent": deployment("wc", "1", "src-changed", ""),
	}
	for name, d := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := db.PluginDeploy(ctx, testNow, d)
			if !errors.Is(err, job.ErrConflict) || strings.Contains(err.Error(), "UNIQUE") {
				t.Fatalf("deploy = %v, want a clear job.ErrConflict", err)
			}
		})
	}
	if got := strings.Join(statuses(t, db, "wc"), " "); got != "1:ACTIVE" {
		t.Fatalf("after refusals: %s", got)
	}
	if got := statuses(t, db, "other"); len(got) != 0 {
		t.Fatalf("other plugin stored: %v", got)
	}
}

func TestPluginDeploy_DispatchCarriesTheNewestArtifact(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	s := seedBasics(t, db)
	if _, err := db.PluginDeploy(ctx, testNow, deployment("wc", "1", "src-1", "lock")); err != nil {
		t.Fatal(err)
	}
	v2 := deployment("wc", "2", "src-2", "lock")
	if _, err := db.PluginDeploy(ctx, testNow.Add(time.Second), v2); err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, s.fv, "wc", 0)
	claims := claim(t, db, "w1", 1, "*")
	if len(claims) != 1 {
		t.Fatalf("claims: %+v", claims)
	}
	d := claims[0].Dispatch
	if d.SourceCode != "src-2" || d.ArtifactHash != v2.ArtifactHash || d.EnvHash != v2.EnvHash {
		t.Fatalf("dispatch carries %+v", d)
	}
}

func TestJobsClaim_ExcludeSkipsPlugins(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "a", "b")
	ja := enqueue(t, db, s.fv, "a", 10)
	jb := enqueue(t, db, s.fv, "b", 0)
	claims, _, err := db.JobsClaim(context.Background(), testNow, []job.ClaimRequest{{Worker: "w", Plugins: []string{"*"}, Limit: 5, Exclude: []string{"a"}}})
	if err != nil {
		t.Fatal(err)
	}
	if ids := claimIDs(claims); len(ids) != 1 || ids[0] != jb {
		t.Fatalf("claimed %v, want only %d (not %d)", ids, jb, ja)
	}
}

func TestEnvironmentLockfile_NotFound(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	if _, err := db.EnvironmentLockfile(context.Background(), "nope"); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
}

func TestJobsClaim_PreferredPluginsGoFirstWithinTheLimit(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db, "env", "plain")
	plain := enqueue(t, db, s.fv, "plain", 10)
	env1 := enqueue(t, db, s.fv, "env", 0)
	env2 := enqueue(t, db, s.fv, "env", 0)
	// "a" runs first and would take the highest-priority jobs, but "z" has
	// the environment of "env" ready: it gets those first, "a" the rest.
	claims, _, err := db.JobsClaim(context.Background(), testNow, []job.ClaimRequest{
		{Worker: "a", Plugins: []string{"*"}, Limit: 2},
		{Worker: "z", Plugins: []string{"*"}, Limit: 1, Prefer: []string{"env"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	by := map[int64]string{}
	for _, c := range claims {
		by[c.Ref.JobID] = c.Ref.Worker
	}
	if len(claims) != 3 || by[env1] != "z" || by[plain] != "a" || by[env2] != "a" {
		t.Fatalf("claims by job: %v", by)
	}
}
