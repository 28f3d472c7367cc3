package db

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/casparian/sentinel/job"
)

// EnvironmentsList lists the plugin environments (cf_plugin_environment),
// the most recently used first, each with the manifests that name it.
func (db *DB) EnvironmentsList(ctx context.Context) ([]job.Environment, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT hash, size_mb, length(lockfile_content), created_at, last_used
		FROM cf_plugin_environment ORDER BY COALESCE(last_used, created_at) DESC, hash`)
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	var envs []job.Environment
	for rows.Next() {
		var e job.Environment
		var size sql.NullFloat64
		var lockBytes sql.NullInt64
		var created, used nullTime
		if err := rows.Scan(&e.Hash, &size, &lockBytes, &created, &used); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list environments: %w", err)
		}
		e.SizeMB, e.LockfileBytes, e.CreatedAt, e.LastUsed = size.Float64, lockBytes.Int64, created.Time, used.Time
		envs = append(envs, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	rows, err = db.reader.QueryContext(ctx, `SELECT env_hash, plugin_name, version, status FROM cf_plugin_manifest
		WHERE env_hash IS NOT NULL ORDER BY plugin_name, `+manifestNewestFirst)
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	defer rows.Close()
	users := map[string][]job.EnvironmentUser{}
	for rows.Next() {
		var hash, plugin, version, status sql.NullString
		if err := rows.Scan(&hash, &plugin, &version, &status); err != nil {
			return nil, fmt.Errorf("list environments: %w", err)
		}
		users[hash.String] = append(users[hash.String], job.EnvironmentUser{Plugin: plugin.String, Version: version.String, Status: status.String})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	job.AttachUsers(envs, users)
	return envs, nil
}
