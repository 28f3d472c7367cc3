package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/job"
)

// maxBody bounds a request body; every document of the API is small.
const maxBody = 1 << 20

func (srv *Server) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), srv.timeout)
}

// GET /api/v1/jobs?status=FAILED&plugin=p&sort=priority&order=asc&limit=50&after=CURSOR
func (srv *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	f, err := jobFilter(r)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	page, err := srv.s.Jobs(ctx, f)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	out := api.JobList{Jobs: make([]api.Job, len(page.Jobs)), Total: page.Total, Limit: f.Limit, Offset: f.Offset,
		Sort: string(f.Sort), Order: order(f.Ascending)}
	for i, j := range page.Jobs {
		out.Jobs[i] = jobJSON(j)
	}
	// Total counts from the cursor on: more jobs follow this page when it
	// ends before them.
	if n := len(page.Jobs); n > 0 && int64(f.Offset+n) < page.Total {
		out.NextCursor = job.CursorOf(f, page.Jobs[n-1]).String()
	}
	writeJSON(w, http.StatusOK, out)
}

func order(asc bool) string {
	if asc {
		return "asc"
	}
	return "desc"
}

// jobFilter reads the query of GET /api/v1/jobs. Unknown parameters are an
// error, so a typo does not silently list everything.
func jobFilter(r *http.Request) (job.Filter, error) {
	f := job.Filter{Limit: 50}
	q := r.URL.Query()
	for key := range q {
		switch key {
		case "status", "plugin", "path", "error", "sort", "order", "after", "before_id", "limit", "offset":
		default:
			return f, badRequest("unknown query parameter %q (want status, plugin, path, error, sort, order, after, before_id, limit, offset)", key)
		}
	}
	if err := jobOrder(q, &f); err != nil {
		return f, err
	}
	if s := q.Get("status"); s != "" {
		st, ok := parseStatus(s)
		if !ok {
			return f, badRequest("unknown status %q (want one of %s)", s, statusNames())
		}
		f.Status = st
	}
	f.Plugin, f.Path, f.Error = q.Get("plugin"), q.Get("path"), q.Get("error")
	var err error
	before, err := intParam(q.Get("before_id"), "before_id", 0, 1, 1<<62)
	if err != nil {
		return f, err
	}
	f.BeforeID = int64(before)
	if f.BeforeID > 0 && (f.Sort != job.SortID || f.Ascending) {
		return f, badRequest("before_id pages the default order (sort=id, order=desc); with sort or order, page with after=next_cursor")
	}
	if f.Limit, err = intParam(q.Get("limit"), "limit", 50, 1, 1000); err != nil {
		return f, err
	}
	if f.Offset, err = intParam(q.Get("offset"), "offset", 0, 0, 1<<31-1); err != nil {
		return f, err
	}
	return f, nil
}

// jobOrder reads sort, order and after. A cursor alone implies its order;
// with sort or order, they must be the cursor's.
func jobOrder(q url.Values, f *job.Filter) error {
	sortName, dir, after := q.Get("sort"), strings.ToLower(q.Get("order")), q.Get("after")
	var err error
	if f.Sort, err = job.ParseSort(sortName); err != nil {
		return badRequest("sort: %s", trimSentinel(err.Error(), job.ErrInvalid))
	}
	switch dir {
	case "", "desc":
	case "asc":
		f.Ascending = true
	default:
		return badRequest("order must be asc or desc, got %q", q.Get("order"))
	}
	if after == "" {
		return nil
	}
	c, err := job.ParseCursor(after)
	if err != nil {
		return badRequest("after: %s", trimSentinel(err.Error(), job.ErrInvalid))
	}
	if sortName == "" && dir == "" {
		f.Sort, f.Ascending = c.Sort, c.Ascending
	} else if c.Sort != f.Sort || c.Ascending != f.Ascending {
		return badRequest("after: the cursor was made for sort=%s order=%s, not sort=%s order=%s",
			c.Sort, order(c.Ascending), f.Sort, order(f.Ascending))
	}
	f.After = &c
	return nil
}

func parseStatus(s string) (job.Status, bool) {
	for _, st := range job.Statuses {
		if strings.EqualFold(s, string(st)) {
			return st, true
		}
	}
	return "", false
}

