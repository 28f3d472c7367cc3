package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// Chaining by topic (issue #20 part 4), in cf_plugin_subscription and
// sentinel_chain_pending / sentinel_chains (migration 0013). The shared
// rules are in chainpath.go.
//
// Two steps, so that a completion stays cheap and nothing is lost: the
// completion's transaction marks the artifacts some plugin subscribes to
// (sentinel_chain_pending, only when a subscription exists), and the chain
// step, after the commit and again after a restart, hashes each marked
// file (outside the database) and in one transaction makes its file
// version, links it to the upstream job (sentinel_chains) and queues the
// subscribers' jobs, deleting the mark.

// subscriptionColumns are what SubscriptionOf reads of a row.
const subscriptionColumns = `plugin_name, topic_name, is_active`

func scanSubscriptions(rows *sql.Rows) ([]job.TopicSubscription, error) {
	defer rows.Close()
	var out []job.TopicSubscription
	for rows.Next() {
		var plugin, topic string
		var active sql.NullBool
		if err := rows.Scan(&plugin, &topic, &active); err != nil {
			return nil, err
		}
		out = append(out, SubscriptionOf(plugin, topic, nullBool(active)))
	}
	return out, rows.Err()
}

// chainTopics returns the producer topics some active subscription names,
// from the cache (chainFresh).
func (db *DB) chainTopics(ctx context.Context) (map[string]bool, error) {
	return db.chain.Topics(func() (map[string]bool, error) {
		rows, err := db.reader.QueryContext(ctx, `SELECT `+subscriptionColumns+` FROM cf_plugin_subscription`)
		if err != nil {
			return nil, fmt.Errorf("topic subscriptions: %w", err)
		}
		subs, err := scanSubscriptions(rows)
		if err != nil {
			return nil, fmt.Errorf("topic subscriptions: %w", err)
		}
		return ChainTopics(subs), nil
	})
}

// markChainsSQL writes n marks (ChainMark: job, attempt, index, topic,
// URI) for the jobs whose plugin has an active subscription to the
// artifact's topic. Argument 1 is the time.
func markChainsSQL(n int) string {
	return `WITH c(job_id, attempt, artifact_index, topic, uri) AS (VALUES (?2, ?, ?, ?, ?)` +
		strings.Repeat(", (?, ?, ?, ?, ?)", n-1) + `)
	INSERT INTO sentinel_chain_pending (job_id, attempt, artifact_index, topic, uri, created_at)
	SELECT c.job_id, c.attempt, c.artifact_index, c.topic, c.uri, ?1
	FROM c JOIN cf_processing_queue q ON q.id = c.job_id
	WHERE EXISTS (SELECT 1 FROM cf_plugin_subscription s
		WHERE s.topic_name = q.plugin_name || ':' || c.topic AND COALESCE(s.is_active, 1) <> 0)
	ON CONFLICT DO NOTHING`
}

// markChains writes the chain marks of a batch's completions in its
// transaction and reports whether it wrote any. topics are the subscribed
// topics read before the transaction: none (the usual case) writes
// nothing and runs no statement.
func (db *DB) markChains(ctx context.Context, tx *sql.Tx, ts string, cs []job.Conclusion, out []job.Outcome,
	topics map[string]bool) (bool, error) {
	marks := ChainMarks(cs, out, topics)
	wrote := false
	for len(marks) > 0 {
		n := min(len(marks), 64)
		args := make([]any, 0, 1+5*n)
		args = append(args, ts)
		for _, m := range marks[:n] {
			args = append(args, m.JobID, m.Attempt, m.Index, m.Topic, m.URI)
		}
		res, err := tx.ExecContext(ctx, markChainsSQL(n), args...)
		if err != nil {
			return false, fmt.Errorf("mark %d artifacts for chaining: %w", n, err)
		}
		if k, _ := res.RowsAffected(); k > 0 {
			wrote = true
		}
		marks = marks[n:]
	}
	return wrote, nil
}

