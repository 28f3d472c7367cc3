package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/job"
)

// Chaining by topic (issue #20 part 4), as package db's chain.go: the
// completion marks subscribed artifacts in its transaction, the chain step
// settles them. Subscriptions change under the catalogue lock, so two
// Sentinels cannot each add half of a loop.

const subscriptionColumns = `plugin_name, topic_name, is_active`

func scanSubscriptions(rows pgx.Rows) ([]job.TopicSubscription, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (job.TopicSubscription, error) {
		var plugin, topic string
		var active *bool
		if err := row.Scan(&plugin, &topic, &active); err != nil {
			return job.TopicSubscription{}, err
		}
		return db.SubscriptionOf(plugin, topic, active), nil
	})
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func readSubscriptions(ctx context.Context, q querier, where string, args ...any) ([]job.TopicSubscription, error) {
	rows, err := q.Query(ctx, `SELECT `+subscriptionColumns+` FROM cf_plugin_subscription `+where+` ORDER BY plugin_name, topic_name`, args...)
	if err != nil {
		return nil, err
	}
	return scanSubscriptions(rows)
}

// chainTopics returns the subscribed producer topics, from the cache
// (db.ChainCache: another Sentinel's change counts within its bound).
func (d *DB) chainTopics(ctx context.Context) (map[string]bool, error) {
	return d.chain.Topics(func() (map[string]bool, error) {
		subs, err := readSubscriptions(ctx, d.pool, "")
		if err != nil {
			return nil, fmt.Errorf("topic subscriptions: %w", err)
		}
		return db.ChainTopics(subs), nil
	})
}

// markChainsSQL writes the marks of the artifacts whose job's plugin has
// an active subscription to their topic. Arguments: jobs, attempts,
// indexes, topics, URIs (arrays), the time.
const markChainsSQL = `INSERT INTO sentinel_chain_pending (job_id, attempt, artifact_index, topic, uri, created_at)
	SELECT c.job_id, c.attempt, c.artifact_index, c.topic, c.uri, $6
	FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) AS c(job_id, attempt, artifact_index, topic, uri)
	JOIN cf_processing_queue q ON q.id = c.job_id
	WHERE EXISTS (SELECT 1 FROM cf_plugin_subscription s
		WHERE s.topic_name = q.plugin_name || ':' || c.topic AND COALESCE(s.is_active, true))
	ON CONFLICT DO NOTHING`

// markChains writes the chain marks of a batch's completions in tx and
// reports whether it wrote any; without subscribed topics it sends
// nothing.
func markChains(ctx context.Context, tx pgx.Tx, now time.Time, cs []job.Conclusion, out []job.Outcome, topics map[string]bool) (bool, error) {
	marks := db.ChainMarks(cs, out, topics)
	if len(marks) == 0 {
		return false, nil
	}
	ids, attempts, idx := make([]int64, len(marks)), make([]int64, len(marks)), make([]int64, len(marks))
	ts, uris := make([]string, len(marks)), make([]string, len(marks))
	for i, m := range marks {
		ids[i], attempts[i], idx[i], ts[i], uris[i] = m.JobID, m.Attempt, m.Index, m.Topic, m.URI
	}
	tag, err := tx.Exec(ctx, markChainsSQL, ids, attempts, idx, ts, uris, now.UTC())
	if err != nil {
		return false, fmt.Errorf("mark %d artifacts for chaining: %w", len(marks), err)
	}
	return tag.RowsAffected() > 0, nil
}

// PluginTopicSubscriptions returns plugin's topic subscriptions, as
// package db's.
func (d *DB) PluginTopicSubscriptions(ctx context.Context, plugin string) (job.TopicSubscriptions, error) {
	plugin, err := db.CheckPluginName(plugin)
	if err != nil {
		return job.TopicSubscriptions{}, err
	}
	out := job.TopicSubscriptions{Plugin: plugin, Lineage: d.lineage.Load()}
	var one int
	err = d.pool.QueryRow(ctx, `SELECT 1 FROM cf_plugin_config WHERE plugin_name = $1`, plugin).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, fmt.Errorf("plugin %s: %w", plugin, job.ErrNotFound)
	}
	if err != nil {
		return out, fmt.Errorf("topic subscriptions of %s: %w", plugin, err)
	}
	if out.Subscriptions, err = readSubscriptions(ctx, d.pool, "WHERE plugin_name = $1", plugin); err != nil {
		return out, fmt.Errorf("topic subscriptions of %s: %w", plugin, err)
	}
	return out, nil
}