func statusNames() string {
	names := make([]string, len(job.Statuses))
	for i, st := range job.Statuses {
		names[i] = string(st)
	}
	return strings.Join(names, ", ")
}

func intParam(s, name string, def, lo, hi int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, badRequest("%s must be a whole number from %d to %d, got %q", name, lo, hi, s)
	}
	return n, nil
}

// GET /api/v1/jobs/{id}
func (srv *Server) showJob(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	j, err := srv.s.Job(ctx, id)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, jobJSON(j))
}

func jobID(r *http.Request) (int64, error) {
	s := r.PathValue("id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, badRequest("job id must be a positive whole number, got %q", s)
	}
	return id, nil
}

// POST /api/v1/jobs {"file_version_id": 3, "plugin": "p", "priority": 10}
// or {"file_path": "/data/in/a.csv", "plugin": "p", "config_overrides": {...}}
func (srv *Server) enqueue(w http.ResponseWriter, r *http.Request) {
	var req api.EnqueueRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	overrides, err := overridesText(req.ConfigOverrides)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	res, err := srv.s.Enqueue(ctx, job.Submission{FileVersionID: req.FileVersionID, FilePath: req.FilePath,
		Plugin: req.Plugin, Priority: req.Priority, ConfigOverrides: overrides})
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	j, err := srv.s.Job(ctx, res.ID)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	out := jobJSON(j)
	out.Warning = res.Warning
	w.Header().Set("Location", fmt.Sprintf("/api/v1/jobs/%d", res.ID))
	writeJSON(w, http.StatusCreated, out)
}

// overridesText accepts config_overrides as a JSON object, or as a string
// holding one (the form the column stores); null or absent means none.
func overridesText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", badRequest("config_overrides: %v", err)
		}
		return s, nil
	}
	if raw[0] != '{' {
		return "", badRequest("config_overrides must be an object {topic: sink | [sinks]}")
	}
	return string(raw), nil
}

// POST /api/v1/jobs/bulk {"action": "retry"|"cancel", "status": "FAILED", "plugin": "p",
// "path": "…", "error": "…", "dry_run": true}: the filter of GET /api/v1/jobs,
// all of its pages. A dry run answers how many jobs it matches and changes
// nothing: the console confirms with that count.
func (srv *Server) bulk(w http.ResponseWriter, r *http.Request) {
	var req api.BulkRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	f := job.Filter{Plugin: req.Plugin, Path: req.Path, Error: req.Error}
	if req.Status != "" {
		st, ok := parseStatus(req.Status)
		if !ok {
			srv.fail(w, r, badRequest("unknown status %q (want one of %s)", req.Status, statusNames()))
			return
		}
		f.Status = st
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	res, err := srv.s.Bulk(ctx, job.BulkAction(req.Action), f, req.DryRun)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.BulkResult{Action: string(res.Action), Matched: res.Matched, Changed: res.Changed, DryRun: req.DryRun})
}

// POST /api/v1/jobs/prune {"completed_older_than": "720h", "failed_older_than":
// "2160h", "dry_run": true}: delete finished jobs older than that, in small
// batches so that dispatch goes on meanwhile. A dry run answers how many
// there are and deletes nothing: the CLI confirms with that count.
func (srv *Server) prune(w http.ResponseWriter, r *http.Request) {
	var req api.PruneRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	age := func(name, v string) (time.Duration, error) {
		if v == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return 0, badRequest("%s: want a duration such as 720h, got %q", name, v)
		}
		return d, nil
	}
	completed, err := age("completed_older_than", req.CompletedOlderThan)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	failed, err := age("failed_older_than", req.FailedOlderThan)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	if completed == 0 && failed == 0 {
		srv.fail(w, r, badRequest("give completed_older_than or failed_older_than"))
		return
	}
	now := time.Now()
	var p job.Prune
	if completed > 0 {
		p.CompletedBefore = now.Add(-completed)
	}
	if failed > 0 {
		p.FailedBefore = now.Add(-failed)
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	res, err := srv.s.Prune(ctx, p, req.DryRun)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.PruneResult{Completed: res.Completed, Failed: res.Failed, DryRun: req.DryRun})
}