// PluginTopicSubscriptions returns plugin's topic subscriptions. An
// unknown plugin is job.ErrNotFound.
func (db *DB) PluginTopicSubscriptions(ctx context.Context, plugin string) (job.TopicSubscriptions, error) {
	plugin, err := CheckPluginName(plugin)
	if err != nil {
		return job.TopicSubscriptions{}, err
	}
	out := job.TopicSubscriptions{Plugin: plugin, Lineage: db.lineage.Load()}
	var one int
	err = db.reader.QueryRowContext(ctx, `SELECT 1 FROM cf_plugin_config WHERE plugin_name = ?`, plugin).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return out, fmt.Errorf("plugin %s: %w", plugin, job.ErrNotFound)
	}
	if err != nil {
		return out, fmt.Errorf("topic subscriptions of %s: %w", plugin, err)
	}
	rows, err := db.reader.QueryContext(ctx, `SELECT `+subscriptionColumns+` FROM cf_plugin_subscription
		WHERE plugin_name = ? ORDER BY topic_name`, plugin)
	if err != nil {
		return out, fmt.Errorf("topic subscriptions of %s: %w", plugin, err)
	}
	if out.Subscriptions, err = scanSubscriptions(rows); err != nil {
		return out, fmt.Errorf("topic subscriptions of %s: %w", plugin, err)
	}
	return out, nil
}

// PluginTopicSubscribe subscribes plugin to producer's topic, ref being
// "PRODUCER:TOPIC" (ParseTopicRef). Both plugins must be known; a
// subscription that would close a loop of subscriptions (the plugin's
// own topic included) is refused with the loop named (job.ErrInvalid),
// and nothing is written. An inactive row is made active again.
func (db *DB) PluginTopicSubscribe(ctx context.Context, plugin, ref string) (job.TopicSubscriptions, error) {
	plugin, producer, ref, err := CheckSubscription(plugin, ref)
	if err != nil {
		return job.TopicSubscriptions{}, err
	}
	changed := false
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		changed = false
		for _, p := range []string{plugin, producer} {
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM cf_plugin_config WHERE plugin_name = ?`, p).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("plugin %s: %w", p, job.ErrNotFound)
			}
			if err != nil {
				return err
			}
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+subscriptionColumns+` FROM cf_plugin_subscription`)
		if err != nil {
			return err
		}
		subs, err := scanSubscriptions(rows)
		if err != nil {
			return err
		}
		for _, s := range subs {
			if s.Plugin == plugin && s.Topic == ref && s.Active {
				return nil // there already
			}
		}
		if loop := ChainCycle(subs, plugin, producer); loop != nil {
			return CycleError(plugin, ref, loop)
		}
		changed = true
		_, err = tx.ExecContext(ctx, `INSERT INTO cf_plugin_subscription (plugin_name, topic_name, is_active)
			VALUES (?, ?, 1) ON CONFLICT (plugin_name, topic_name) DO UPDATE SET is_active = 1`, plugin, ref)
		return err
	})
	if err != nil {
		return job.TopicSubscriptions{}, fmt.Errorf("subscribe %s to %s: %w", plugin, ref, err)
	}
	db.chain.Forget()
	out, err := db.PluginTopicSubscriptions(ctx, plugin)
	out.Changed = changed
	return out, err
}

// PluginTopicUnsubscribe removes plugin's subscription to ref. Artifacts
// already marked are still chained to the plugins subscribed when the
// chain step runs.
func (db *DB) PluginTopicUnsubscribe(ctx context.Context, plugin, ref string) (job.TopicSubscriptions, error) {
	plugin, _, ref, err := CheckSubscription(plugin, ref)
	if err != nil {
		return job.TopicSubscriptions{}, err
	}
	var n int64
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM cf_plugin_subscription WHERE plugin_name = ? AND topic_name = ?`, plugin, ref)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return job.TopicSubscriptions{}, fmt.Errorf("unsubscribe %s from %s: %w", plugin, ref, err)
	}
	db.chain.Forget()
	out, err := db.PluginTopicSubscriptions(ctx, plugin)
	out.Changed = n > 0
	return out, err
}

