package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// jobInfoSelect reads a job.Info; scanJobInfo scans its columns in order.
const jobInfoSelect = `SELECT
	q.id, q.file_version_id, q.plugin_name, q.status, q.priority, q.retry_count, q.attempt,
	q.claimed_by, q.worker_host, q.error_message, q.result_summary,
	q.claim_time, q.end_time, q.metrics_json, q.artifacts_json, q.config_overrides,
	q.updated_at, q.cancel_requested_at IS NOT NULL, r.path, l.rel_path
FROM cf_processing_queue q
LEFT JOIN cf_file_version v ON v.id = q.file_version_id
LEFT JOIN cf_file_location l ON l.id = v.location_id
LEFT JOIN cf_source_root r ON r.id = l.source_root_id`

func scanJobInfo(row interface{ Scan(...any) error }) (job.Info, error) {
	var (
		j                                         job.Info
		fv, prio, retries, attempt                sql.NullInt64
		plugin, status, by, host, errMsg, summary sql.NullString
		metrics, artifacts, overrides, root, rel  sql.NullString
		claimed, ended, updated                   nullTime
	)
	err := row.Scan(&j.ID, &fv, &plugin, &status, &prio, &retries, &attempt,
		&by, &host, &errMsg, &summary,
		&claimed, &ended, &metrics, &artifacts, &overrides,
		&updated, &j.CancelRequested, &root, &rel)
	if err != nil {
		return job.Info{}, err
	}
	j.FileVersionID = fv.Int64
	j.PluginName = plugin.String
	j.Status = job.Status(orDefault(status.String, string(job.StatusQueued)))
	j.Priority, j.RetryCount, j.Attempt = prio.Int64, retries.Int64, attempt.Int64
	j.ClaimedBy, j.WorkerHost = by.String, host.String
	j.ErrorMessage, j.ResultSummary = errMsg.String, summary.String
	j.ClaimTime, j.EndTime, j.UpdatedAt = claimed.Time, ended.Time, updated.Time
	j.ConfigOverrides = overrides.String
	j.Metrics, j.Artifacts = decodeReceipt(metrics, artifacts)
	if root.String != "" && rel.String != "" {
		j.FilePath = filepath.Join(root.String, rel.String)
	}
	return j, nil
}

// decodeReceipt reads metrics_json and artifacts_json; malformed JSON written
// by another tool reads as none.
func decodeReceipt(metrics, artifacts sql.NullString) (map[string]int64, []map[string]string) {
	var m map[string]int64
	var a []map[string]string
	if metrics.Valid && json.Unmarshal([]byte(metrics.String), &m) != nil {
		m = nil
	}
	if artifacts.Valid && json.Unmarshal([]byte(artifacts.String), &a) != nil {
		a = nil
	}
	return m, a
}