// POST /api/v1/jobs/{id}/cancel
func (srv *Server) cancel(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err == nil {
		err = readNoParams(w, r)
	}
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	res, err := srv.s.Cancel(ctx, id)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	j, err := srv.s.Job(ctx, id)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.CancelResponse{Job: jobJSON(j), PreviousStatus: string(res.Previous),
		AbortSent: res.Status == job.StatusRunning})
}

// POST /api/v1/jobs/{id}/retry
func (srv *Server) retry(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err == nil {
		err = readNoParams(w, r)
	}
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	if err := srv.s.Retry(ctx, id); err != nil {
		srv.fail(w, r, err)
		return
	}
	j, err := srv.s.Job(ctx, id)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, jobJSON(j))
}

// GET /api/v1/workers
func (srv *Server) listWorkers(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := srv.ctx(r)
	defer cancel()
	workers, err := srv.s.WorkersInfo(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	out := api.WorkerList{Workers: make([]api.Worker, len(workers))}
	for i, wi := range workers {
		out.Workers[i] = workerJSON(wi)
	}
	writeJSON(w, http.StatusOK, out)
}

// POST /api/v1/workers/{id}/drain: no new jobs for the worker; its running
// ones finish. It stays drained, across reconnects, until undrained.
func (srv *Server) drainWorker(w http.ResponseWriter, r *http.Request) {
	srv.workerAction(w, r, "drain", func(ctx context.Context, id string) error { return srv.s.DrainWorker(ctx, id, true) })
}

// POST /api/v1/workers/{id}/undrain: the worker gets jobs again.
func (srv *Server) undrainWorker(w http.ResponseWriter, r *http.Request) {
	srv.workerAction(w, r, "undrain", func(ctx context.Context, id string) error { return srv.s.DrainWorker(ctx, id, false) })
}

// POST /api/v1/workers/{id}/disconnect: the Sentinel forgets the worker now;
// its RUNNING jobs are requeued and it is told to IDENTIFY again.
func (srv *Server) disconnectWorker(w http.ResponseWriter, r *http.Request) {
	srv.workerAction(w, r, "disconnect", srv.s.DisconnectWorker)
}

func (srv *Server) workerAction(w http.ResponseWriter, r *http.Request, action string, do func(context.Context, string) error) {
	if err := readNoParams(w, r); err != nil {
		srv.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	if id == "" {
		srv.fail(w, r, badRequest("worker id is required"))
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	if err := do(ctx, id); err != nil {
		srv.fail(w, r, err)
		return
	}
	out := api.WorkerActionResult{Worker: id, Action: action, Disconnected: action == "disconnect"}
	if action != "disconnect" {
		draining := action == "drain"
		out.Draining = &draining
	}
	writeJSON(w, http.StatusOK, out)
}

// GET /api/v1/status
func (srv *Server) status(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := srv.ctx(r)
	defer cancel()
	counts, err := srv.s.Counts(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	workers, err := srv.s.WorkersInfo(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	sentinels, err := srv.s.Sentinels(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	out := api.Status{Ready: srv.s.Ready(), Endpoint: srv.s.Endpoint(), Counts: map[string]int64{},
		Workers: make([]api.Worker, len(workers)), Sentinel: sentinelJSON(srv.s.Self())}
	for _, si := range sentinels {
		out.Sentinels = append(out.Sentinels, sentinelJSON(si))
	}
	for _, st := range job.Statuses {
		out.Counts[string(st)] = counts[st]
	}
	for i, wi := range workers {
		out.Workers[i] = workerJSON(wi)
	}
	writeJSON(w, http.StatusOK, out)
}

func sentinelJSON(si actors.SentinelInfo) api.Sentinel {
	return api.Sentinel{ID: si.ID, Host: si.Host, PID: si.PID, Endpoint: si.Endpoint,
		StartedAt: si.StartedAt, HeartbeatAt: si.HeartbeatAt, Self: si.Self, Leader: si.Leader}
}

// GET /api/v1/queue/ages: how long the oldest due QUEUED job of each
// plugin has waited, oldest first (the gauge of /metrics, unlabelled).
func (srv *Server) queueAges(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := srv.ctx(r)
	defer cancel()
	ages, err := srv.s.QueueAges(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	sort.Slice(ages, func(i, j int) bool {
		if !ages[i].EnqueuedAt.Equal(ages[j].EnqueuedAt) {
			return ages[i].EnqueuedAt.Before(ages[j].EnqueuedAt)
		}
		return ages[i].Plugin < ages[j].Plugin
	})
	now := time.Now()
	out := api.QueueAges{Plugins: make([]api.QueueAge, len(ages))}
	for i, a := range ages {
		out.Plugins[i] = api.QueueAge{Plugin: a.Plugin, OldestAgeSeconds: max(now.Sub(a.EnqueuedAt).Seconds(), 0)}
	}
	writeJSON(w, http.StatusOK, out)
}

// GET /api/v1/plugins
func (srv *Server) listPlugins(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := srv.ctx(r)
	defer cancel()
	plugins, err := srv.s.Plugins(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	out := api.PluginList{Plugins: make([]api.Plugin, len(plugins))}
	for i, p := range plugins {
		out.Plugins[i] = pluginJSON(p)
		out.Plugins[i].Settings = pluginSettingsJSON(p.Settings)
	}
	writeJSON(w, http.StatusOK, out)
}

// GET /api/v1/environments: the plugin environments, the most recently
// used first, with the plugin versions that name them.
func (srv *Server) listEnvironments(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Query()) > 0 {
		srv.fail(w, r, badRequest("this endpoint takes no query parameters"))
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	envs, err := srv.s.Environments(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	out := api.EnvironmentList{Environments: make([]api.Environment, len(envs))}
	for i, e := range envs {
		users := make([]api.EnvironmentUser, len(e.Manifests))
		for n, u := range e.Manifests {
			users[n] = api.EnvironmentUser{Plugin: u.Plugin, Version: u.Version, Status: u.Status}
		}
		out.Environments[i] = api.Environment{Hash: e.Hash, SizeMB: e.SizeMB, LockfileBytes: e.LockfileBytes,
			CreatedAt: timePtr(e.CreatedAt), LastUsed: timePtr(e.LastUsed), ActivePlugins: e.ActivePluginCount, Plugins: users}
	}
	writeJSON(w, http.StatusOK, out)
}

// POST /api/v1/plugins/builtin {"name": "csv", "subscribe": ["csv"]}
func (srv *Server) addBuiltin(w http.ResponseWriter, r *http.Request) {
	var req api.BuiltinRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	n, err := srv.s.AddBuiltin(ctx, req.Name, req.Subscribe)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	plugins, err := srv.s.Plugins(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	for _, p := range plugins {
		if p.Name == req.Name {
			writeJSON(w, http.StatusOK, api.BuiltinAdded{Plugin: pluginJSON(p), Changes: n})
			return
		}
	}
	srv.fail(w, r, fmt.Errorf("plugin %s registered but not listed", req.Name))
}

// POST /api/v1/plugins/{name}/subscriptions {"tags": ["csv"]}
func (srv *Server) subscribe(w http.ResponseWriter, r *http.Request) {
	var req api.SubscribeRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	ctx, cancel := srv.ctx(r)
	defer cancel()
	if req.Topic != "" {
		if len(req.Tags) > 0 {
			srv.fail(w, r, fmt.Errorf("give tags or a topic, not both: %w", job.ErrInvalid))
			return
		}
		res, err := srv.s.SubscribeTopic(ctx, name, req.Topic) // chain.go
		srv.topicAnswer(w, r, res, err)
		return
	}
	tags, err := srv.s.Subscribe(ctx, name, req.Tags)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.Subscription{Plugin: name, SubscriptionTags: tags})
}

// GET /api/v1/sources
func (srv *Server) listSources(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := srv.ctx(r)
	defer cancel()
	roots, err := srv.s.Sources(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	out := api.SourceList{Sources: make([]api.Source, len(roots))}
	for i, root := range roots {
		out.Sources[i] = sourceJSON(root)
	}
	writeJSON(w, http.StatusOK, out)
}

// POST /api/v1/sources {"path": "/data/inbox"}
func (srv *Server) addSource(w http.ResponseWriter, r *http.Request) {
	var req api.SourceRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	if req.Path == "" {
		srv.fail(w, r, badRequest("path is required"))
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	root, err := srv.s.AddSource(ctx, req.Path)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, sourceJSON(root))
}

// GET /api/v1/routes
func (srv *Server) listRoutes(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := srv.ctx(r)
	defer cancel()
	rules, err := srv.s.Routes(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	out := api.RouteList{Routes: make([]api.Route, len(rules))}
	for i, rule := range rules {
		out.Routes[i] = api.Route{ID: rule.ID, Pattern: rule.Pattern, Tag: rule.Tag, Priority: rule.Priority}
	}
	writeJSON(w, http.StatusOK, out)
}

// POST /api/v1/routes {"pattern": "*.csv", "tag": "csv", "priority": 0}
func (srv *Server) addRoute(w http.ResponseWriter, r *http.Request) {
	var req api.Route
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	if req.ID != 0 {
		srv.fail(w, r, badRequest("id is assigned by the server; leave it out"))
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	id, err := srv.s.AddRoute(ctx, req.Pattern, req.Tag, req.Priority)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	req.ID = id
	writeJSON(w, http.StatusCreated, req)
}

// POST /api/v1/plugins/{name}/pause: its QUEUED jobs wait; RUNNING ones finish.
func (srv *Server) pausePlugin(w http.ResponseWriter, r *http.Request) {
	srv.pause(w, r, true)
}

// POST /api/v1/plugins/{name}/resume: its QUEUED jobs are dispatched again.
func (srv *Server) resumePlugin(w http.ResponseWriter, r *http.Request) {
	srv.pause(w, r, false)
}

func (srv *Server) pause(w http.ResponseWriter, r *http.Request, pause bool) {
	if err := readNoParams(w, r); err != nil {
		srv.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	ctx, cancel := srv.ctx(r)
	defer cancel()
	s, err := srv.s.PausePlugin(ctx, name, pause)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.PluginSettingsResult{Plugin: name, Settings: pluginSettingsJSON(s)})
}

// POST /api/v1/plugins/{name}/settings {"job_timeout": "5m", "max_retries": 3}
// ("default" and -1 return to --job-timeout and --max-retries). POST, not
// PUT: the guard's cross-origin and content-type checks are written for
// POST, the API's one writing method.
func (srv *Server) pluginSettings(w http.ResponseWriter, r *http.Request) {
	var req api.PluginSettingsRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	var u job.PluginSettingsUpdate
	if req.JobTimeout != nil {
		d, err := api.ParseJobTimeout(*req.JobTimeout)
		if err != nil {
			srv.fail(w, r, badRequest("job_timeout: %v", err))
			return
		}
		u.JobTimeout = &d
	}
	if req.MaxRetries != nil {
		if *req.MaxRetries < -1 {
			srv.fail(w, r, badRequest("max_retries must be a count, or -1 for --max-retries, got %d", *req.MaxRetries))
			return
		}
		u.MaxRetries = req.MaxRetries
	}
	if req.Reuse != nil {
		n, ok := map[string]int{"on": 1, "off": 0, "default": -1}[*req.Reuse]
		if !ok {
			srv.fail(w, r, badRequest(`reuse must be "on", "off" or "default", got %q`, *req.Reuse))
			return
		}
		u.Reuse = &n
	}
	if u.JobTimeout == nil && u.MaxRetries == nil && u.Reuse == nil {
		srv.fail(w, r, badRequest("nothing to change: give job_timeout, max_retries or reuse"))
		return
	}
	name := r.PathValue("name")
	ctx, cancel := srv.ctx(r)
	defer cancel()
	s, err := srv.s.SetPluginSettings(ctx, name, u)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.PluginSettingsResult{Plugin: name, Settings: pluginSettingsJSON(s)})
}

// POST /api/v1/plugins/{name}/backfill {"dry_run": true}: a job for every
// current file the plugin's subscriptions match that has none of it yet.
func (srv *Server) backfill(w http.ResponseWriter, r *http.Request) {
	srv.backfillOrRerun(w, r, srv.s.Backfill)
}

// POST /api/v1/plugins/{name}/rerun {"dry_run": true}: again, the jobs that
// completed before the ACTIVE manifest was deployed.
func (srv *Server) rerun(w http.ResponseWriter, r *http.Request) {
	srv.backfillOrRerun(w, r, srv.s.Rerun)
}

func (srv *Server) backfillOrRerun(w http.ResponseWriter, r *http.Request,
	do func(context.Context, string, bool) (job.BackfillResult, error)) {
	var req api.BackfillRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	if req.Version != "" {
		srv.fail(w, r, badRequest("version is not supported: the queue records no manifest per job; "+
			"a rerun queues again the jobs that completed before the ACTIVE manifest was deployed"))
		return
	}
	name := r.PathValue("name")
	ctx, cancel := srv.ctx(r)
	defer cancel()
	res, err := do(ctx, name, req.DryRun)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.BackfillResult{Plugin: name, Matched: res.Matched, Queued: res.Queued, DryRun: req.DryRun})
}

// POST /api/v1/sources/rescan: a scan pass now (the leading Sentinel only).
func (srv *Server) rescan(w http.ResponseWriter, r *http.Request) {
	if err := readNoParams(w, r); err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	if err := srv.s.Rescan(ctx); err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, api.RescanResult{Started: true})
}

func pluginSettingsJSON(s job.PluginSettings) api.PluginSettings {
	out := api.PluginSettings{Paused: s.Paused(), PausedAt: timePtr(s.PausedAt), MaxRetries: s.MaxRetries, Reuse: s.Reuse}
	if s.JobTimeout != nil {
		out.JobTimeout = s.JobTimeout.String()
	}
	return out
}

// readJSON decodes a request body into v, refusing unknown fields, trailing
// data and bodies over maxBody, with a message naming the problem. The
// guard has checked the Content-Type already.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.Is(err, io.EOF):
			return badRequest("request body is empty; want a JSON object")
		case errors.As(err, &tooBig):
			return badRequest("request body is larger than %d bytes", maxBody)
		}
		return badRequest("invalid JSON body: %v", err)
	}
	if dec.More() {
		return badRequest("invalid JSON body: data after the object")
	}
	return nil
}

// readNoParams reads the body of a POST that takes no parameters: empty, or
// the empty JSON object {}.
func readNoParams(w http.ResponseWriter, r *http.Request) error {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return badRequest("request body is larger than %d bytes", maxBody)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	var none struct{}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	if err := readJSON(w, r, &none); err != nil {
		return badRequest("this endpoint takes no parameters: want an empty body or {}; %v", err)
	}
	return nil
}

// requestError is a 400 found before the request reached the Sentinel.
type requestError struct{ msg string }

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{msg: fmt.Sprintf(format, args...)}
}

// fail writes err as JSON with the status it calls for.
func (srv *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var re *requestError
	code := http.StatusInternalServerError
	msg := err.Error()
	switch {
	case errors.As(err, &re):
		code = http.StatusBadRequest
	case errors.Is(err, job.ErrInvalid):
		code, msg = http.StatusBadRequest, trimSentinel(msg, job.ErrInvalid)
	case errors.Is(err, job.ErrNotFound):
		code, msg = http.StatusNotFound, trimSentinel(msg, job.ErrNotFound)
	case errors.Is(err, job.ErrConflict):
		code, msg = http.StatusConflict, trimSentinel(msg, job.ErrConflict)
	case errors.Is(err, job.ErrUnknownPlugin):
		code, msg = http.StatusUnprocessableEntity, trimSentinel(msg, job.ErrUnknownPlugin)
	case errors.Is(err, actors.ErrStopped), errors.Is(err, actors.ErrUnavailable):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	if code >= 500 {
		srv.log.Warn().Err(err).Str("method", r.Method).Str("path", r.URL.Path).Int("status", code).Msg("request failed")
	}
	writeJSON(w, code, api.Error{Error: msg})
}

// trimSentinel drops the sentinel error's own text from the end of a
// message: "job 7: not found" reads better as "job 7" under a 404, but the
// rest of the message is what says what is wrong.
func trimSentinel(msg string, sentinel error) string {
	if s := strings.TrimSuffix(msg, ": "+sentinel.Error()); s != "" && sentinel == job.ErrNotFound {
		return s + " not found"
	} else if s != "" {
		return s
	}
	return msg
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
