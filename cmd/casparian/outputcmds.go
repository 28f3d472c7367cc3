package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/casparian/sentinel/internal/api"
)

// The lineage commands (issue #20): files lineage, outputs provenance,
// stale and rerun-stale.

func filesLineage(ctx context.Context, c *cli, args []string) error {
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || id <= 0 {
		return usagef("files lineage: VERSION_ID must be a positive whole number, got %q", args[0])
	}
	return c.outputs(ctx, "/api/v1/files/"+strconv.FormatInt(id, 10)+"/lineage")
}

func outputsProvenance(ctx context.Context, c *cli, args []string) error {
	return c.outputs(ctx, "/api/v1/artifacts/provenance?uri="+url.QueryEscape(args[0]))
}

func outputsStale(ctx context.Context, c *cli, _ []string) error {
	path := "/api/v1/outputs/stale"
	if p := *c.str["plugin"]; p != "" {
		path += "?plugin=" + url.QueryEscape(p)
	}
	return c.outputs(ctx, path)
}

func outputsRerunStale(ctx context.Context, c *cli, _ []string) error {
	var res api.RerunStaleResult
	raw, err := c.api.call(ctx, "POST", "/api/v1/outputs/stale/rerun",
		api.RerunStaleRequest{Plugin: *c.str["plugin"], DryRun: *c.flag["dry-run"]}, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	if res.DryRun {
		fmt.Fprintf(c.stdout, "%d stale file × plugin pairs would be queued again\n", res.Matched)
		return nil
	}
	fmt.Fprintf(c.stdout, "%d jobs queued for stale outputs (%d of them reused an earlier result)\n", res.Queued, res.Reused)
	return nil
}

// outputs GETs a list of outputs and prints it.
func (c *cli) outputs(ctx context.Context, path string) error {
	var res api.Outputs
	raw, err := c.api.call(ctx, "GET", path, nil, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	rows := make([][]string, len(res.Outputs))
	for i, o := range res.Outputs {
		stale := ""
		if o.Stale {
			stale = o.StaleReason
		}
		from := ""
		if o.ReusedFromJob != 0 {
			from = "reused from " + strconv.FormatInt(o.ReusedFromJob, 10)
		}
		rows[i] = []string{strconv.FormatInt(o.JobID, 10), strconv.FormatInt(o.FileVersionID, 10), o.FilePath, o.Plugin,
			short(o.ArtifactHash), o.Topic, o.URI, count(o.Rows), stale, from}
	}
	return c.table("JOB\tVERSION\tFILE\tPLUGIN\tMANIFEST\tTOPIC\tURI\tROWS\tSTALE\tREUSED", rows)
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

func count(n *int64) string {
	if n == nil {
		return "-"
	}
	return strconv.FormatInt(*n, 10)
}
