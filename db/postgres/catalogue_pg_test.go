package postgres

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// Several Sentinels share one PostgreSQL database: the catalogue's
// read-then-write methods, which SQLite's one writer makes atomic, must
// come out the same when they race.
func TestPostgres_CatalogueWritesRacingEndAsOne(t *testing.T) {
	t.Parallel()
	d := openStore(t)
	ctx := context.Background()
	const n = 6
	race := func(f func(i int)) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { f(i) })
		}
		wg.Wait()
	}
	deploys := make([]db.DeployResult, n)
	rules := make([]int64, n)
	changes := make([]int, n)
	errs := make([]error, 3*n)
	race(func(i int) {
		deploys[i], errs[i] = d.PluginDeploy(ctx, testNow, deployment("wc", "1", "src", ""))
	})
	race(func(i int) {
		rules[i], errs[n+i] = d.RoutingRuleAdd(ctx, "*.csv", "csv", 0)
	})
	race(func(i int) {
		changes[i], errs[2*n+i] = d.BootstrapApply(ctx, demoBootstrap())
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	created, total := 0, 0
	for i := range n {
		if deploys[i].Outcome == db.DeployCreated {
			created++
		} else if deploys[i].Outcome != db.DeployUnchanged {
			t.Errorf("deploy %d: %+v", i, deploys[i])
		}
		if deploys[i].ManifestID != deploys[0].ManifestID || rules[i] != rules[0] {
			t.Errorf("racer %d: manifest %d rule %d, want %d and %d", i, deploys[i].ManifestID, rules[i], deploys[0].ManifestID, rules[0])
		}
		total += changes[i]
	}
	if created != 1 {
		t.Errorf("%d deploys created the manifest, want 1", created)
	}
	// The bootstrap's routes: *.csv→csv was there already.
	if total != 9 {
		t.Errorf("bootstraps changed %d rows in all, want 9 (one apply)", total)
	}
	if rs := must(d.RoutingRules(ctx)).get(t); len(rs) != 2 {
		t.Errorf("routing rules %+v", rs)
	}
}

// PostgreSQL enforces the original's VARCHAR(n) lengths, which SQLite does
// not: a value too long blames the request.
func TestPostgres_TooLongValuesAreInvalid(t *testing.T) {
	t.Parallel()
	d := openStore(t)
	ctx := context.Background()
	long := strings.Repeat("x", 51) // tag is VARCHAR(50)
	_, err := d.RoutingRuleAdd(ctx, "*.x", long, 0)
	wantErr(t, "51-character tag", err, job.ErrInvalid)
	_, err = d.SourceRootAdd(ctx, "/"+strings.Repeat("d", 1000)) // path is VARCHAR(1000)
	wantErr(t, "1001-character root", err, job.ErrInvalid)
	dep := deployment("wc", strings.Repeat("9", 51), "src", "") // version is VARCHAR(50)
	_, err = d.PluginDeploy(ctx, testNow, dep)
	wantErr(t, "51-character version", err, job.ErrInvalid)
	if rs := must(d.RoutingRules(ctx)).get(t); len(rs) != 0 {
		t.Errorf("rules stored: %+v", rs)
	}
}
