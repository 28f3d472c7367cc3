package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/casparian/sentinel/internal/api"
)

// printJSON writes the API's answer as it came (the server indents it).
func (c *cli) printJSON(raw []byte) error {
	_, err := c.stdout.Write(raw)
	return err
}

func (c *cli) table(header string, rows [][]string) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func jobID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, usagef("job id must be a positive whole number, got %q", s)
	}
	return id, nil
}

// jobFilterFlags are the flags that select jobs (jobs ls, jobs bulk).
func jobFilterFlags(fs *flag.FlagSet) {
	fs.String("status", "", "only jobs with this status (PENDING, QUEUED, RUNNING, COMPLETED, FAILED, SKIPPED)")
	fs.String("plugin", "", "only jobs of this plugin")
	fs.String("path", "", "only jobs whose file path contains this text (any case)")
	fs.String("error", "", "only jobs whose error message contains this text (any case)")
}

func jobsList(ctx context.Context, c *cli, _ []string) error {
	q := url.Values{}
	if s := *c.str["status"]; s != "" {
		q.Set("status", strings.ToUpper(s))
	}
	for _, name := range []string{"plugin", "path", "error"} {
		if v := *c.str[name]; v != "" {
			q.Set(name, v)
		}
	}
	for _, name := range []string{"sort", "order", "after"} {
		if v := *c.str[name]; v != "" {
			q.Set(name, v)
		}
	}
	q.Set("limit", strconv.FormatInt(*c.num["limit"], 10))
	q.Set("offset", strconv.FormatInt(*c.num["offset"], 10))
	if b := *c.num["before"]; b != 0 {
		q.Set("before_id", strconv.FormatInt(b, 10))
	}
	var list api.JobList
	raw, err := c.api.get(ctx, "/api/v1/jobs?"+q.Encode(), &list)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	rows := make([][]string, len(list.Jobs))
	now := time.Now()
	for i, j := range list.Jobs {
		rows[i] = []string{strconv.FormatInt(j.ID, 10), j.Status, j.Plugin, fileOf(j), strconv.FormatInt(j.Priority, 10),
			orDash(j.Worker), ago(now, j.UpdatedAt), ago(now, j.EndTime), clip(orDefault(j.ErrorMessage, j.ResultSummary), 60)}
	}
	if err := c.table("ID\tSTATUS\tPLUGIN\tFILE\tPRIORITY\tWORKER\tUPDATED\tENDED\tRESULT", rows); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%d of %d jobs", len(list.Jobs), list.Total)
	if list.Offset > 0 || int64(list.Offset+len(list.Jobs)) < list.Total {
		fmt.Fprintf(c.stdout, " (from offset %d)", list.Offset)
	}
	if list.Sort != "" && (list.Sort != "id" || list.Order != "desc") {
		fmt.Fprintf(c.stdout, ", by %s %s", list.Sort, list.Order)
	}
	fmt.Fprintln(c.stdout)
	if list.NextCursor != "" {
		fmt.Fprintf(c.stdout, "next page: --after %s\n", list.NextCursor)
	}
	return nil
}

func jobsShow(ctx context.Context, c *cli, args []string) error {
	id, err := jobID(args[0])
	if err != nil {
		return err
	}
	var j api.Job
	raw, err := c.api.get(ctx, fmt.Sprintf("/api/v1/jobs/%d", id), &j)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	return c.printJob(j)
}

