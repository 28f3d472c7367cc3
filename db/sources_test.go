package db

import (
	"context"
	"errors"
	"testing"

	"github.com/casparian/sentinel/job"
)

func TestRoutingRulesSourcesAndIgnoreRules(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	id, err := db.RoutingRuleAdd(ctx, "*.csv", "csv", 0)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := db.RoutingRuleAdd(ctx, "*.csv", "csv", 5); err != nil || again != id {
		t.Errorf("same rule again = %d, %v; want %d", again, err, id)
	}
	if _, err := db.RoutingRuleAdd(ctx, "data/**", "raw", 9); err != nil {
		t.Fatal(err)
	}
	rules, err := db.RoutingRules(ctx)
	if err != nil || len(rules) != 2 || rules[0].Tag != "raw" {
		t.Errorf("rules = %+v, %v", rules, err)
	}
	if _, err := db.RoutingRuleAdd(ctx, "", "x", 0); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("empty pattern: %v", err)
	}

	root, err := db.SourceRootAdd(ctx, "/data/in/")
	if err != nil || root.Path != "/data/in" || !root.Active {
		t.Fatalf("root = %+v, %v", root, err)
	}
	raw := rawOpen(t, db.Path())
	rawExec(t, raw, `UPDATE cf_source_root SET active = 0`)
	if active, _ := db.SourceRoots(ctx, true); len(active) != 0 {
		t.Errorf("inactive root listed as active: %+v", active)
	}
	if again, err := db.SourceRootAdd(ctx, "/data/in"); err != nil || again.ID != root.ID {
		t.Errorf("reactivate = %+v, %v", again, err)
	}
	if active, _ := db.SourceRoots(ctx, true); len(active) != 1 {
		t.Errorf("reactivated root not active: %+v", active)
	}
	if _, err := db.SourceRootAdd(ctx, "relative"); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("relative root: %v", err)
	}

	if _, err := db.IgnoreRuleAdd(ctx, 0, "*.tmp"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.IgnoreRuleAdd(ctx, root.ID, "cache/"); err != nil {
		t.Fatal(err)
	}
	rawExec(t, raw, `INSERT INTO cf_ignore_rule (pattern, active) VALUES ('old', 0), ('legacy', NULL)`)
	ign, err := db.IgnoreRules(ctx)
	if err != nil || len(ign) != 3 || ign[0].RootID != 0 || ign[1].RootID != root.ID || ign[2].Pattern != "legacy" {
		t.Errorf("ignore rules = %+v, %v", ign, err)
	}
}

func TestSourceRootAdd_Upserts(t *testing.T) {
	t.Parallel()
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