// ChainsPending returns up to limit marked artifacts, oldest first, with
// their jobs, and the ACTIVE source roots.
func (db *DB) ChainsPending(ctx context.Context, limit int) (job.ChainWork, error) {
	var w job.ChainWork
	rows, err := db.reader.QueryContext(ctx, `SELECT p.job_id, p.attempt, p.artifact_index, p.topic, p.uri,
			COALESCE(q.plugin_name, ''), COALESCE(q.file_version_id, 0), COALESCE(q.priority, 0)
		FROM sentinel_chain_pending p LEFT JOIN cf_processing_queue q ON q.id = p.job_id
		ORDER BY p.created_at, p.job_id, p.artifact_index LIMIT ?`, limit)
	if err != nil {
		return w, fmt.Errorf("pending chains: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p job.PendingChain
		if err := rows.Scan(&p.JobID, &p.Attempt, &p.Index, &p.Topic, &p.URI, &p.Producer, &p.FileVersionID, &p.Priority); err != nil {
			return w, fmt.Errorf("pending chains: %w", err)
		}
		w.Pending = append(w.Pending, p)
	}
	if err := rows.Err(); err != nil {
		return w, fmt.Errorf("pending chains: %w", err)
	}
	if len(w.Pending) == 0 {
		return w, nil
	}
	if w.Roots, err = db.SourceRoots(ctx, true); err != nil {
		return w, fmt.Errorf("pending chains: %w", err)
	}
	return w, nil
}

// ChainsRecord settles looked-at artifacts in one transaction. Each mark
// is deleted (one another Sentinel deleted first is skipped); a refused
// one chains nothing. For the others, when some plugin is subscribed to
// the artifact's topic now: the content is registered, the file's
// location found or made under its root, a version added unless the
// location's current one has the same content (the scanner's rule), the
// version linked to the upstream job (sentinel_chains), and a QUEUED job
// added per subscriber that has none for that version, with the upstream
// job's priority; they go through reuse like every new job.
func (db *DB) ChainsRecord(ctx context.Context, now time.Time, in []job.ChainInput) (job.ChainResult, error) {
	var res job.ChainResult
	var reused []string
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		res = job.ChainResult{Jobs: map[string][]int64{}}
		var ids []int64
		for _, c := range in {
			p := c.Pending
			del, err := tx.ExecContext(ctx, `DELETE FROM sentinel_chain_pending WHERE job_id = ? AND attempt = ? AND artifact_index = ?`,
				p.JobID, p.Attempt, p.Index)
			if err != nil {
				return fmt.Errorf("settle job %d artifact %d: %w", p.JobID, p.Index, err)
			}
			if n, _ := del.RowsAffected(); n == 0 {
				continue
			}
			res.Done++
			if c.Refused != "" || p.FileVersionID == 0 {
				continue
			}
			jobs, made, err := chainOne(ctx, tx, now, c)
			if err != nil {
				return fmt.Errorf("chain job %d artifact %d: %w", p.JobID, p.Index, err)
			}
			if made {
				res.Versions++
			}
			for plugin, id := range jobs {
				res.Jobs[plugin] = append(res.Jobs[plugin], id)
				ids = append(ids, id)
			}
		}
		var err error
		reused, err = db.reuseJobs(ctx, tx, now, ids)
		return err
	})
	if err != nil {
		return job.ChainResult{}, fmt.Errorf("record chains: %w", err)
	}
	db.reuse.Report(reused)
	return res, nil
}

