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

// ScanLocation is what the database knows about one file of a source root:
// enough for a scan to tell an unchanged file (same size and mtime) from one
// that must be hashed.
type ScanLocation struct {
	ID      int64
	RelPath string
	Size    int64
	MTime   float64 // last_known_mtime: Unix seconds
	Missing bool    // the last scan did not find it
}

// ScanLocations returns the known files of a source root by rel_path.
func (db *DB) ScanLocations(ctx context.Context, rootID int64) (map[string]ScanLocation, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT id, rel_path, last_known_size, last_known_mtime, missing_since IS NOT NULL
		FROM cf_file_location WHERE source_root_id = ? ORDER BY id`, rootID)
	if err != nil {
		return nil, fmt.Errorf("scan locations of root %d: %w", rootID, err)
	}
	defer rows.Close()
	out := make(map[string]ScanLocation)
	for rows.Next() {
		var l ScanLocation
		var rel sql.NullString
		var size sql.NullInt64
		var mtime sql.NullFloat64
		if err := rows.Scan(&l.ID, &rel, &size, &mtime, &l.Missing); err != nil {
			return nil, fmt.Errorf("scan locations of root %d: %w", rootID, err)
		}
		l.RelPath, l.Size, l.MTime = rel.String, size.Int64, mtime.Float64
		if _, dup := out[l.RelPath]; !dup { // the oldest row wins, as in FileVersionAdd
			out[l.RelPath] = l
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("scan locations of root %d: %w", rootID, err)
	}
	return out, nil
}

// ScannedFile is a new or changed file a scan has hashed.
type ScannedFile struct {
	RootID  int64
	RelPath string // slash-separated, relative to the root
	Hash    string // SHA-256 hex of the content
	Size    int64
	ModTime time.Time
	Tags    []string // of the routing rules its path matches
}

// ScanRecord is what ScanRecordFiles did with one file.
type ScanRecord struct {
	LocationID int64
	// VersionID is the new cf_file_version; 0 when the content equals the
	// location's current version (only the size/mtime were refreshed).
	VersionID int64
	// Jobs are the QUEUED jobs inserted for the new version, one per
	// subscribed plugin.
	Jobs []int64
}

// ScanRecordFiles records scanned files in one transaction. For each file:
// the hash is registered, the location found or created; if the content
// differs from the location's current version, a version is inserted with
// the file's tags (sorted comma list) and one QUEUED job per plugin whose
// subscription_tags intersect them, with priority by the file's age (100
// modified within a day, 50 within a week, else 10, as the original scout).
// Content equal to the current version only refreshes size and mtime, so
// recording the same file twice never duplicates versions or jobs.
func (db *DB) ScanRecordFiles(ctx context.Context, now time.Time, files []ScannedFile) ([]ScanRecord, error) {
	if err := CheckScannedFiles(files); err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, nil
	}
	// A scan records many files, each with the same few statements:
	// prepared once on the writer, they are not parsed again per file.
	if err := db.prepareWriter(ctx, recordFileSQL[:]...); err != nil {
		return nil, fmt.Errorf("record scanned files: %w", err)
	}
	out := make([]ScanRecord, len(files))
	var reused []string
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		subs, err := subscriptions(ctx, tx)
		if err != nil {
			return err
		}
		var st recordStmts
		for i, q := range recordFileSQL {
			if st[i], err = db.txStmt(ctx, tx, q); err != nil {
				return err
			}
		}
		var ids []int64
		for i, f := range files {
			rec, err := recordFile(ctx, &st, now, f, subs)
			if err != nil {
				return fmt.Errorf("%s: %w", f.RelPath, err)
			}
			out[i] = rec
			ids = append(ids, rec.Jobs...)
		}
		reused, err = db.reuseJobs(ctx, tx, now, ids) // reuse.go
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record scanned files: %w", err)
	}
	db.reuse.Report(reused)
	return out, nil
}

// subscriptions returns each plugin's subscription tags, plugins by name.
func subscriptions(ctx context.Context, tx *sql.Tx) ([]Subscription, error) {
	rows, err := tx.QueryContext(ctx, `SELECT plugin_name, subscription_tags FROM cf_plugin_config
		WHERE COALESCE(subscription_tags, '') <> '' ORDER BY plugin_name`)
	if err != nil {
		return nil, fmt.Errorf("subscriptions: %w", err)
	}
	defer rows.Close()
	var out []Subscription
	for rows.Next() {
		var name, tags sql.NullString
		if err := rows.Scan(&name, &tags); err != nil {
			return nil, fmt.Errorf("subscriptions: %w", err)
		}
		out = append(out, NewSubscription(name.String, tags.String))
	}
	return out, rows.Err()
}

// recordFileSQL are recordFile's statements, in the order of recordStmts.
var recordFileSQL = [...]string{
	`INSERT INTO cf_file_hash_registry (content_hash, first_seen, size_bytes)
		VALUES (?, ?, ?) ON CONFLICT (content_hash) DO NOTHING`,
	`SELECT l.id, v.content_hash FROM cf_file_location l
		LEFT JOIN cf_file_version v ON v.id = l.current_version_id
		WHERE l.source_root_id = ? AND l.rel_path = ? ORDER BY l.id LIMIT 1`,
	`INSERT INTO cf_file_location
		(source_root_id, rel_path, filename, last_known_mtime, last_known_size, discovered_time, last_seen_time)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
	`UPDATE cf_file_location SET
		last_known_mtime = ?, last_known_size = ?, last_seen_time = ?, missing_since = NULL
		WHERE id = ?`,
	`INSERT INTO cf_file_version
		(location_id, content_hash, size_bytes, modified_time, detected_at, applied_tags)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
	`UPDATE cf_file_location SET
		current_version_id = ?, last_known_mtime = ?, last_known_size = ?, last_seen_time = ?, missing_since = NULL
		WHERE id = ?`,
	`INSERT INTO cf_processing_queue
		(file_version_id, plugin_name, status, priority, retry_count, updated_at, enqueued_at)
		VALUES (?, ?, 'QUEUED', ?, 0, ?, ?) RETURNING id`,
}

// recordStmts are recordFileSQL's statements bound to the scan's
// transaction.
type recordStmts [len(recordFileSQL)]*sql.Stmt

// The statements of recordStmts by name.
const (
	stRegisterHash = iota
	stFindLocation
	stInsertLocation
	stRefreshLocation
	stInsertVersion
	stUpdateLocation
	stQueueJob
)

func recordFile(ctx context.Context, st *recordStmts, now time.Time, f ScannedFile, subs []Subscription) (ScanRecord, error) {
	var rec ScanRecord
	ts := formatTime(now)
	mtime := ScanMTime(f.ModTime)
	if _, err := st[stRegisterHash].ExecContext(ctx, f.Hash, ts, f.Size); err != nil {
		return rec, fmt.Errorf("register hash: %w", err)
	}
	var current sql.NullString
	err := st[stFindLocation].QueryRowContext(ctx, f.RootID, f.RelPath).Scan(&rec.LocationID, &current)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		err = st[stInsertLocation].QueryRowContext(ctx,
			f.RootID, f.RelPath, path.Base(f.RelPath), mtime, f.Size, ts, ts).Scan(&rec.LocationID)
		if err != nil {
			return rec, fmt.Errorf("insert location: %w", err)
		}
	case err != nil:
		return rec, fmt.Errorf("find location: %w", err)
	}
	if current.Valid && current.String == f.Hash {
		_, err := st[stRefreshLocation].ExecContext(ctx, mtime, f.Size, ts, rec.LocationID)
		if err != nil {
			return rec, fmt.Errorf("refresh location: %w", err)
		}
		return rec, nil
	}
	tags := tagList(f.Tags)
	err = st[stInsertVersion].QueryRowContext(ctx,
		rec.LocationID, f.Hash, f.Size, formatTime(f.ModTime), ts, tags).Scan(&rec.VersionID)
	if err != nil {
		return rec, fmt.Errorf("insert version: %w", err)
	}
	if _, err := st[stUpdateLocation].ExecContext(ctx, rec.VersionID, mtime, f.Size, ts, rec.LocationID); err != nil {
		return rec, fmt.Errorf("update location: %w", err)
	}
	priority := ScanPriority(now.Sub(f.ModTime))
	for _, p := range subs {
		if !p.Matches(tags) {
			continue
		}
		var id int64
		err := st[stQueueJob].QueryRowContext(ctx, rec.VersionID, p.Plugin, priority, ts, unixMillis(now)).Scan(&id)
		if err != nil {
			return rec, fmt.Errorf("queue job for %s: %w", p.Plugin, err)
		}
		rec.Jobs = append(rec.Jobs, id)
	}
	return rec, nil
}

func intersects(set map[string]bool, tags []string) bool {
	for _, t := range tags {
		if set[t] {
			return true
		}
	}
	return false
}

// ScanPriority is the priority of a job for a file last modified age ago:
// fresh files first, as the original scout did.
func ScanPriority(age time.Duration) int64 {
	switch {
	case age < 24*time.Hour:
		return 100
	case age < 7*24*time.Hour:
		return 50
	default:
		return 10
	}
}

// scanChunk bounds the ids in one UPDATE … WHERE id IN (…), well under
// SQLite's limit on bound parameters.
const scanChunk = 500

// ScanFinish records the end of a scan of one source root: the locations seen
// get last_seen_time = now (and lose a missing mark), the locations not found
// get missing_since = now unless already marked. Versions and jobs are left
// alone: a deleted file's history stays.
func (db *DB) ScanFinish(ctx context.Context, now time.Time, rootID int64, seen, missing []int64) error {
	if len(seen) == 0 && len(missing) == 0 {
		return nil
	}
	ts := formatTime(now)
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if err := updateIDs(ctx, tx, `UPDATE cf_file_location SET last_seen_time = ?, missing_since = NULL
			WHERE source_root_id = ? AND id IN `, []any{ts, rootID}, seen); err != nil {
			return fmt.Errorf("mark seen: %w", err)
		}
		if err := updateIDs(ctx, tx, `UPDATE cf_file_location SET missing_since = ?
			WHERE source_root_id = ? AND missing_since IS NULL AND id IN `, []any{ts, rootID}, missing); err != nil {
			return fmt.Errorf("mark missing: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("finish scan of root %d: %w", rootID, err)
	}
	return nil
}

// updateIDs runs prefix + "(?, …)" for ids in chunks.
func updateIDs(ctx context.Context, tx *sql.Tx, prefix string, args []any, ids []int64) error {
	sorted := append([]int64(nil), ids...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	for len(sorted) > 0 {
		n := min(len(sorted), scanChunk)
		a := append([]any(nil), args...)
		for _, id := range sorted[:n] {
			a = append(a, id)
		}
		q := prefix + "(?" + strings.Repeat(", ?", n-1) + ")"
		if _, err := tx.ExecContext(ctx, q, a...); err != nil {
			return err
		}
		sorted = sorted[n:]
	}
	return nil
}

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
	mtime := ScanMTime(modTime)
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
