package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// FileVersionAdd records a new version of the file at relPath under a source
// root and returns the version's id: the content hash is registered if new,
// the location is found or created (filename = base name) and points at the
// new version, and the version carries tags as a sorted, de-duplicated comma
// list.
func (db *DB) FileVersionAdd(ctx context.Context, sourceRootID int64, relPath string, contentHash string,
	size int64, modTime time.Time, tags []string) (int64, error) {
	if relPath == "" || contentHash == "" {
		return 0, errors.New("add file version: empty rel path or content hash")
	}
	now := formatTime(time.Now())
	mtime := float64(modTime.UnixNano()) / 1e9
	var versionID int64
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO cf_file_hash_registry (content_hash, first_seen, size_bytes)
			VALUES (?, ?, ?) ON CONFLICT (content_hash) DO NOTHING`, contentHash, now, size); err != nil {
			return fmt.Errorf("register hash: %w", err)
		}

		// Looked up rather than upserted: older databases may lack the
		// UNIQUE (source_root_id, rel_path) constraint ON CONFLICT needs.
		var locID int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM cf_file_location
			WHERE source_root_id = ? AND rel_path = ? ORDER BY id LIMIT 1`, sourceRootID, relPath).Scan(&locID)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			err = tx.QueryRowContext(ctx, `INSERT INTO cf_file_location
				(source_root_id, rel_path, filename, last_known_mtime, last_known_size, discovered_time, last_seen_time)
				VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
				sourceRootID, relPath, path.Base(filepath.ToSlash(relPath)), mtime, size, now, now).Scan(&locID)
			if err != nil {
				return fmt.Errorf("insert location: %w", err)
			}
		case err != nil:
			return fmt.Errorf("find location: %w", err)
		}

		err = tx.QueryRowContext(ctx, `INSERT INTO cf_file_version
			(location_id, content_hash, size_bytes, modified_time, detected_at, applied_tags)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
			locID, contentHash, size, formatTime(modTime), now, tagList(tags)).Scan(&versionID)
		if err != nil {
			return fmt.Errorf("insert version: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE cf_file_location SET
			current_version_id = ?, last_known_mtime = ?, last_known_size = ?, last_seen_time = ?
			WHERE id = ?`, versionID, mtime, size, now, locID); err != nil {
			return fmt.Errorf("update location: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("add file version %q: %w", relPath, err)
	}
	return versionID, nil
}

// tagList renders tags the way applied_tags stores them: sorted, without
// duplicates or blanks, comma separated.
func tagList(tags []string) string {
	set := make(map[string]bool, len(tags))
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		t = strings.TrimSpace(t)
		if t != "" && !set[t] {
			set[t] = true
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