// chainOne chains one artifact in tx: the jobs it queued by plugin, and
// whether it made a new version.
func chainOne(ctx context.Context, tx *sql.Tx, now time.Time, c job.ChainInput) (map[string]int64, bool, error) {
	p := c.Pending
	rows, err := tx.QueryContext(ctx, `SELECT plugin_name FROM cf_plugin_subscription
		WHERE topic_name = ? AND COALESCE(is_active, 1) <> 0 ORDER BY plugin_name`, TopicRef(p.Producer, p.Topic))
	if err != nil {
		return nil, false, err
	}
	var subscribers []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return nil, false, err
		}
		subscribers = append(subscribers, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(subscribers) == 0 {
		return nil, false, err
	}
	ts := formatTime(now)
	mtime := ScanMTime(c.ModTime)
	if _, err := tx.ExecContext(ctx, `INSERT INTO cf_file_hash_registry (content_hash, first_seen, size_bytes)
		VALUES (?, ?, ?) ON CONFLICT (content_hash) DO NOTHING`, c.Hash, ts, c.Size); err != nil {
		return nil, false, fmt.Errorf("register hash: %w", err)
	}
	var locID int64
	var currentID sql.NullInt64
	var current sql.NullString
	err = tx.QueryRowContext(ctx, `SELECT l.id, v.id, v.content_hash FROM cf_file_location l
		LEFT JOIN cf_file_version v ON v.id = l.current_version_id
		WHERE l.source_root_id = ? AND l.rel_path = ? ORDER BY l.id LIMIT 1`, c.RootID, c.RelPath).Scan(&locID, &currentID, &current)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		err = tx.QueryRowContext(ctx, `INSERT INTO cf_file_location
			(source_root_id, rel_path, filename, last_known_mtime, last_known_size, discovered_time, last_seen_time)
			VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			c.RootID, c.RelPath, path.Base(c.RelPath), mtime, c.Size, ts, ts).Scan(&locID)
		if err != nil {
			return nil, false, fmt.Errorf("insert location: %w", err)
		}
	case err != nil:
		return nil, false, fmt.Errorf("find location: %w", err)
	}
	version, made := currentID.Int64, false
	if !current.Valid || current.String != c.Hash {
		err = tx.QueryRowContext(ctx, `INSERT INTO cf_file_version
			(location_id, content_hash, size_bytes, modified_time, detected_at, applied_tags)
			VALUES (?, ?, ?, ?, ?, '') RETURNING id`, locID, c.Hash, c.Size, formatTime(c.ModTime), ts).Scan(&version)
		if err != nil {
			return nil, false, fmt.Errorf("insert version: %w", err)
		}
		made = true
	}
	if _, err := tx.ExecContext(ctx, `UPDATE cf_file_location SET
		current_version_id = ?, last_known_mtime = ?, last_known_size = ?, last_seen_time = ?, missing_since = NULL
		WHERE id = ?`, version, mtime, c.Size, ts, locID); err != nil {
		return nil, false, fmt.Errorf("update location: %w", err)
	}
	if version == p.FileVersionID {
		return nil, made, nil // the job wrote its own input: nothing to chain
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO sentinel_chains (upstream_job_id, upstream_attempt, artifact_index,
			producer, topic, uri, upstream_version_id, original_version_id, derived_version_id, created_at)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, COALESCE((SELECT c.original_version_id FROM sentinel_chains c
			WHERE c.derived_version_id = ?7 ORDER BY c.upstream_job_id LIMIT 1), ?7), ?8, ?9)
		ON CONFLICT DO NOTHING`,
		p.JobID, p.Attempt, p.Index, p.Producer, p.Topic, p.URI, p.FileVersionID, version, ts); err != nil {
		return nil, false, fmt.Errorf("link version: %w", err)
	}
	jobs := map[string]int64{}
	for _, s := range subscribers {
		var id int64
		err := tx.QueryRowContext(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, status, priority, retry_count, updated_at, enqueued_at)
			SELECT ?, ?, 'QUEUED', ?, 0, ?, ?
			WHERE NOT EXISTS (SELECT 1 FROM cf_processing_queue WHERE file_version_id = ?1 AND plugin_name = ?2)
			RETURNING id`, version, s, p.Priority, ts, unixMillis(now)).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			continue // that version has its job already
		}
		if err != nil {
			return nil, false, fmt.Errorf("queue job for %s: %w", s, err)
		}
		jobs[s] = id
	}
	return jobs, made, nil
}

// chainVersionsSQL lists a file version and every version chained from it,
// however deep (?1 is the version). UNION, not UNION ALL: a version reached
// twice is walked once, so the walk ends.
const chainVersionsSQL = `WITH RECURSIVE d(id) AS (SELECT ?1
		UNION SELECT c.derived_version_id FROM sentinel_chains c JOIN d ON c.upstream_version_id = d.id)
	SELECT id FROM d`

// chainOrigins sets Chain on the outputs made from chained versions.
func (db *DB) chainOrigins(ctx context.Context, outs []job.Output) error {
	found := map[int64]*job.ChainOrigin{}
	for i := range outs {
		v := outs[i].FileVersionID
		o, seen := found[v]
		if !seen {
			var c job.ChainOrigin
			var path sql.NullString
			err := db.reader.QueryRowContext(ctx, `SELECT c.upstream_job_id, c.upstream_attempt, c.artifact_index,
					c.producer, c.topic, c.upstream_version_id, c.original_version_id,
					(SELECT r.path || char(0) || l.rel_path FROM cf_file_version v
						JOIN cf_file_location l ON l.id = v.location_id
						JOIN cf_source_root r ON r.id = l.source_root_id WHERE v.id = c.original_version_id)
				FROM sentinel_chains c WHERE c.derived_version_id = ? ORDER BY c.upstream_job_id DESC LIMIT 1`, v).Scan(
				&c.UpstreamJobID, &c.UpstreamAttempt, &c.ArtifactIndex, &c.Producer, &c.Topic,
				&c.UpstreamVersionID, &c.OriginalVersionID, &path)
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return fmt.Errorf("chain of version %d: %w", v, err)
			default:
				c.OriginalPath = locatedPath(path)
				o = &c
			}
			found[v] = o
		}
		outs[i].Chain = o
	}
	return nil
}