// PluginTopicSubscribe subscribes plugin to ref ("PRODUCER:TOPIC"),
// refusing a loop, as package db's.
func (d *DB) PluginTopicSubscribe(ctx context.Context, plugin, ref string) (job.TopicSubscriptions, error) {
	plugin, producer, ref, err := db.CheckSubscription(plugin, ref)
	if err != nil {
		return job.TopicSubscriptions{}, err
	}
	changed := false
	err = d.inTx(ctx, func(tx pgx.Tx) error {
		changed = false
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		for _, p := range []string{plugin, producer} {
			var one int
			err := tx.QueryRow(ctx, `SELECT 1 FROM cf_plugin_config WHERE plugin_name = $1`, p).Scan(&one)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("plugin %s: %w", p, job.ErrNotFound)
			}
			if err != nil {
				return err
			}
		}
		subs, err := readSubscriptions(ctx, tx, "")
		if err != nil {
			return err
		}
		for _, s := range subs {
			if s.Plugin == plugin && s.Topic == ref && s.Active {
				return nil
			}
		}
		if loop := db.ChainCycle(subs, plugin, producer); loop != nil {
			return db.CycleError(plugin, ref, loop)
		}
		changed = true
		_, err = tx.Exec(ctx, `INSERT INTO cf_plugin_subscription (plugin_name, topic_name, is_active)
			VALUES ($1, $2, true) ON CONFLICT (plugin_name, topic_name) DO UPDATE SET is_active = true`, plugin, ref)
		return err
	})
	if err != nil {
		return job.TopicSubscriptions{}, fmt.Errorf("subscribe %s to %s: %w", plugin, ref, err)
	}
	d.chain.Forget()
	out, err := d.PluginTopicSubscriptions(ctx, plugin)
	out.Changed = changed
	return out, err
}

// PluginTopicUnsubscribe removes plugin's subscription to ref, as package
// db's.
func (d *DB) PluginTopicUnsubscribe(ctx context.Context, plugin, ref string) (job.TopicSubscriptions, error) {
	plugin, _, ref, err := db.CheckSubscription(plugin, ref)
	if err != nil {
		return job.TopicSubscriptions{}, err
	}
	var n int64
	err = d.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM cf_plugin_subscription WHERE plugin_name = $1 AND topic_name = $2`, plugin, ref)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return job.TopicSubscriptions{}, fmt.Errorf("unsubscribe %s from %s: %w", plugin, ref, err)
	}
	d.chain.Forget()
	out, err := d.PluginTopicSubscriptions(ctx, plugin)
	out.Changed = n > 0
	return out, err
}

// ChainsPending returns up to limit marked artifacts and the ACTIVE
// source roots, as package db's.
func (d *DB) ChainsPending(ctx context.Context, limit int) (job.ChainWork, error) {
	var w job.ChainWork
	rows, err := d.pool.Query(ctx, `SELECT p.job_id, p.attempt, p.artifact_index, p.topic, p.uri,
			COALESCE(q.plugin_name, ''), COALESCE(q.file_version_id, 0)::bigint, COALESCE(q.priority, 0)::bigint
		FROM sentinel_chain_pending p LEFT JOIN cf_processing_queue q ON q.id = p.job_id
		ORDER BY p.created_at, p.job_id, p.artifact_index LIMIT $1`, limit)
	if err != nil {
		return w, fmt.Errorf("pending chains: %w", err)
	}
	w.Pending, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (job.PendingChain, error) {
		var p job.PendingChain
		err := row.Scan(&p.JobID, &p.Attempt, &p.Index, &p.Topic, &p.URI, &p.Producer, &p.FileVersionID, &p.Priority)
		return p, err
	})
	if err != nil {
		return w, fmt.Errorf("pending chains: %w", err)
	}
	if len(w.Pending) == 0 {
		return w, nil
	}
	if w.Roots, err = d.SourceRoots(ctx, true); err != nil {
		return w, fmt.Errorf("pending chains: %w", err)
	}
	return w, nil
}

// ChainsRecord settles looked-at artifacts in one transaction, as package
// db's.
func (d *DB) ChainsRecord(ctx context.Context, now time.Time, in []job.ChainInput) (job.ChainResult, error) {
	var res job.ChainResult
	var reused []string
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		res = job.ChainResult{Jobs: map[string][]int64{}}
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		var ids []int64
		for _, c := range in {
			p := c.Pending
			tag, err := tx.Exec(ctx, `DELETE FROM sentinel_chain_pending WHERE job_id = $1 AND attempt = $2 AND artifact_index = $3`,
				p.JobID, p.Attempt, p.Index)
			if err != nil {
				return fmt.Errorf("settle job %d artifact %d: %w", p.JobID, p.Index, err)
			}
			if tag.RowsAffected() == 0 {
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
		reused, err = d.reuseJobs(ctx, tx, now, ids)
		return err
	})
	if err != nil {
		return job.ChainResult{}, fmt.Errorf("record chains: %w", blameInput(err))
	}
	d.reuse.Report(reused)
	return res, nil
}

// chainOne chains one artifact in tx, as package db's.
func chainOne(ctx context.Context, tx pgx.Tx, now time.Time, c job.ChainInput) (map[string]int64, bool, error) {
	p := c.Pending
	rows, err := tx.Query(ctx, `SELECT plugin_name FROM cf_plugin_subscription
		WHERE topic_name = $1 AND COALESCE(is_active, true) ORDER BY plugin_name`, db.TopicRef(p.Producer, p.Topic))
	if err != nil {
		return nil, false, err
	}
	subscribers, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(subscribers) == 0 {
		return nil, false, err
	}
	ts := now.UTC()
	mtime := db.ScanMTime(c.ModTime)
	if _, err := tx.Exec(ctx, `INSERT INTO cf_file_hash_registry (content_hash, first_seen, size_bytes)
		VALUES ($1, $2, $3) ON CONFLICT (content_hash) DO NOTHING`, c.Hash, ts, c.Size); err != nil {
		return nil, false, fmt.Errorf("register hash: %w", err)
	}
	locID, current, err := locationFind(ctx, tx, c.RootID, c.RelPath, mtime, c.Size, ts)
	if err != nil {
		return nil, false, err
	}
	var version int64
	made := false
	if current != nil && *current == c.Hash {
		if err := tx.QueryRow(ctx, `UPDATE cf_file_location SET
			last_known_mtime = $1, last_known_size = $2, last_seen_time = $3, missing_since = NULL
			WHERE id = $4 RETURNING current_version_id`, mtime, c.Size, ts, locID).Scan(&version); err != nil {
			return nil, false, fmt.Errorf("refresh location: %w", err)
		}
	} else {
		if version, err = versionInsert(ctx, tx, locID, c.Hash, c.Size, c.ModTime, ts, "", mtime, true); err != nil {
			return nil, false, err
		}
		made = true
	}
	if version == p.FileVersionID {
		return nil, made, nil // the job wrote its own input: nothing to chain
	}
	if _, err := tx.Exec(ctx, `INSERT INTO sentinel_chains (upstream_job_id, upstream_attempt, artifact_index,
			producer, topic, uri, upstream_version_id, original_version_id, derived_version_id, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE((SELECT c.original_version_id FROM sentinel_chains c
			WHERE c.derived_version_id = $7 ORDER BY c.upstream_job_id LIMIT 1), $7), $8, $9)
		ON CONFLICT DO NOTHING`,
		p.JobID, p.Attempt, p.Index, p.Producer, p.Topic, p.URI, p.FileVersionID, version, ts); err != nil {
		return nil, false, fmt.Errorf("link version: %w", err)
	}
	jobs := map[string]int64{}
	for _, s := range subscribers {
		var id int64
		err := tx.QueryRow(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, status, priority, retry_count, updated_at)
			SELECT $1::bigint, $2::text, 'QUEUED', $3::bigint, 0, $4
			WHERE NOT EXISTS (SELECT 1 FROM cf_processing_queue WHERE file_version_id = $1 AND plugin_name = $2)
			RETURNING id`, version, s, p.Priority, now).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("queue job for %s: %w", s, err)
		}
		jobs[s] = id
	}
	return jobs, made, nil
}

