package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/casparian/sentinel/job"
)

// The shadow run commands (issue #20 part 5): plugins compare, promote and
// discard. A run begins with `casparian publish --shadow`.

func pluginsCompare(ctx context.Context, c *cli, args []string) error {
	plugin, base, version := args[0], args[1], args[2]
	var res job.ShadowComparison
	raw, err := c.api.call(ctx, "GET", "/api/v1/plugins/"+url.PathEscape(plugin)+"/compare?base="+
		url.QueryEscape(base)+"&version="+url.QueryEscape(version), nil, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	s := res.Summary
	fmt.Fprintf(c.stdout, "%s v%s (shadow run %d, %s) against v%s\n", plugin, version, res.Run.ID, res.Run.State, base)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE VERSION\tTOPIC\tROWS v"+base+"\tROWS v"+version+"\tVERDICT\tDIFFERENCES\tFILE")
	for _, f := range res.Files {
		if len(f.Topics) == 0 {
			fmt.Fprintf(tw, "%d\t-\t-\t-\t%s\t\t%s\n", f.FileVersionID, f.Verdict, f.FilePath)
			continue
		}
		for _, t := range f.Topics {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", f.FileVersionID, t.Topic, rowsText(t.BaseRows), rowsText(t.ShadowRows),
				f.Verdict, strings.Join(t.Differences, "; "), f.FilePath)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%d file versions: %d compared (%d identical, %d differing), %d missing on v%s, %d missing on v%s, %d pending\n",
		s.Files, s.Compared, s.Identical, s.Differing, s.MissingBase, base, s.MissingShadow, version, s.Pending)
	return nil
}

func rowsText(n *int64) string {
	if n == nil {
		return "?"
	}
	return fmt.Sprint(*n)
}

func pluginsShadowEnd(ctx context.Context, c *cli, args []string, promote bool) error {
	plugin, version := args[0], args[1]
	verb := "discard"
	if promote {
		verb = "promote"
	}
	var res job.ShadowEnd
	raw, err := c.api.call(ctx, "POST", "/api/v1/plugins/"+url.PathEscape(plugin)+"/"+verb,
		map[string]string{"version": version}, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	if promote {
		fmt.Fprintf(c.stdout, "%s v%s is ACTIVE (%d earlier version superseded); %d queued shadow jobs cancelled\n",
			plugin, version, res.Superseded, res.Cancelled)
		return nil
	}
	fmt.Fprintf(c.stdout, "shadow run of %s v%s discarded: %d queued shadow jobs cancelled; v%s stays ACTIVE\n",
		plugin, version, res.Cancelled, res.Run.BaseVersion)
	return nil
}
