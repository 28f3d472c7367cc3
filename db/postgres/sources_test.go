package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/casparian/sentinel/job"
)

func TestSources_RootsAddListAndRefuse(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		before := must(s.SourceRoots(ctx, false)).get(t)
		if len(before) != 1 || before[0].Path != "/data" {
			t.Fatalf("fixture roots = %+v", before)
		}
		in := must(s.SourceRootAdd(ctx, "/data/in/")).get(t)
		if in.Path != "/data/in" || !in.Active || in.Type != "local" || in.ID == 0 || in.ID == before[0].ID {
			t.Errorf("root = %+v", in)
		}
		if again := must(s.SourceRootAdd(ctx, "/data/./in")).get(t); again.ID != in.ID || again.Path != "/data/in" {
			t.Errorf("same root again = %+v, want id %d", again, in.ID)
		}
		for _, bad := range []string{"", "relative", "./data"} {
			_, err := s.SourceRootAdd(ctx, bad)
			wantErr(t, fmt.Sprintf("root %q", bad), err, job.ErrInvalid)
		}
		all := must(s.SourceRoots(ctx, false)).get(t)
		active := must(s.SourceRoots(ctx, true)).get(t)
		for _, got := range [][]job.SourceRoot{all, active} {
			if len(got) != 2 || got[0].Path != "/data" || got[1] != in {
				t.Errorf("roots = %+v, want /data then %+v", got, in)
			}
		}
	})
}

func TestSources_RoutingRulesDeduplicatedByPatternAndTag(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		csv := must(s.RoutingRuleAdd(ctx, " *.csv ", " csv ", 0)).get(t)
		if again := must(s.RoutingRuleAdd(ctx, "*.csv", "csv", 5)).get(t); again != csv {
			t.Errorf("same rule again = %d, want %d", again, csv)
		}
		raw := must(s.RoutingRuleAdd(ctx, "data/**", "raw", 9)).get(t)
		other := must(s.RoutingRuleAdd(ctx, "*.csv", "table", -1)).get(t)
		if raw == csv || other == csv || other == raw {
			t.Errorf("ids csv=%d raw=%d other=%d must differ", csv, raw, other)
		}
		for _, bad := range [][2]string{{"", "x"}, {"  ", "x"}, {"*.x", ""}, {"*.x", "a,b"}} {
			_, err := s.RoutingRuleAdd(ctx, bad[0], bad[1], 0)
			wantErr(t, fmt.Sprintf("rule %q", bad), err, job.ErrInvalid)
		}
		rules := must(s.RoutingRules(ctx)).get(t)
		var got []string
		for _, r := range rules {
			got = append(got, fmt.Sprintf("%d:%s:%s:%d", r.ID, r.Pattern, r.Tag, r.Priority))
		}
		want := []string{fmt.Sprintf("%d:data/**:raw:9", raw), fmt.Sprintf("%d:*.csv:csv:0", csv),
			fmt.Sprintf("%d:*.csv:table:-1", other)}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("rules = %v, want %v", got, want)
		}
	})
}

func TestSources_IgnoreRules(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, fx fixture) {
		s, ctx := fx.cat(t), context.Background()
		root := must(s.SourceRoots(ctx, true)).get(t)[0]
		if got := must(s.IgnoreRules(ctx)).get(t); len(got) != 0 {
			t.Fatalf("fresh ignore rules = %+v", got)
		}
		global := must(s.IgnoreRuleAdd(ctx, 0, " *.tmp ")).get(t)
		local := must(s.IgnoreRuleAdd(ctx, root.ID, "cache/")).get(t)
		_, err := s.IgnoreRuleAdd(ctx, 0, "  ")
		wantErr(t, "blank ignore rule", err, job.ErrInvalid)
		got := must(s.IgnoreRules(ctx)).get(t)
		if len(got) != 2 || got[0].ID != global || got[0].RootID != 0 || got[0].Pattern != "*.tmp" ||
			got[1].ID != local || got[1].RootID != root.ID || got[1].Pattern != "cache/" {
			t.Errorf("ignore rules = %+v", got)
		}
	})
}
