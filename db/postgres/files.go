package postgres

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/casparian/sentinel/db"
)

// The scanner's side of the file catalogue: the same methods, with the same
// meaning, as package db's (db/files.go); which plugins a file queues a job
// for and at which priority are package db's rules. The original's times
// (first_seen, discovered_time, last_seen_time, modified_time, detected_at)
// are TIMESTAMP WITHOUT TIME ZONE and hold UTC; missing_since and the
// queue's updated_at are ours, TIMESTAMPTZ.

// ScanLocations returns the known files of a source root by rel_path.
func (d *DB) ScanLocations(ctx context.Context, rootID int64) (map[string]db.ScanLocation, error) {
	rows, err := d.pool.Query(ctx, `SELECT id, rel_path, last_known_size, last_known_mtime, missing_since IS NOT NULL
		FROM cf_file_location WHERE source_root_id = $1 ORDER BY id`, rootID)
	if err != nil {
		return nil, fmt.Errorf("scan locations of root %d: %w", rootID, err)
	}
	defer rows.Close()
	out := make(map[string]db.ScanLocation)
	for rows.Next() {
		var l db.ScanLocation
		var rel *string
		var size *int64
		var mtime *float64
		if err := rows.Scan(&l.ID, &rel, &size, &mtime, &l.Missing); err != nil {
			return nil, fmt.Errorf("scan locations of root %d: %w", rootID, err)
		}
		l.RelPath, l.Size, l.MTime = deref(rel), deref(size), deref(mtime)
		if _, dup := out[l.RelPath]; !dup { // the oldest row wins, as in FileVersionAdd
			out[l.RelPath] = l
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("scan locations of root %d: %w", rootID, err)
	}
	return out, nil
}

// ScanRecordFiles records scanned files in one transaction, as package db's
// does: a new version (with its tags, and one QUEUED job per subscribed
// plugin at db.ScanPriority) for new content, only the size and mtime
// refreshed for content equal to the location's current version.
func (d *DB) ScanRecordFiles(ctx context.Context, now time.Time, files []db.ScannedFile) ([]db.ScanRecord, error) {
	if err := db.CheckScannedFiles(files); err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, nil
	}
	var out []db.ScanRecord
	var reused []string
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		out = make([]db.ScanRecord, len(files))
		var ids []int64
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		subs, err := subscriptions(ctx, tx)
		if err != nil {
			return err
		}
		for i, f := range files {
			rec, err := recordFile(ctx, tx, now, f, subs)
			if err != nil {
				return fmt.Errorf("%s: %w", f.RelPath, err)
			}
			out[i] = rec
			ids = append(ids, rec.Jobs...)
		}
		reused, err = d.reuseJobs(ctx, tx, now, ids) // outputs.go
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record scanned files: %w", blameInput(err))
	}
	d.reuse.Report(reused)
	return out, nil
}

// subscriptions returns each plugin's subscription tags, plugins by name.
func subscriptions(ctx context.Context, tx pgx.Tx) ([]db.Subscription, error) {
	rows, err := tx.Query(ctx, `SELECT plugin_name, subscription_tags FROM cf_plugin_config
		WHERE COALESCE(subscription_tags, '') <> '' ORDER BY plugin_name`)
	if err != nil {
		return nil, fmt.Errorf("subscriptions: %w", err)
	}
	defer rows.Close()
	var out []db.Subscription
	for rows.Next() {
		var name, tags *string
		if err := rows.Scan(&name, &tags); err != nil {
			return nil, fmt.Errorf("subscriptions: %w", err)
		}
		out = append(out, db.NewSubscription(deref(name), deref(tags)))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("subscriptions: %w", err)
	}
	return out, nil
}

func recordFile(ctx context.Context, tx pgx.Tx, now time.Time, f db.ScannedFile, subs []db.Subscription) (db.ScanRecord, error) {
	var rec db.ScanRecord
	ts := now.UTC()
	mtime := db.ScanMTime(f.ModTime)
	if _, err := tx.Exec(ctx, `INSERT INTO cf_file_hash_registry (content_hash, first_seen, size_bytes)
		VALUES ($1, $2, $3) ON CONFLICT (content_hash) DO NOTHING`, f.Hash, ts, f.Size); err != nil {
		return rec, fmt.Errorf("register hash: %w", err)
	}
	locID, current, err := locationFind(ctx, tx, f.RootID, f.RelPath, mtime, f.Size, ts)
	if err != nil {
		return rec, err
	}
	rec.LocationID = locID
	if current != nil && *current == f.Hash {
		_, err := tx.Exec(ctx, `UPDATE cf_file_location SET
			last_known_mtime = $1, last_known_size = $2, last_seen_time = $3, missing_since = NULL
			WHERE id = $4`, mtime, f.Size, ts, rec.LocationID)
		if err != nil {
			return rec, fmt.Errorf("refresh location: %w", err)
		}
		return rec, nil
	}
	tags := db.TagList(f.Tags)
	rec.VersionID, err = versionInsert(ctx, tx, rec.LocationID, f.Hash, f.Size, f.ModTime, ts, tags, mtime, true)
	if err != nil {
		return rec, err
	}
	priority := db.ScanPriority(now.Sub(f.ModTime))
	for _, p := range subs {
		if !p.Matches(tags) {
			continue
		}
		var id int64
		err := tx.QueryRow(ctx, `INSERT INTO cf_processing_queue
			(file_version_id, plugin_name, status, priority, retry_count, updated_at)
			VALUES ($1, $2, 'QUEUED', $3, 0, $4) RETURNING id`, rec.VersionID, p.Plugin, priority, now).Scan(&id)
		if err != nil {
			return rec, fmt.Errorf("queue job for %s: %w", p.Plugin, err)
		}
		rec.Jobs = append(rec.Jobs, id)
	}
	return rec, nil
}

