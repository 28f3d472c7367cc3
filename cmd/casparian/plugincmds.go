package main

import (
	"context"
	"fmt"
	"net/url"
	"slices"

	"github.com/casparian/sentinel/internal/api"
)

// The commands for a plugin's own settings, backfills and reruns, and the
// rescan.

func pluginsPause(ctx context.Context, c *cli, args []string, pause bool) error {
	verb := map[bool]string{true: "pause", false: "resume"}[pause]
	var res api.PluginSettingsResult
	raw, err := c.api.call(ctx, "POST", "/api/v1/plugins/"+url.PathEscape(args[0])+"/"+verb, nil, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	if pause {
		fmt.Fprintf(c.stdout, "plugin %s paused: its queued jobs wait; running ones finish\n", res.Plugin)
		return nil
	}
	fmt.Fprintf(c.stdout, "plugin %s resumed\n", res.Plugin)
	return nil
}

func pluginsSet(ctx context.Context, c *cli, args []string) error {
	var req api.PluginSettingsRequest
	if s := *c.str["job-timeout"]; s != "" {
		if _, err := api.ParseJobTimeout(s); err != nil {
			return usagef("plugins set: --job-timeout: %v", err)
		}
		req.JobTimeout = &s
	}
	switch n := *c.num["max-retries"]; {
	case n == -2: // not given
	case n < -1:
		return usagef("plugins set: --max-retries must be a count, or -1 for the Sentinel's --max-retries")
	default:
		m := int(n)
		req.MaxRetries = &m
	}
	if s := *c.str["reuse"]; s != "" {
		if s != "on" && s != "off" && s != "default" {
			return usagef("plugins set: --reuse must be on, off or default")
		}
		req.Reuse = &s
	}
	if req.JobTimeout == nil && req.MaxRetries == nil && req.Reuse == nil {
		return usagef("plugins set: give --job-timeout, --max-retries or --reuse")
	}
	var res api.PluginSettingsResult
	raw, err := c.api.call(ctx, "POST", "/api/v1/plugins/"+url.PathEscape(args[0])+"/settings", req, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	timeout, retries := settingsText(res.Settings)
	reuse := "default"
	if r := res.Settings.Reuse; r != nil {
		reuse = map[bool]string{true: "on", false: "off"}[*r]
	}
	fmt.Fprintf(c.stdout, "plugin %s: job timeout %s, max retries %s, reuse %s\n", res.Plugin, timeout, retries, reuse)
	return nil
}

// settingsText renders a plugin's job timeout and max retries, "default"
// where the Sentinel's own settings hold.
func settingsText(s api.PluginSettings) (timeout, retries string) {
	timeout, retries = "default", "default"
	if s.JobTimeout != "" {
		timeout = s.JobTimeout
		if timeout == "0s" {
			timeout = "none"
		}
	}
	if s.MaxRetries != nil {
		retries = fmt.Sprint(*s.MaxRetries)
	}
	return timeout, retries
}

func pluginsBackfill(ctx context.Context, c *cli, args []string) error {
	return backfillOrRerun(ctx, c, args[0], "backfill", "existing files match plugin %s and have no job of it",
		"jobs of plugin %s queued for existing files")
}

func pluginsRerun(ctx context.Context, c *cli, args []string) error {
	return backfillOrRerun(ctx, c, args[0], "rerun", "files were processed by plugin %s before its active version was deployed",
		"jobs of plugin %s queued again for its active version")
}

func backfillOrRerun(ctx context.Context, c *cli, plugin, verb, preview, done string) error {
	var res api.BackfillResult
	raw, err := c.api.call(ctx, "POST", "/api/v1/plugins/"+url.PathEscape(plugin)+"/"+verb,
		api.BackfillRequest{DryRun: !*c.flag["yes"]}, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	if res.DryRun {
		fmt.Fprintf(c.stdout, "%d "+preview+"; run again with --yes to queue them\n", res.Matched, res.Plugin)
		return nil
	}
	fmt.Fprintf(c.stdout, "%d "+done+"\n", res.Queued, res.Plugin)
	return nil
}

func sourcesRescan(ctx context.Context, c *cli, _ []string) error {
	var res api.RescanResult
	raw, err := c.api.call(ctx, "POST", "/api/v1/sources/rescan", nil, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	fmt.Fprintln(c.stdout, "scan started")
	return nil
}

// backfillHints tells, after a route or a subscription was added, how many
// existing files each plugin concerned could be backfilled with: plugins
// names them, or with tag set, the plugins subscribed to it. A failed
// preview only loses the hint: what the command did has been done.
func backfillHints(ctx context.Context, c *cli, plugins []string, tag string) {
	if tag != "" {
		var list api.PluginList
		if _, err := c.api.get(ctx, "/api/v1/plugins", &list); err != nil {
			return
		}
		for _, p := range list.Plugins {
			if slices.Contains(p.SubscriptionTags, tag) {
				plugins = append(plugins, p.Name)
			}
		}
	}
	for _, p := range plugins {
		var res api.BackfillResult
		if _, err := c.api.call(ctx, "POST", "/api/v1/plugins/"+url.PathEscape(p)+"/backfill",
			api.BackfillRequest{DryRun: true}, &res); err != nil || res.Matched == 0 {
			continue
		}
		fmt.Fprintf(c.stdout, "%d existing files match; run casparian plugins backfill %s --yes to queue them\n", res.Matched, p)
	}
}