// JobsList returns one page of the jobs that match f, newest first, and the
// number that match in all.
func (db *DB) JobsList(ctx context.Context, f job.Filter) (job.Page, error) {
	if f.Limit < 0 || f.Offset < 0 {
		return job.Page{}, fmt.Errorf("list jobs: limit and offset must not be negative: %w", job.ErrInvalid)
	}
	if f.Limit == 0 {
		f.Limit = job.DefaultLimit
	}
	f.Limit = min(f.Limit, job.MaxLimit)
	var where []string
	var args []any
	if f.Status != "" {
		if f.Status == job.StatusQueued {
			where = append(where, `(q.status = 'QUEUED' OR q.status IS NULL)`)
		} else {
			where = append(where, `q.status = ?`)
			args = append(args, string(f.Status))
		}
	}
	if f.Plugin != "" {
		where = append(where, `q.plugin_name = ?`)
		args = append(args, f.Plugin)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var page job.Page
	if err := db.reader.QueryRowContext(ctx, `SELECT COUNT(*) FROM cf_processing_queue q`+cond, args...).Scan(&page.Total); err != nil {
		return job.Page{}, fmt.Errorf("list jobs: %w", err)
	}
	rows, err := db.reader.QueryContext(ctx, jobInfoSelect+cond+` ORDER BY q.id DESC LIMIT ? OFFSET ?`,
		append(args, f.Limit, f.Offset)...)
	if err != nil {
		return job.Page{}, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		j, err := scanJobInfo(rows)
		if err != nil {
			return job.Page{}, fmt.Errorf("list jobs: %w", err)
		}
		page.Jobs = append(page.Jobs, j)
	}
	if err := rows.Err(); err != nil {
		return job.Page{}, fmt.Errorf("list jobs: %w", err)
	}
	return page, nil
}

// JobGet returns one job with its file path, or job.ErrNotFound. Malformed
// metrics or artifacts JSON written by another tool reads as none rather
// than an error.
func (db *DB) JobGet(ctx context.Context, id int64) (job.Info, error) {
	j, err := scanJobInfo(db.reader.QueryRowContext(ctx, jobInfoSelect+` WHERE q.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return job.Info{}, fmt.Errorf("job %d: %w", id, job.ErrNotFound)
	}
	if err != nil {
		return job.Info{}, fmt.Errorf("job %d: %w", id, err)
	}
	return j, nil
}

// JobEnqueue validates s and inserts a QUEUED job, returning its id. An
// unknown file is job.ErrNotFound; bad input (no or both file references, no
// plugin, config_overrides a dispatch could not use or with a sink naming the
// database) is job.ErrInvalid, so the operator hears about it now rather than
// when the job fails at dispatch. A plugin without an ACTIVE manifest is
// accepted: it may be deployed later.
func (db *DB) JobEnqueue(ctx context.Context, s job.Submission) (int64, error) {
	switch {
	case strings.TrimSpace(s.Plugin) == "":
		return 0, fmt.Errorf("submit job: plugin is required: %w", job.ErrInvalid)
	case s.FileVersionID == 0 && s.FilePath == "":
		return 0, fmt.Errorf("submit job: give file_version_id or file_path: %w", job.ErrInvalid)
	case s.FileVersionID != 0 && s.FilePath != "":
		return 0, fmt.Errorf("submit job: give file_version_id or file_path, not both: %w", job.ErrInvalid)
	case s.FileVersionID < 0:
		return 0, fmt.Errorf("submit job: file_version_id must be positive: %w", job.ErrInvalid)
	case s.FilePath != "" && !filepath.IsAbs(s.FilePath):
		return 0, fmt.Errorf("submit job: file_path %q must be absolute: %w", s.FilePath, job.ErrInvalid)
	}
	overridden, err := parseOverrides(s.ConfigOverrides)
	if err != nil {
		return 0, fmt.Errorf("submit job: %v: %w", err, job.ErrInvalid)
	}
	for _, sinks := range overridden {
		if err := db.checkSinks(sinks); err != nil {
			return 0, fmt.Errorf("submit job: config_overrides: %w", err)
		}
	}
	var overrides any
	if strings.TrimSpace(s.ConfigOverrides) != "" {
		overrides = s.ConfigOverrides
	}
	var id int64
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		fv := s.FileVersionID
		if s.FilePath != "" {
			var err error
			if fv, err = versionAtPath(ctx, tx, s.FilePath); err != nil {
				return err
			}
		} else {
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM cf_file_version WHERE id = ?`, fv).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("file version %d: %w", fv, job.ErrNotFound)
			}
			if err != nil {
				return err
			}
		}
		now := formatTime(time.Now())
		// The queue's plugin_name is a foreign key of cf_plugin_config.
		if err := pluginConfigEnsure(ctx, tx, strings.TrimSpace(s.Plugin), now); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, config_overrides, status, priority, retry_count, updated_at)
			VALUES (?, ?, ?, 'QUEUED', ?, 0, ?) RETURNING id`,
			fv, strings.TrimSpace(s.Plugin), overrides, s.Priority, now).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("submit job: %w", err)
	}
	return id, nil
}

// versionAtPath returns the current version of the file at an absolute path,
// looked up under the active source root that contains it most closely.
func versionAtPath(ctx context.Context, tx *sql.Tx, abs string) (int64, error) {
	abs = filepath.Clean(abs)
	rows, err := tx.QueryContext(ctx, `SELECT id, path FROM cf_source_root WHERE COALESCE(active, 1) = 1`)
	if err != nil {
		return 0, err
	}
	var rootID int64
	var rel string
	best := -1
	for rows.Next() {
		var id int64
		var root string
		if err := rows.Scan(&id, &root); err != nil {
			rows.Close()
			return 0, err
		}
		r, err := filepath.Rel(filepath.Clean(root), abs)
		if err != nil || !filepath.IsLocal(r) {
			continue
		}
		if len(root) > best {
			best, rootID, rel = len(root), id, filepath.ToSlash(r)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if best < 0 {
		return 0, fmt.Errorf("file %q is under no active source root: %w", abs, job.ErrNotFound)
	}
	var fv sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT current_version_id FROM cf_file_location
		WHERE source_root_id = ? AND rel_path = ? ORDER BY id LIMIT 1`, rootID, rel).Scan(&fv)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !fv.Valid) {
		return 0, fmt.Errorf("file %q has no recorded version (not scanned yet?): %w", abs, job.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return fv.Int64, nil
}

// JobCancel cancels a job: QUEUED or PENDING becomes SKIPPED at once; RUNNING
// is marked cancel-requested (so it can never be requeued) and reported with
// its claim so the caller can send ABORT. Cancelling a SKIPPED job again is
// a no-op; a COMPLETED or FAILED job is job.ErrConflict.
func (db *DB) JobCancel(ctx context.Context, now time.Time, id int64) (job.CancelResult, error) {
	var out job.CancelResult
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var status, by sql.NullString
		var attempt sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT status, claimed_by, attempt FROM cf_processing_queue WHERE id = ?`, id).
			Scan(&status, &by, &attempt)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("job %d: %w", id, job.ErrNotFound)
		}
		if err != nil {
			return err
		}
		out.Previous = job.Status(orDefault(status.String, string(job.StatusQueued)))
		ts := formatTime(now)
		switch out.Previous {
		case job.StatusQueued, job.StatusPending:
			_, err := tx.ExecContext(ctx, `UPDATE cf_processing_queue SET
				status = 'SKIPPED', error_message = ?, end_time = ?, next_run_at = NULL,
				claimed_by = NULL, updated_at = ?
			WHERE id = ? AND COALESCE(status, 'QUEUED') IN ('QUEUED', 'PENDING')`, cancelledMessage, ts, ts, id)
			out.Status = job.StatusSkipped
			return err
		case job.StatusRunning:
			_, err := tx.ExecContext(ctx, `UPDATE cf_processing_queue SET
				cancel_requested_at = COALESCE(cancel_requested_at, ?), updated_at = ?
			WHERE id = ? AND status = 'RUNNING'`, ts, ts, id)
			out.Status = job.StatusRunning
			out.Claim = job.Ref{JobID: id, Worker: by.String, Attempt: attempt.Int64}
			return err
		case job.StatusSkipped:
			out.Status = job.StatusSkipped
			return nil
		}
		return fmt.Errorf("job %d is %s; only QUEUED, PENDING or RUNNING jobs can be cancelled: %w",
			id, out.Previous, job.ErrConflict)
	})
	if err != nil {
		return job.CancelResult{}, fmt.Errorf("cancel job: %w", err)
	}
	return out, nil
}

// JobRetry puts a FAILED job back to QUEUED, to run as soon as a worker can.
// It is a fresh start decided by an operator, so retry_count goes back to 0
// (otherwise a job that failed for exhausting its retries would fail again at
// the first fault) and the previous error, receipt and cancel mark are
// cleared. attempt is kept: it is the fencing token, and a receipt of an
// earlier attempt must stay stale. Any other status is job.ErrConflict.
func (db *DB) JobRetry(ctx context.Context, now time.Time, id int64) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		ts := formatTime(now)
		res, err := tx.ExecContext(ctx, `UPDATE cf_processing_queue SET
			status = 'QUEUED', retry_count = 0, claimed_by = NULL, worker_host = NULL,
			claim_time = NULL, end_time = NULL, next_run_at = NULL, error_message = NULL,
			result_summary = NULL, metrics_json = NULL, artifacts_json = NULL,
			cancel_requested_at = NULL, updated_at = ?
		WHERE id = ? AND status = 'FAILED'`, ts, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var status sql.NullString
		err = tx.QueryRowContext(ctx, `SELECT status FROM cf_processing_queue WHERE id = ?`, id).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("job %d: %w", id, job.ErrNotFound)
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("job %d is %s; only FAILED jobs can be retried: %w",
			id, orDefault(status.String, string(job.StatusQueued)), job.ErrConflict)
	})
	if err != nil {
		return fmt.Errorf("retry job: %w", err)
	}
	return nil
}

// PluginsList returns every plugin that has a configuration or a manifest,
// by name.
func (db *DB) PluginsList(ctx context.Context) ([]job.Plugin, error) {
	byName := map[string]*job.Plugin{}
	get := func(name string) *job.Plugin {
		p, ok := byName[name]
		if !ok {
			p = &job.Plugin{Name: name}
			byName[name] = p
		}
		return p
	}
	rows, err := db.reader.QueryContext(ctx, `SELECT plugin_name, subscription_tags FROM cf_plugin_config`)
	if err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	for rows.Next() {
		var name, tags sql.NullString
		if err := rows.Scan(&name, &tags); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list plugins: %w", err)
		}
		get(name.String).SubscriptionTags = splitTags(tags.String)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	// The same order the dispatch uses to pick the ACTIVE manifest.
	rows, err = db.reader.QueryContext(ctx, `SELECT id, plugin_name, version, status, env_hash, artifact_hash,
		created_at, deployed_at
	FROM cf_plugin_manifest ORDER BY plugin_name, `+manifestNewestFirst)
	if err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m job.Manifest
		var name, version, status, env, artifact sql.NullString
		var created, deployed nullTime
		if err := rows.Scan(&m.ID, &name, &version, &status, &env, &artifact, &created, &deployed); err != nil {
			return nil, fmt.Errorf("list plugins: %w", err)
		}
		m.Version, m.Status, m.ArtifactHash = version.String, status.String, artifact.String
		m.EnvHash = orDefault(env.String, systemEnvHash)
		m.CreatedAt, m.DeployedAt = created.Time, deployed.Time
		p := get(name.String)
		p.Versions = append(p.Versions, m)
		if p.Active == nil && m.Status == "ACTIVE" {
			active := m
			p.Active = &active
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	out := make([]job.Plugin, 0, len(byName))
	for _, p := range byName {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// PluginSubscribe adds tags to a plugin's cf_plugin_config.subscription_tags
// (creating the row if needed) and returns the plugin's tags after it. Files
// the scanner records with any of these tags get a job for the plugin.
//
// cf_plugin_subscription is not touched: it subscribes a plugin to another
// plugin's output topics, which is a different thing from file tags.
func (db *DB) PluginSubscribe(ctx context.Context, plugin string, tags []string) ([]string, error) {
	plugin = strings.TrimSpace(plugin)
	if plugin == "" {
		return nil, fmt.Errorf("subscribe: plugin name is required: %w", job.ErrInvalid)
	}
	if err := validTags(tags); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", plugin, err)
	}
	var out []string
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		now := formatTime(time.Now())
		if err := pluginConfigEnsure(ctx, tx, plugin, now); err != nil {
			return err
		}
		var current sql.NullString
		if err := tx.QueryRowContext(ctx, `SELECT subscription_tags FROM cf_plugin_config WHERE plugin_name = ?`,
			plugin).Scan(&current); err != nil {
			return err
		}
		merged := tagList(append(splitTags(current.String), tags...))
		out = splitTags(merged)
		_, err := tx.ExecContext(ctx, `UPDATE cf_plugin_config SET subscription_tags = ?, last_updated = ?
			WHERE plugin_name = ?`, merged, now, plugin)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", plugin, err)
	}
	return out, nil
}

// validTags reports the first tag that cannot be stored in a comma list.
func validTags(tags []string) error {
	if len(tags) == 0 {
		return fmt.Errorf("at least one tag is required: %w", job.ErrInvalid)
	}
	for _, t := range tags {
		if t = strings.TrimSpace(t); t == "" || strings.Contains(t, ",") {
			return fmt.Errorf("tag %q must be non-empty and contain no comma: %w", t, job.ErrInvalid)
		}
	}
	return nil
}

// splitTags reads a comma list such as subscription_tags or applied_tags.
func splitTags(list string) []string {
	var out []string
	for _, t := range strings.Split(list, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// RoutingRuleAdd adds a routing rule and returns its id; adding a rule that
// exists (same pattern and tag) returns the existing id.
func (db *DB) RoutingRuleAdd(ctx context.Context, pattern, tag string, priority int64) (int64, error) {
	pattern, tag = strings.TrimSpace(pattern), strings.TrimSpace(tag)
	if pattern == "" {
		return 0, fmt.Errorf("add routing rule: pattern is required: %w", job.ErrInvalid)
	}
	if err := validTags([]string{tag}); err != nil {
		return 0, fmt.Errorf("add routing rule: %w", err)
	}
	var id int64
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT id FROM cf_routing_rule WHERE pattern = ? AND tag = ? ORDER BY id LIMIT 1`,
			pattern, tag).Scan(&id)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO cf_routing_rule (pattern, tag, priority) VALUES (?, ?, ?) RETURNING id`,
			pattern, tag, priority).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("add routing rule %q → %s: %w", pattern, tag, err)
	}
	return id, nil
}

// RoutingRules returns every routing rule, highest priority first.
func (db *DB) RoutingRules(ctx context.Context) ([]job.RoutingRule, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT id, pattern, tag, priority FROM cf_routing_rule
		ORDER BY COALESCE(priority, 0) DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("routing rules: %w", err)
	}
	defer rows.Close()
	var out []job.RoutingRule
	for rows.Next() {
		var r job.RoutingRule
		var pattern, tag sql.NullString
		var prio sql.NullInt64
		if err := rows.Scan(&r.ID, &pattern, &tag, &prio); err != nil {
			return nil, fmt.Errorf("routing rules: %w", err)
		}
		r.Pattern, r.Tag, r.Priority = pattern.String, tag.String, prio.Int64
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("routing rules: %w", err)
	}
	return out, nil
}

// SourceRootAdd adds the folder at an absolute path as an active source
// root, or reactivates it, and returns it. The path is cleaned first, so
// "/data/in/" and "/data/in" name one root.
func (db *DB) SourceRootAdd(ctx context.Context, rootPath string) (job.SourceRoot, error) {
	if !filepath.IsAbs(rootPath) {
		return job.SourceRoot{}, fmt.Errorf("add source root: path %q must be absolute: %w", rootPath, job.ErrInvalid)
	}
	r := job.SourceRoot{Path: filepath.Clean(rootPath), Active: true}
	var typ sql.NullString
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO cf_source_root (path, type, active)
			VALUES (?, 'local', 1)
			ON CONFLICT (path) DO UPDATE SET active = 1
			RETURNING id, type`, r.Path).Scan(&r.ID, &typ)
	})
	if err != nil {
		return job.SourceRoot{}, fmt.Errorf("add source root %q: %w", rootPath, err)
	}
	r.Type = orDefault(typ.String, "local")
	return r, nil
}