// locationFind returns the oldest location at relPath under a root and the
// content hash of its current version (nil if none), creating the location
// (filename = base name) if there is none. Looked up rather than upserted:
// the original schema has no UNIQUE (source_root_id, rel_path) for ON
// CONFLICT, so callers hold the catalogue lock.
func locationFind(ctx context.Context, tx pgx.Tx, rootID int64, relPath string, mtime float64, size int64, ts time.Time) (int64, *string, error) {
	var id int64
	var current *string
	err := tx.QueryRow(ctx, `SELECT l.id, v.content_hash FROM cf_file_location l
		LEFT JOIN cf_file_version v ON v.id = l.current_version_id
		WHERE l.source_root_id = $1 AND l.rel_path = $2 ORDER BY l.id LIMIT 1`, rootID, relPath).Scan(&id, &current)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		err = tx.QueryRow(ctx, `INSERT INTO cf_file_location
			(source_root_id, rel_path, filename, last_known_mtime, last_known_size, discovered_time, last_seen_time)
			VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id`,
			rootID, relPath, path.Base(filepath.ToSlash(relPath)), mtime, size, ts).Scan(&id)
		if err != nil {
			return 0, nil, fmt.Errorf("insert location: %w", err)
		}
	case err != nil:
		return 0, nil, fmt.Errorf("find location: %w", err)
	}
	return id, current, nil
}

// versionInsert inserts a version of a location and makes it the location's
// current one; found clears the location's missing mark (a scan saw it).
func versionInsert(ctx context.Context, tx pgx.Tx, locID int64, hash string, size int64, modTime, ts time.Time,
	tags string, mtime float64, found bool) (int64, error) {
	var id int64
	err := tx.QueryRow(ctx, `INSERT INTO cf_file_version
		(location_id, content_hash, size_bytes, modified_time, detected_at, applied_tags)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		locID, hash, size, modTime.UTC(), ts, tags).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert version: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE cf_file_location SET
		current_version_id = $1, last_known_mtime = $2, last_known_size = $3, last_seen_time = $4,
		missing_since = CASE WHEN $5 THEN NULL ELSE missing_since END
		WHERE id = $6`, id, mtime, size, ts, found, locID); err != nil {
		return 0, fmt.Errorf("update location: %w", err)
	}
	return id, nil
}

// ScanFinish records the end of a scan of one source root: the locations seen
// get last_seen_time = now (and lose a missing mark), the locations not found
// get missing_since = now unless already marked. Versions and jobs are left
// alone: a deleted file's history stays. The ids go as arrays, so there is
// no chunking as on SQLite.
func (d *DB) ScanFinish(ctx context.Context, now time.Time, rootID int64, seen, missing []int64) error {
	if len(seen) == 0 && len(missing) == 0 {
		return nil
	}
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		if len(seen) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE cf_file_location SET last_seen_time = $1, missing_since = NULL
				WHERE source_root_id = $2 AND id = ANY($3)`, now.UTC(), rootID, seen); err != nil {
				return fmt.Errorf("mark seen: %w", err)
			}
		}
		if len(missing) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE cf_file_location SET missing_since = $1
				WHERE source_root_id = $2 AND missing_since IS NULL AND id = ANY($3)`, now, rootID, missing); err != nil {
				return fmt.Errorf("mark missing: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("finish scan of root %d: %w", rootID, err)
	}
	return nil
}

// FileVersionAdd records a new version of the file at relPath under a source
// root and returns the version's id, as package db's does: the hash is
// registered if new, the location found or created and pointed at the new
// version, whose tags are a sorted, de-duplicated comma list.
func (d *DB) FileVersionAdd(ctx context.Context, sourceRootID int64, relPath string, contentHash string,
	size int64, modTime time.Time, tags []string) (int64, error) {
	if relPath == "" || contentHash == "" {
		return 0, errors.New("add file version: empty rel path or content hash")
	}
	now := time.Now().UTC()
	mtime := db.ScanMTime(modTime)
	var versionID int64
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockCatalogue(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO cf_file_hash_registry (content_hash, first_seen, size_bytes)
			VALUES ($1, $2, $3) ON CONFLICT (content_hash) DO NOTHING`, contentHash, now, size); err != nil {
			return fmt.Errorf("register hash: %w", err)
		}
		locID, _, err := locationFind(ctx, tx, sourceRootID, relPath, mtime, size, now)
		if err != nil {
			return err
		}
		versionID, err = versionInsert(ctx, tx, locID, contentHash, size, modTime, now, db.TagList(tags), mtime, false)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("add file version %q: %w", relPath, blameInput(err))
	}
	return versionID, nil
}