func (c *cli) printJob(j api.Job) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	line("Job", strconv.FormatInt(j.ID, 10))
	status := j.Status
	if j.CancelRequested && j.Status == "RUNNING" {
		status += " (cancel requested, waiting for the worker to abort)"
	}
	line("Status", status)
	line("Plugin", j.Plugin)
	line("File", fileOf(j))
	line("File version", strconv.FormatInt(j.FileVersionID, 10))
	line("Priority", strconv.FormatInt(j.Priority, 10))
	line("Attempt", fmt.Sprintf("%d (retries %d)", j.Attempt, j.RetryCount))
	line("Worker", j.Worker)
	line("Claimed", stamp(j.ClaimTime))
	line("Ended", stamp(j.EndTime))
	line("Updated", stamp(j.UpdatedAt))
	line("Result", j.ResultSummary)
	line("Error", j.ErrorMessage)
	if len(j.ConfigOverrides) > 0 {
		line("Overrides", string(j.ConfigOverrides))
	}
	if len(j.Metrics) > 0 {
		keys := make([]string, 0, len(j.Metrics))
		for k := range j.Metrics {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%d", k, j.Metrics[k])
		}
		line("Metrics", strings.Join(parts, " "))
	}
	for i, a := range j.Artifacts {
		keys := make([]string, 0, len(a))
		for k := range a {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for n, k := range keys {
			parts[n] = k + "=" + a[k]
		}
		line(fmt.Sprintf("Artifact %d", i+1), strings.Join(parts, " "))
	}
	if d := j.Dispatch; d != nil {
		desc := fmt.Sprintf("%s on %s, env %s, %d bytes of source", d.PluginName, d.FilePath, d.EnvHash, d.SourceBytes)
		if d.Reason != "" {
			desc = "cannot be sent now: " + d.Reason
		}
		line("DISPATCH", desc)
		for _, s := range d.Sinks {
			line("  sink "+s.Topic, s.URI+" ("+s.Mode+")")
		}
	}
	for _, a := range j.Attempts {
		desc := a.Outcome
		if a.Worker != "" {
			desc += " on " + a.Worker
		}
		if a.ClaimTime != nil {
			desc += ", claimed " + stamp(a.ClaimTime)
		}
		if a.EndTime != nil {
			desc += ", ended " + stamp(a.EndTime)
		}
		if a.Message != "" {
			desc += ": " + a.Message
		}
		line(fmt.Sprintf("Attempt %d", a.Attempt), desc)
	}
	return tw.Flush()
}

func jobsEnqueue(ctx context.Context, c *cli, _ []string) error {
	plugin := *c.str["plugin"]
	if plugin == "" {
		return usagef("--plugin is required")
	}
	req := api.EnqueueRequest{Plugin: plugin}
	file, version := *c.str["file"], *c.num["file-version"]
	switch {
	case file == "" && version == 0:
		return usagef("give the file with --file PATH or --file-version ID")
	case file != "" && version != 0:
		return usagef("give --file or --file-version, not both")
	case file != "":
		abs, err := filepath.Abs(file)
		if err != nil {
			return err
		}
		req.FilePath = abs
	default:
		req.FileVersionID = version
	}
	req.Priority = *c.num["priority"]
	if o := *c.str["config-overrides"]; o != "" {
		if !json.Valid([]byte(o)) {
			return usagef("--config-overrides is not valid JSON")
		}
		req.ConfigOverrides = json.RawMessage(o)
	}
	var j api.Job
	raw, err := c.api.call(ctx, "POST", "/api/v1/jobs", req, &j)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	fmt.Fprintf(c.stdout, "queued job %d: %s on %s (priority %d)\n", j.ID, j.Plugin, fileOf(j), j.Priority)
	if j.Warning != "" {
		fmt.Fprintf(c.stderr, "warning: %s\n", j.Warning)
	}
	return nil
}

