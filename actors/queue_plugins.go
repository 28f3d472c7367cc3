package actors

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// The queue actor's backfill: which existing files a plugin's subscriptions
// match. It lives apart from queue.go only to keep that file about jobs;
// it runs in the queue actor's mailbox like every other database call.

// backfill queues (or with DryRun counts) a job of the plugin for every
// current file version it has none for and whose tags its subscriptions
// share. A file's tags are its version's applied_tags and the tags of the
// routing rules its path matches now, as the scanner would give a new
// version: a route added after the file was scanned counts. Versions the
// database holds a job of the plugin for are left out twice over: by the
// candidate query and again in the inserting transaction.
func (a *queueActor) backfill(ctx actor.Context, dctx context.Context, m *BackfillPlugin) (job.BackfillResult, error) {
	res := job.BackfillResult{Plugin: strings.TrimSpace(m.Plugin), DryRun: m.DryRun}
	files, err := a.backfillFiles(dctx, res.Plugin)
	if err != nil {
		return res, err
	}
	res.Matched = int64(len(files))
	if m.DryRun || len(files) == 0 {
		return res, nil
	}
	if res.Queued, err = a.deps.db.PluginBackfill(dctx, time.Now(), res.Plugin, files); err != nil {
		return res, err
	}
	a.deps.stats.JobsEnqueued.Add(res.Queued)
	a.log.Info().Str("plugin", res.Plugin).Int64("queued", res.Queued).Msg("plugin backfilled by operator")
	if res.Queued > 0 {
		ctx.Send(a.peers.dispatcher, &QueueChanged{})
	}
	return res, nil
}

// backfillFiles returns the files a backfill of the plugin would queue.
func (a *queueActor) backfillFiles(ctx context.Context, plugin string) ([]db.BackfillFile, error) {
	if plugin == "" {
		return nil, fmt.Errorf("plugin name is required: %w", job.ErrInvalid)
	}
	plugins, err := a.deps.db.PluginsList(ctx)
	if err != nil {
		return nil, err
	}
	var tags []string
	found := false
	for _, p := range plugins {
		if p.Name == plugin {
			tags, found = p.SubscriptionTags, true
		}
	}
	if !found {
		return nil, fmt.Errorf("plugin %q: %w", plugin, job.ErrNotFound)
	}
	if len(tags) == 0 {
		return nil, nil
	}
	rules, err := a.deps.db.RoutingRules(ctx)
	if err != nil {
		return nil, err
	}
	candidates, err := a.deps.db.PluginBackfillFiles(ctx, plugin)
	if err != nil {
		return nil, err
	}
	sub := db.NewSubscription(plugin, db.TagList(tags))
	routes := compileRoutes(rules)
	var out []db.BackfillFile
	for _, f := range candidates {
		if sub.Matches(f.AppliedTags) || sub.Matches(db.TagList(routeTags(routes, f.RelPath))) {
			out = append(out, f)
		}
	}
	return out, nil
}

// compileRoutes compiles the routing rules as a scan pass does; a rule
// whose pattern does not compile, or without a tag, gives no tag.
func compileRoutes(rules []job.RoutingRule) []route {
	var out []route
	for _, r := range rules {
		if g, ok := compileGlob(r.Pattern); ok && r.Tag != "" {
			out = append(out, route{glob: g, tag: r.Tag})
		}
	}
	return out
}

// routeTags are the tags of every route the path matches.
func routeTags(routes []route, rel string) []string {
	var out []string
	for _, r := range routes {
		if r.glob.matchFile(rel) {
			out = append(out, r.tag)
		}
	}
	return out
}