// SourceRoots returns the source roots by id; activeOnly leaves out the
// inactive ones (NULL active counts as active, the column's default).
func (db *DB) SourceRoots(ctx context.Context, activeOnly bool) ([]job.SourceRoot, error) {
	q := `SELECT id, path, type, COALESCE(active, 1) FROM cf_source_root`
	if activeOnly {
		q += ` WHERE COALESCE(active, 1) = 1`
	}
	rows, err := db.reader.QueryContext(ctx, q+` ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("source roots: %w", err)
	}
	defer rows.Close()
	var out []job.SourceRoot
	for rows.Next() {
		var r job.SourceRoot
		var path, typ sql.NullString
		var active int64
		if err := rows.Scan(&r.ID, &path, &typ, &active); err != nil {
			return nil, fmt.Errorf("source roots: %w", err)
		}
		r.Path, r.Type, r.Active = path.String, orDefault(typ.String, "local"), active != 0
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("source roots: %w", err)
	}
	return out, nil
}

// SourceRootsActive returns the roots a scan walks.
func (db *DB) SourceRootsActive(ctx context.Context) ([]job.SourceRoot, error) {
	return db.SourceRoots(ctx, true)
}

// IgnoreRule is one active cf_ignore_rule row; RootID 0 is a global rule.
type IgnoreRule struct {
	ID      int64
	RootID  int64
	Pattern string
}

// IgnoreRuleAdd adds an active ignore rule for one source root (rootID 0:
// every root) and returns its id.
func (db *DB) IgnoreRuleAdd(ctx context.Context, rootID int64, pattern string) (int64, error) {
	if strings.TrimSpace(pattern) == "" {
		return 0, fmt.Errorf("add ignore rule: pattern is required: %w", job.ErrInvalid)
	}
	var root any
	if rootID != 0 {
		root = rootID
	}
	var id int64
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO cf_ignore_rule (source_root_id, pattern, active, created_at)
			VALUES (?, ?, 1, ?) RETURNING id`, root, strings.TrimSpace(pattern), formatTime(time.Now())).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("add ignore rule %q: %w", pattern, err)
	}
	return id, nil
}

// IgnoreRules returns the active ignore rules (NULL active counts as active).
func (db *DB) IgnoreRules(ctx context.Context) ([]IgnoreRule, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT id, source_root_id, pattern FROM cf_ignore_rule
		WHERE COALESCE(active, 1) = 1 ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("ignore rules: %w", err)
	}
	defer rows.Close()
	var out []IgnoreRule
	for rows.Next() {
		var r IgnoreRule
		var root sql.NullInt64
		var pattern sql.NullString
		if err := rows.Scan(&r.ID, &root, &pattern); err != nil {
			return nil, fmt.Errorf("ignore rules: %w", err)
		}
		r.RootID, r.Pattern = root.Int64, pattern.String
		if r.Pattern != "" {
			out = append(out, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ignore rules: %w", err)
	}
	return out, nil
}