func jobsCancel(ctx context.Context, c *cli, args []string) error {
	id, err := jobID(args[0])
	if err != nil {
		return err
	}
	var res api.CancelResponse
	raw, err := c.api.call(ctx, "POST", fmt.Sprintf("/api/v1/jobs/%d/cancel", id), nil, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	switch {
	case res.AbortSent:
		fmt.Fprintf(c.stdout, "job %d was RUNNING on %s: ABORT sent; it ends SKIPPED when the worker confirms\n", id, res.Job.Worker)
	case res.PreviousStatus == "SKIPPED":
		fmt.Fprintf(c.stdout, "job %d was already SKIPPED\n", id)
	default:
		fmt.Fprintf(c.stdout, "job %d cancelled: %s → %s\n", id, res.PreviousStatus, res.Job.Status)
	}
	return nil
}

func jobsRetry(ctx context.Context, c *cli, args []string) error {
	id, err := jobID(args[0])
	if err != nil {
		return err
	}
	var j api.Job
	raw, err := c.api.call(ctx, "POST", fmt.Sprintf("/api/v1/jobs/%d/retry", id), nil, &j)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	fmt.Fprintf(c.stdout, "job %d queued again (was FAILED)\n", id)
	return nil
}

func workersList(ctx context.Context, c *cli, _ []string) error {
	var list api.WorkerList
	raw, err := c.api.get(ctx, "/api/v1/workers", &list)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	return c.printWorkers(list.Workers)
}

func (c *cli) printWorkers(ws []api.Worker) error {
	now := time.Now()
	rows := make([][]string, len(ws))
	for i, w := range ws {
		running := make([]string, len(w.RunningJobs))
		for n, id := range w.RunningJobs {
			running[n] = strconv.FormatInt(id, 10)
		}
		state := "active"
		if w.Draining {
			state = "draining"
		}
		rows[i] = []string{w.ID, orDash(w.Name), strings.Join(w.Capabilities, ","), fmt.Sprintf("%d/%d", w.Busy, w.Slots),
			orDash(strings.Join(running, ",")), state, ago(now, &w.LastSeen), orDash(w.KeyFingerprint)}
	}
	if err := c.table("ID\tNAME\tCAPABILITIES\tBUSY\tRUNNING\tSTATE\tLAST SEEN\tKEY", rows); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%d workers\n", len(ws))
	return nil
}

// workersAction drains, undrains or disconnects worker args[0].
func workersAction(ctx context.Context, c *cli, args []string, action string) error {
	var res api.WorkerActionResult
	raw, err := c.api.call(ctx, "POST", "/api/v1/workers/"+url.PathEscape(args[0])+"/"+action, nil, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	switch action {
	case "drain":
		fmt.Fprintf(c.stdout, "worker %s draining: it gets no new jobs; its running jobs finish (undrain to resume)\n", res.Worker)
	case "undrain":
		fmt.Fprintf(c.stdout, "worker %s gets jobs again\n", res.Worker)
	default:
		fmt.Fprintf(c.stdout, "worker %s disconnected: its running jobs are queued again; it was told to identify again\n", res.Worker)
	}
	return nil
}

func environmentsList(ctx context.Context, c *cli, _ []string) error {
	var list api.EnvironmentList
	raw, err := c.api.get(ctx, "/api/v1/environments", &list)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	now := time.Now()
	rows := make([][]string, len(list.Environments))
	for i, e := range list.Environments {
		size := "-"
		if e.SizeMB > 0 {
			size = strconv.FormatFloat(e.SizeMB, 'f', 1, 64) + " MB"
		}
		users := make([]string, len(e.Plugins))
		for n, u := range e.Plugins {
			users[n] = u.Plugin + " " + u.Version
			if u.Status != "ACTIVE" {
				users[n] += " (" + strings.ToLower(u.Status) + ")"
			}
		}
		rows[i] = []string{e.Hash, size, strconv.FormatInt(e.LockfileBytes, 10), ago(now, e.LastUsed), ago(now, e.CreatedAt),
			orDash(strings.Join(users, ", "))}
	}
	if err := c.table("HASH\tSIZE\tLOCKFILE BYTES\tLAST USED\tCREATED\tPLUGINS", rows); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%d environments\n", len(list.Environments))
	return nil
}

func pluginsList(ctx context.Context, c *cli, _ []string) error {
	var list api.PluginList
	raw, err := c.api.get(ctx, "/api/v1/plugins", &list)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	rows := make([][]string, len(list.Plugins))
	for i, p := range list.Plugins {
		active, deployed := "-", "-"
		if p.Active != nil {
			active, deployed = p.Active.Version, stamp(p.Active.DeployedAt)
		}
		state := "running"
		if p.Settings.Paused {
			state = "paused"
		}
		timeout, retries := settingsText(p.Settings)
		rows[i] = []string{p.Name, active, strconv.Itoa(len(p.Versions)), deployed, orDash(strings.Join(p.SubscriptionTags, ",")),
			state, timeout, retries}
	}
	return c.table("PLUGIN\tACTIVE\tVERSIONS\tDEPLOYED\tSUBSCRIBED TAGS\tSTATE\tJOB TIMEOUT\tMAX RETRIES", rows)
}

func jobsBulk(ctx context.Context, c *cli, args []string) error {
	action := args[0]
	if action != "retry" && action != "cancel" {
		return usagef("jobs bulk: want retry or cancel, got %q", action)
	}
	req := api.BulkRequest{Action: action, Status: strings.ToUpper(*c.str["status"]), Plugin: *c.str["plugin"],
		Path: *c.str["path"], Error: *c.str["error"], DryRun: !*c.flag["yes"]}
	var res api.BulkResult
	raw, err := c.api.call(ctx, "POST", "/api/v1/jobs/bulk", req, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	verb := map[string]string{"retry": "retried", "cancel": "cancelled"}[action]
	if res.DryRun {
		fmt.Fprintf(c.stdout, "%d jobs would be %s; run again with --yes to do it\n", res.Matched, verb)
		return nil
	}
	fmt.Fprintf(c.stdout, "%d jobs %s\n", res.Changed, verb)
	return nil
}

func jobsPrune(ctx context.Context, c *cli, _ []string) error {
	req := api.PruneRequest{CompletedOlderThan: *c.str["completed-older-than"], FailedOlderThan: *c.str["failed-older-than"],
		DryRun: !*c.flag["yes"]}
	if req.CompletedOlderThan == "" && req.FailedOlderThan == "" {
		return usagef("jobs prune: give --completed-older-than or --failed-older-than")
	}
	var res api.PruneResult
	raw, err := c.api.call(ctx, "POST", "/api/v1/jobs/prune", req, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	if res.DryRun {
		fmt.Fprintf(c.stdout, "%d COMPLETED and %d FAILED or SKIPPED jobs would be deleted; run again with --yes to do it\n",
			res.Completed, res.Failed)
		return nil
	}
	fmt.Fprintf(c.stdout, "%d COMPLETED and %d FAILED or SKIPPED jobs deleted\n", res.Completed, res.Failed)
	return nil
}

func pluginsAddBuiltin(ctx context.Context, c *cli, args []string) error {
	var res api.BuiltinAdded
	raw, err := c.api.call(ctx, "POST", "/api/v1/plugins/builtin", api.BuiltinRequest{Name: args[0], Subscribe: args[1:]}, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	state := "registered"
	if res.Changes == 0 {
		state = "already registered"
	}
	active := "-"
	if res.Plugin.Active != nil {
		active = res.Plugin.Active.Version
	}
	fmt.Fprintf(c.stdout, "built-in plugin %s %s (active version %s)", res.Plugin.Name, state, active)
	if len(res.Plugin.SubscriptionTags) > 0 {
		fmt.Fprintf(c.stdout, ", subscribed to: %s", strings.Join(res.Plugin.SubscriptionTags, ", "))
	}
	fmt.Fprintln(c.stdout)
	return nil
}

func pluginsSubscribe(ctx context.Context, c *cli, args []string) error {
	if isTopicRef(args[1:]) {
		return pluginsSubscribeTopic(ctx, c, args) // chaincmds.go
	}
	var res api.Subscription
	raw, err := c.api.call(ctx, "POST", "/api/v1/plugins/"+url.PathEscape(args[0])+"/subscriptions",
		api.SubscribeRequest{Tags: args[1:]}, &res)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	fmt.Fprintf(c.stdout, "plugin %s subscribes to: %s\n", res.Plugin, strings.Join(res.SubscriptionTags, ", "))
	backfillHints(ctx, c, []string{res.Plugin}, "")
	return nil
}

func sourcesList(ctx context.Context, c *cli, _ []string) error {
	var list api.SourceList
	raw, err := c.api.get(ctx, "/api/v1/sources", &list)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	rows := make([][]string, len(list.Sources))
	for i, s := range list.Sources {
		rows[i] = []string{strconv.FormatInt(s.ID, 10), s.Path, s.Type, strconv.FormatBool(s.Active)}
	}
	return c.table("ID\tPATH\tTYPE\tACTIVE", rows)
}

func sourcesAdd(ctx context.Context, c *cli, args []string) error {
	abs, err := filepath.Abs(args[0])
	if err != nil {
		return err
	}
	var s api.Source
	raw, err := c.api.call(ctx, "POST", "/api/v1/sources", api.SourceRequest{Path: abs}, &s)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	fmt.Fprintf(c.stdout, "source root %d: %s (scanned at the next pass)\n", s.ID, s.Path)
	return nil
}

func routesList(ctx context.Context, c *cli, _ []string) error {
	var list api.RouteList
	raw, err := c.api.get(ctx, "/api/v1/routes", &list)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	rows := make([][]string, len(list.Routes))
	for i, r := range list.Routes {
		rows[i] = []string{strconv.FormatInt(r.ID, 10), r.Pattern, r.Tag, strconv.FormatInt(r.Priority, 10)}
	}
	return c.table("ID\tPATTERN\tTAG\tPRIORITY", rows)
}

func routesAdd(ctx context.Context, c *cli, args []string) error {
	var r api.Route
	raw, err := c.api.call(ctx, "POST", "/api/v1/routes",
		api.Route{Pattern: args[0], Tag: args[1], Priority: *c.num["priority"]}, &r)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	fmt.Fprintf(c.stdout, "routing rule %d: %s → %s\n", r.ID, r.Pattern, r.Tag)
	backfillHints(ctx, c, nil, r.Tag)
	return nil
}

func status(ctx context.Context, c *cli, _ []string) error {
	var st api.Status
	raw, err := c.api.get(ctx, "/api/v1/status", &st)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(raw)
	}
	state := "serving"
	if !st.Ready {
		state = "shutting down"
	}
	fmt.Fprintf(c.stdout, "Sentinel %s on %s\n\n", state, st.Endpoint)
	var parts []string
	for _, s := range []string{"PENDING", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "SKIPPED"} {
		parts = append(parts, fmt.Sprintf("%s %d", s, st.Counts[s]))
	}
	fmt.Fprintf(c.stdout, "Jobs: %s\n\n", strings.Join(parts, "  "))
	if len(st.Sentinels) > 1 {
		// Several Sentinels share the database: say which one answered.
		now := time.Now()
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SENTINEL\tHOST\tPID\tENDPOINT\tHEARTBEAT\t")
		for _, s := range st.Sentinels {
			mark := ""
			switch {
			case s.Self && s.Leader:
				mark = "this one, leader"
			case s.Self:
				mark = "this one"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, s.Host, s.PID, s.Endpoint, ago(now, &s.HeartbeatAt), mark)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%d Sentinels\n\n", len(st.Sentinels))
	}
	return c.printWorkers(st.Workers)
}

func fileOf(j api.Job) string {
	if j.FilePath != "" {
		return j.FilePath
	}
	return fmt.Sprintf("version %d", j.FileVersionID)
}

func stamp(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func ago(now time.Time, t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	d := now.Sub(*t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

func orDash(s string) string { return orDefault(s, "-") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// clip shortens s to n runes for a table cell, on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// tokenNew prints a new API token: 32 bytes from crypto/rand, base64url
// without padding (43 characters), for a line "read|admin TOKEN [name]" of
// the Sentinel's --api-tokens file.
func tokenNew(_ context.Context, c *cli, _ []string) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fmt.Fprintln(c.stdout, base64.RawURLEncoding.EncodeToString(b))
	return nil
}