// chainVersionsSQL lists a version ($1) and every version chained from it,
// as package db's.
const chainVersionsSQL = `WITH RECURSIVE d(id) AS (SELECT $1::bigint
		UNION SELECT c.derived_version_id FROM sentinel_chains c JOIN d ON c.upstream_version_id = d.id)
	SELECT id FROM d`

// chainOrigins sets Chain on the outputs made from chained versions.
func (d *DB) chainOrigins(ctx context.Context, outs []job.Output) error {
	found := map[int64]*job.ChainOrigin{}
	for i := range outs {
		v := outs[i].FileVersionID
		o, seen := found[v]
		if !seen {
			var c job.ChainOrigin
			var path *string
			err := d.pool.QueryRow(ctx, `SELECT c.upstream_job_id, c.upstream_attempt, c.artifact_index,
					c.producer, c.topic, c.upstream_version_id, c.original_version_id,
					(SELECT r.path || '/' || l.rel_path FROM cf_file_version v
						JOIN cf_file_location l ON l.id = v.location_id
						JOIN cf_source_root r ON r.id = l.source_root_id WHERE v.id = c.original_version_id)
				FROM sentinel_chains c WHERE c.derived_version_id = $1 ORDER BY c.upstream_job_id DESC LIMIT 1`, v).Scan(
				&c.UpstreamJobID, &c.UpstreamAttempt, &c.ArtifactIndex, &c.Producer, &c.Topic,
				&c.UpstreamVersionID, &c.OriginalVersionID, &path)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return fmt.Errorf("chain of version %d: %w", v, err)
			default:
				if path != nil {
					c.OriginalPath = db.CleanJoin(*path)
				}
				o = &c
			}
			found[v] = o
		}
		outs[i].Chain = o
	}
	return nil
}
